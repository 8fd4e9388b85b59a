#!/usr/bin/env bash
# Runs tests/ollama_client.py (the official `ollama` Python client) against `quiver serve`.
# Usage: scripts/ollama_client_test.sh path/to/quiver
# Creates a venv under ${TMPDIR:-/tmp} (reused when present), starts the server on a free
# loopback port with the bundled all-minilm, runs the checks, stops the server with SIGTERM
# and checks that it exited 0.
set -euo pipefail
QUIVER=${1:?usage: $0 path/to/quiver}
QUIVER=$(cd "$(dirname "$QUIVER")" && pwd)/$(basename "$QUIVER")
HERE=$(cd "$(dirname "$0")/.." && pwd)
VENV=${QUIVER_TEST_VENV:-${TMPDIR:-/tmp}/quiver-ollama-client-venv}

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -c "import ollama" 2>/dev/null || "$VENV/bin/pip" install --quiet ollama

PORT=$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export OLLAMA_HOST="127.0.0.1:$PORT"
# An empty model dir: the server answers with the bundled model only.
MODELS=$(mktemp -d)
LOG=$(mktemp)
QUIVER_MODELS="$MODELS" OLLAMA_MODELS="$MODELS" QUIVER_HOST="$OLLAMA_HOST" "$QUIVER" serve >"$LOG" 2>&1 &
PID=$!
REG_DIR=$(mktemp -d)
REG_PID=
cleanup() {
  kill "$PID" 2>/dev/null || true
  [ -z "$REG_PID" ] || kill "$REG_PID" 2>/dev/null || true
  rm -rf "$MODELS" "$REG_DIR"
}
trap cleanup EXIT

# Model management with a small GGUF; push/pull against a throwaway loopback registry when
# Debian's docker-registry is installed (.ci/run installs it).
export QUIVER_TEST_GGUF="$HERE/fixtures/all-minilm-q8_0.gguf"
if command -v docker-registry >/dev/null; then
  REG_PORT=$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s/data\nhttp:\n  addr: 127.0.0.1:%s\n' \
    "$REG_DIR" "$REG_PORT" >"$REG_DIR/config.yml"
  docker-registry serve "$REG_DIR/config.yml" >"$REG_DIR/log" 2>&1 &
  REG_PID=$!
  export QUIVER_TEST_REGISTRY="127.0.0.1:$REG_PORT"
fi

for _ in $(seq 1 200); do
  if "$VENV/bin/python" -c "import urllib.request,sys; urllib.request.urlopen('http://$OLLAMA_HOST/')" 2>/dev/null; then break; fi
  if ! kill -0 "$PID" 2>/dev/null; then echo "quiver serve exited early:"; cat "$LOG"; exit 1; fi
  sleep 0.1
done

status=0
"$VENV/bin/python" "$HERE/tests/ollama_client.py" || status=$?

kill -TERM "$PID"
rc=0
wait "$PID" || rc=$?
trap - EXIT
[ -z "$REG_PID" ] || kill "$REG_PID" 2>/dev/null || true
rm -rf "$MODELS" "$REG_DIR"
if [ "$rc" -ne 0 ]; then echo "quiver serve exited with $rc after SIGTERM"; cat "$LOG"; exit 1; fi
echo "quiver serve exited 0 after SIGTERM"
exit "$status"
