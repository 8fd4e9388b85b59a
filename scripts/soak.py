#!/usr/bin/env python3
"""Soak: CLIENTS keep-alive clients against a fresh `quiver serve` for MINUTES, loopback only.
Prints errors, requests/s, the server's RSS and its heap in use (from /metrics) every 30 s, and
the drift of both over the second half: in use flat while RSS climbs is fragmentation.

  scripts/soak.py path/to/quiver [--clients 32] [--minutes 60]
"""
import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time


def scrape_heap(port):
    """The allocator's bytes in use and held free (MiB), from the server's /metrics."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    c.close()
    got = {}
    for line in text.splitlines():
        for name in ("quiver_heap_in_use_bytes", "quiver_heap_free_bytes"):
            if line.startswith(name + " "):
                got[name] = int(line.split()[1]) / 2**20
    return got.get("quiver_heap_in_use_bytes", float("nan")), got.get("quiver_heap_free_bytes", float("nan"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--every", type=float, default=30, help="seconds between samples")
    a = ap.parse_args()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    env = dict(os.environ, QUIVER_HOST=f"127.0.0.1:{port}")
    srv = subprocess.Popen([a.binary, "serve"], env=env, stderr=subprocess.DEVNULL)
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    stop = time.time() + a.minutes * 60
    ok, bad = [0], [0]
    lock = threading.Lock()

    def client(k):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        i = 0
        while time.time() < stop:
            i += 1
            body = json.dumps({"model": "all-minilm", "input": [f"client {k} text {i}", "q"]})
            try:
                c.request("POST", "/api/embed", body=body)
                r = c.getresponse()
                d = r.read()
                good = r.status == 200 and len(json.loads(d)["embeddings"]) == 2
            except Exception:  # noqa: BLE001 - counted
                good = False
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            with lock:
                (ok if good else bad)[0] += 1

    ts = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(a.clients)]
    for t in ts:
        t.start()
    samples = []
    t0 = time.time()
    while time.time() < stop:
        time.sleep(min(a.every, max(0.1, stop - time.time())))
        with open(f"/proc/{srv.pid}/status") as f:
            st = {l.split(":")[0]: int(l.split()[1]) / 1024 for l in f if l.startswith("Rss") or l.startswith("VmRSS")}
        rss = st["VmRSS"]
        heap = scrape_heap(port)
        samples.append((time.time() - t0, rss, heap[0]))
        # RssFile: pages of mapped files (the binary, the model's weights as rows are first
        # read); RssAnon: the heap, stacks and packed weights.
        print(f"{samples[-1][0]:7.0f} s  ok {ok[0]:8d}  errors {bad[0]}  RSS {rss:.1f} MiB"
              f" (anon {st.get('RssAnon', 0):.1f}, file {st.get('RssFile', 0):.1f})"
              f"  heap in use {heap[0]:.1f} MiB, free {heap[1]:.1f} MiB", flush=True)
    for t in ts:
        t.join()
    half = [(r, h) for t, r, h in samples if t >= samples[-1][0] / 2]
    print(json.dumps({"clients": a.clients, "minutes": a.minutes, "ok": ok[0], "errors": bad[0],
                      "per_s": round(ok[0] / (time.time() - t0), 1),
                      "rss_second_half_min_max_mib": [min(r for r, _ in half), max(r for r, _ in half)],
                      "heap_in_use_second_half_min_max_mib":
                          [min(h for _, h in half), max(h for _, h in half)]}))
    srv.terminate()
    srv.wait()
    return 1 if bad[0] else 0


if __name__ == "__main__":
    sys.exit(main())
