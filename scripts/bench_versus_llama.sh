#!/usr/bin/env bash
# Quiver against llama.cpp's llama-server over HTTP on the same GGUF, the two alternated round by
# round (this VM's speed drifts by 20-45 % within minutes, so each round's ratio compares
# neighbours): queries and passages at the given batch sizes, same corpus, same threads.
#
#   scripts/bench_versus_llama.sh MODEL.gguf [ROUNDS]
#
# Environment (defaults in brackets):
#   THREADS [2]   compute threads for both engines
#   QUERY_BATCHES [32,256], PASSAGE_BATCHES [64]   batch sizes (inputs per request)
#   LLAMA_ARGS []  more bench_llama_server.py options, e.g. "--parallel 4 --ctx 2048 --ubatch 1024"
#                 (its better setting for passages: it attends over the whole ubatch)
#   LLAMA_SERVER [/work/llama/build-noamx/bin/llama-server]   built from the llama_cpp_python sdist
#                 (GGML_NATIVE=OFF with AVX-512/VNNI/BF16 on and AMX off: this VM lists AMX but
#                 faults on it, so a native build dies with SIGILL on Q4_0 models)
#   OUT [/tmp/quiver-versus-llama]                       JSON per round and logs
# Prints, per row, both engines' median embeddings/s over the rounds and the median of the
# per-round ratios quiver / llama-server with their range.
set -euo pipefail

MODEL=${1:?usage: bench_versus_llama.sh MODEL.gguf [ROUNDS]}
ROUNDS=${2:-5}
THREADS=${THREADS:-2}
QUERY_BATCHES=${QUERY_BATCHES:-32,256}
PASSAGE_BATCHES=${PASSAGE_BATCHES:-64}
LLAMA_ARGS=${LLAMA_ARGS:-}
LLAMA_SERVER=${LLAMA_SERVER:-/work/llama/build-noamx/bin/llama-server}
OUT=${OUT:-/tmp/quiver-versus-llama}
mkdir -p "$OUT"
[ -x "$LLAMA_SERVER" ] || { echo "llama-server not found at $LLAMA_SERVER" >&2; exit 1; }

. "$(dirname "$0")/bench_common.sh"
BIN=$(bench_binary)
"$BIN" --dump-corpus "$OUT/corpus.json"

quiver_round() { # $1 = output JSON
    local port pid
    port=$(free_port)
    RAYON_NUM_THREADS=$THREADS "$BIN" --serve "127.0.0.1:$port" --model "$MODEL" 2>"$OUT/quiver.server.log" &
    pid=$!
    wait_for_port "$port" || true
    "$BIN" --url "http://127.0.0.1:$port" --http-only --http-model quiver-bench \
        --batch "$QUERY_BATCHES" --passage-batch "$PASSAGE_BATCHES" --reps 1 --latency-requests 20 --concurrency 0 \
        --json "$1" >/dev/null || true
    kill -TERM "$pid"
    wait "$pid" || true
}

for r in $(seq "$ROUNDS"); do
    # Alternate which engine goes first, so neither always runs on the warmer machine.
    if (( r % 2 )); then order="quiver llama"; else order="llama quiver"; fi
    for engine in $order; do
        if [ "$engine" = quiver ]; then
            quiver_round "$OUT/quiver.$r.json"
        else
            LLAMA_SERVER_LOG="$OUT/llama-server.log" python3 scripts/bench_llama_server.py \
                "$LLAMA_SERVER" "$MODEL" "$OUT/corpus.json" --threads "$THREADS" --reps 1 \
                --query-batches "$QUERY_BATCHES" --passage-batches "$PASSAGE_BATCHES" --latency-requests 20 $LLAMA_ARGS --json "$OUT/llama.$r.json" >/dev/null
        fi
    done
    echo "round $r of $ROUNDS done" >&2
done

python3 - "$OUT" "$ROUNDS" "$MODEL" "$THREADS" <<'PY'
import json, statistics, sys
out, rounds, model, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def rows(path):
    j = json.load(open(path))
    return {(r["kind"], r["batch"]): r["embeddings_per_s"] for r in j["rows"]}
q = [rows(f"{out}/quiver.{r}.json") for r in range(1, rounds + 1)]
l = [rows(f"{out}/llama.{r}.json") for r in range(1, rounds + 1)]
print(f"{model}, {threads} threads, {rounds} alternated rounds (medians)")
print(f"{'kind':8} {'batch':>5} {'quiver/s':>10} {'llama/s':>10} {'ratio':>6}  range")
for key in sorted(q[0]):
    if not all(key in x for x in q + l):
        continue
    ratios = [a[key] / b[key] for a, b in zip(q, l)]
    print(f"{key[0]:8} {key[1]:>5} {statistics.median(a[key] for a in q):>10.1f} "
          f"{statistics.median(b[key] for b in l):>10.1f} {statistics.median(ratios):>6.2f}  "
          f"{min(ratios):.2f}-{max(ratios):.2f}")
PY
