#!/usr/bin/env bash
# Pull throughput from a loopback registry: one SIZE_MB blob (default 670) pushed to Debian's
# docker-registry, then fetched by `curl` (to /dev/null and to a file) and by `quiver pull`,
# with wall time, MB/s and peak RSS (GNU time) for each. Not a CI test: numbers depend on the
# disk and on what else runs.
# Usage: scripts/bench_pull.sh path/to/quiver [SIZE_MB]
set -euo pipefail
QUIVER=$(realpath "${1:?usage: $0 path/to/quiver [SIZE_MB]}")
SIZE_MB=${2:-670}
command -v docker-registry >/dev/null || { echo "needs docker-registry (apt-get install -y docker-registry)"; exit 1; }
WORK=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s/data\nhttp:\n  addr: 127.0.0.1:%s\n' "$WORK" "$PORT" >"$WORK/config.yml"
docker-registry serve "$WORK/config.yml" >"$WORK/registry.log" 2>&1 &
REG=$!
trap 'kill $REG 2>/dev/null; rm -rf "$WORK"' EXIT
BASE="http://127.0.0.1:$PORT/v2/bench/blob"
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/v2/" >/dev/null && break; sleep 0.1; done

head -c "$((SIZE_MB << 20))" /dev/urandom >"$WORK/blob"
echo '{}' >"$WORK/config"
upload() { # file -> digest
  local d="sha256:$(sha256sum "$1" | cut -d' ' -f1)"
  local loc; loc=$(curl -sf -X POST -D - -o /dev/null "$BASE/blobs/uploads/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
  case "$loc" in http*) ;; *) loc="http://127.0.0.1:$PORT$loc" ;; esac
  case "$loc" in *\?*) loc="$loc&digest=$d" ;; *) loc="$loc?digest=$d" ;; esac
  curl -sf -X PUT -H 'Content-Type: application/octet-stream' --data-binary @"$1" "$loc" >/dev/null
  echo "$d"
}
BLOB=$(upload "$WORK/blob"); CONF=$(upload "$WORK/config")
printf '{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.ollama.image.model","digest":"%s","size":%s}]}' \
  "$CONF" "$(stat -c %s "$WORK/config")" "$BLOB" "$(stat -c %s "$WORK/blob")" >"$WORK/manifest"
curl -sf -X PUT -H 'Content-Type: application/vnd.docker.distribution.manifest.v2+json' --data-binary @"$WORK/manifest" "$BASE/manifests/latest" >/dev/null
rm "$WORK/blob"
sync

measure() { # label, command...
  local label=$1; shift
  # Cold caches (root only) unless KEEP_CACHE=1: the registry then reads its blob from disk.
  [ -n "${KEEP_CACHE:-}" ] || { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }
  /usr/bin/time -f "%e %M" -o "$WORK/t" "$@" >/dev/null 2>&1
  read -r secs kb <"$WORK/t"
  awk -v l="$label" -v s="$secs" -v kb="$kb" -v mb="$SIZE_MB" \
    'BEGIN { printf "%-30s %6.2f s %7.0f MB/s   peak RSS %6.1f MiB\n", l, s, mb / s, kb / 1024 }'
}
measure "curl -> /dev/null" curl -sf -o /dev/null "$BASE/blobs/$BLOB"
measure "curl -> file" curl -sf -o "$WORK/curl.out" "$BASE/blobs/$BLOB"
rm -f "$WORK/curl.out"
measure "curl -> file | sha256sum" sh -c "curl -sf '$BASE/blobs/$BLOB' | tee '$WORK/curl.out' | sha256sum"
rm -f "$WORK/curl.out"
QUIVER_MODELS="$WORK/store" measure "quiver pull (verify + fsync)" "$QUIVER" pull --insecure "127.0.0.1:$PORT/bench/blob"
