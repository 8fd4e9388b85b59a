#!/usr/bin/env bash
# Runs the quiver-kernels tests for aarch64 under qemu user-mode emulation, twice, then the
# all-minilm golden tests once:
#   1. QEMU_CPU=max         — a core with the int8 dot product: tests Scalar, Neon and NeonDot;
#   2. QEMU_CPU=cortex-a72  — a core without it: tests Scalar and the baseline-NEON fallbacks.
# The tests loop over Isa::available(), so every NEON kernel is compared with its scalar
# reference in each run; this script also checks that each run saw the expected ISA levels.
#
# Toolchain: Debian's rustc-web / cargo-web (they ship an arm64 std as a multiarch package,
# which rustup's toolchain on the same machine lacks), gcc-aarch64-linux-gnu as the linker,
# qemu-user-static as the runner, libc6:arm64 for the binaries' loader and libc. Missing
# packages are installed (Debian 12 or later; needs root or sudo).
#
# Timing under qemu means nothing: this checks correctness only.
#
# Environment: AARCH64_TARGET_DIR (default target/aarch64-qemu: kept apart from the host
# build, which another rustc compiles), SKIP_INSTALL=1 to never call apt-get.
set -euo pipefail

cd "$(dirname "$0")/.."

TRIPLE=aarch64-unknown-linux-gnu
TARGET_DIR=${AARCH64_TARGET_DIR:-target/aarch64-qemu}

need_install=0
for f in /usr/bin/cargo /usr/bin/rustc aarch64-linux-gnu-gcc qemu-aarch64-static; do
    command -v "$f" >/dev/null 2>&1 || need_install=1
done
# The arm64 std (libstd-rust-web-dev:arm64) and the arm64 loader (libc6:arm64).
if [ -x /usr/bin/rustc ]; then
    sysroot=$(/usr/bin/rustc --print sysroot)
    ls "$sysroot/lib/rustlib/$TRIPLE/lib/"libstd-*.rlib >/dev/null 2>&1 || need_install=1
fi
[ -e /lib/ld-linux-aarch64.so.1 ] || need_install=1
# The C runtime objects the linker needs (crti.o, Scrt1.o): gcc-aarch64-linux-gnu only
# recommends them, and recommends are not installed below.
[ -e /usr/aarch64-linux-gnu/lib/crti.o ] || need_install=1

if [ "$need_install" = 1 ]; then
    if [ "${SKIP_INSTALL:-0}" = 1 ]; then
        echo "test_aarch64: toolchain incomplete and SKIP_INSTALL=1" >&2
        exit 2
    fi
    SUDO=
    if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
    echo "test_aarch64: installing the cross toolchain (Debian packages)"
    # A machine that cannot get them (no Debian archive, no arm64 in it) skips these tests
    # and says so; a failing test still fails the script.
    if ! { $SUDO dpkg --add-architecture arm64 && $SUDO apt-get update -qq &&
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            rustc-web cargo-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu \
            libc6-dev-arm64-cross qemu-user-static libc6:arm64 >/dev/null; }; then
        echo "test_aarch64: SKIPPED: the aarch64 cross toolchain could not be installed" >&2
        exit 0
    fi
fi

# Debian's cargo and rustc, not a rustup shim earlier on PATH (no arm64 std there).
export RUSTC=/usr/bin/rustc
export RUSTDOC=/usr/bin/rustdoc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=qemu-aarch64-static
CARGO=/usr/bin/cargo

# Warnings are errors for the aarch64 build (clippy is not part of Debian's toolchain).
RUSTFLAGS="${RUSTFLAGS:-} -Dwarnings" \
    $CARGO check -p quiver-kernels --all-targets --target $TRIPLE --target-dir "$TARGET_DIR"

run() {
    local cpu=$1 want=$2 unwanted=$3 log
    log=$(mktemp)
    echo "== quiver-kernels tests on aarch64, QEMU_CPU=$cpu"
    # --nocapture so that the ISA levels under test are printed (by isa::tests).
    if ! QEMU_CPU=$cpu $CARGO test --release -p quiver-kernels --lib --tests \
        --target $TRIPLE --target-dir "$TARGET_DIR" -- --nocapture 2>&1 | tee "$log"; then
        echo "test_aarch64: tests FAILED with QEMU_CPU=$cpu" >&2
        rm -f "$log"
        return 1
    fi
    local levels
    levels=$(grep -m1 "aarch64 ISA levels under test" "$log" || true)
    rm -f "$log"
    if [ -z "$levels" ] || ! grep -q "$want" <<<"$levels" ||
        { [ -n "$unwanted" ] && grep -q "$unwanted" <<<"$levels"; }; then
        echo "test_aarch64: QEMU_CPU=$cpu ran [$levels], wanted $want${unwanted:+ without $unwanted}" >&2
        return 1
    fi
    echo "test_aarch64: QEMU_CPU=$cpu ok ($levels)"
}

run max "NeonDot" ""
run cortex-a72 "Neon" "NeonDot"

# End to end: all-minilm F32/F16/Q8_0 against PyTorch's and llama.cpp's vectors, through the
# NEON kernels (int16 for F16, SDOT for Q8_0) — the same tolerances as on x86-64.
echo "== golden embeddings on aarch64, QEMU_CPU=max"
QEMU_CPU=max $CARGO test --release --target $TRIPLE --target-dir "$TARGET_DIR" \
    --test golden_bert -- --nocapture
echo "test_aarch64: all passed"
