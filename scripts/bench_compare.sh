#!/usr/bin/env bash
# Quiver over HTTP (F16 and Q8_0) side by side with sentence-transformers (PyTorch fp32, in
# process) and llama.cpp's llama-server (F16 GGUF, HTTP), same corpus, same thread count; and
# Q8_0's rate over F16's from alternated repetitions in one process (`quiver bench --versus`).
#
#   scripts/bench_compare.sh            # from the repo root
#
# Environment (defaults in brackets):
#   THREADS [2]   compute threads for every engine
#   REPS [3]      timed repetitions per row (median reported)
#   ST_PYTHON [/tmp/st/bin/python]       a Python with sentence-transformers
#   ST_MODEL [/tmp/anchors/model/st]     the original all-MiniLM-L6-v2 (unzipped model.zip)
#   LLAMA_SERVER [/tmp/anchors/llama/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin/llama-server]
#   OUT [/tmp/quiver-compare]            JSON results and logs
# An anchor whose Python or binary is missing is skipped with a message, not an error.
set -euo pipefail

THREADS=${THREADS:-2}
REPS=${REPS:-3}
ST_PYTHON=${ST_PYTHON:-/tmp/st/bin/python}
ST_MODEL=${ST_MODEL:-/tmp/anchors/model/st}
LLAMA_SERVER=${LLAMA_SERVER:-/tmp/anchors/llama/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin/llama-server}
OUT=${OUT:-/tmp/quiver-compare}
mkdir -p "$OUT"

. "$(dirname "$0")/bench_common.sh"
BIN=$(bench_binary)
"$BIN" --dump-corpus "$OUT/corpus.json"

# quiver: the server alone in one process (so its VmHWM is the server's), the client in another.
quiver_http() { # $1 = label, $2 = gguf
    local port pid
    port=$(free_port)
    RAYON_NUM_THREADS=$THREADS "$BIN" --serve "127.0.0.1:$port" --model "$2" 2>"$OUT/$1.server.log" &
    pid=$!
    wait_for_port "$port" || true
    "$BIN" --url "http://127.0.0.1:$port" --http-only --http-model quiver-bench \
        --batch 32,256 --passage-batch 64 --reps "$REPS" --json "$OUT/$1.json" || true
    awk '/VmHWM/ {print $2}' "/proc/$pid/status" > "$OUT/$1.rss_kib"
    kill -TERM "$pid"
    wait "$pid" || true
}

quiver_http quiver-f16 fixtures/all-minilm-f16.gguf
quiver_http quiver-q8_0 fixtures/all-minilm-q8_0.gguf
# The two runs above are minutes apart, and this VM's speed drifts by more than Q8_0 and F16
# differ: their ratio comes from the library path with the two models' repetitions alternated.
RAYON_NUM_THREADS=$THREADS "$BIN" --model fixtures/all-minilm-f16.gguf \
    --versus fixtures/all-minilm-q8_0.gguf --threads "$THREADS" --batch 256 --passage-batch 64 \
    --reps $((REPS * 5)) --latency-requests 1 --json "$OUT/versus.json" >/dev/null || true

if [ -x "$ST_PYTHON" ] && [ -d "$ST_MODEL" ]; then
    "$ST_PYTHON" scripts/bench_sentence_transformers.py "$ST_MODEL" "$OUT/corpus.json" \
        --threads "$THREADS" --reps "$REPS" --json "$OUT/st.json" >/dev/null
else
    echo "skipped sentence-transformers: $ST_PYTHON or $ST_MODEL not found" >&2
fi

if [ -x "$LLAMA_SERVER" ]; then
    LLAMA_SERVER_LOG="$OUT/llama-server.log" python3 scripts/bench_llama_server.py \
        "$LLAMA_SERVER" fixtures/all-minilm-f16.gguf "$OUT/corpus.json" \
        --threads "$THREADS" --reps "$REPS" --query-batches 32,256 --json "$OUT/llama.json" >/dev/null
    # Second configuration: llama.cpp attends over the whole ubatch (masked), so 32 passages of
    # 250 tokens in one 8192-token ubatch waste most of the attention work; 4 slots of 512 and
    # -ub 1024 are its better setting for passages (and worse for short queries).
    LLAMA_SERVER_LOG="$OUT/llama-server-np4.log" python3 scripts/bench_llama_server.py \
        "$LLAMA_SERVER" fixtures/all-minilm-f16.gguf "$OUT/corpus.json" \
        --threads "$THREADS" --reps "$REPS" --query-batches 32,256 \
        --parallel 4 --ctx 2048 --ubatch 1024 --json "$OUT/llama-np4.json" >/dev/null
else
    echo "skipped llama-server: $LLAMA_SERVER not found" >&2
fi

echo "machine: $(nproc) cores, load average at the end: $(cut -d" " -f1-3 /proc/loadavg)"
python3 scripts/bench_table.py "$OUT"
