#!/usr/bin/env python3
"""Measures `quiver serve` under floods, on loopback only, bounded in count and time.

  scripts/serve_flood.py path/to/quiver [--idle 10000] [--slow 1000] [--inputs 100000]

1. flood:    IDLE idle connections plus SLOW slowloris clients (a header byte every second),
             then 200 new clients each embed one text: p50/p99 latency, the server's thread
             count and RSS, before and during the flood.
2. inputs:   one request of INPUTS short strings to /api/embed and /v1/embeddings: the
             server's peak RSS (VmHWM, a fresh server for each), and the answer compared with
             all the same inputs sent in batches of 64 (and the time those take).
3. body:     one request body just under QUIVER_MAX_BODY (32 MiB): 512 passages of 64 KiB
             (each truncated to the model's context): peak RSS, time, and the answer compared
             with the same passages sent 8 at a time.
4. sigterm:  1,000 slow clients connected and a request in flight, then SIGTERM: exit
             status, time to exit, whether the in-flight request was answered.

The model is the bundled all-minilm (no QUIVER_MODELS needed). Needs `ulimit -n` above
IDLE + SLOW + some.
"""
import argparse
import http.client
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time

MODEL = "all-minilm"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def mib(kb_field):
    return int(kb_field.split()[0]) / 1024


class Server:
    def __init__(self, binary, extra_env=None):
        self.port = free_port()
        env = dict(os.environ, QUIVER_HOST=f"127.0.0.1:{self.port}")
        env.update(extra_env or {})
        self.proc = subprocess.Popen([binary, "serve"], env=env, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("server did not come up")

    def stats(self):
        st = proc_status(self.proc.pid)
        return {
            "threads": int(st["Threads"]),
            "rss_mib": round(mib(st["VmRSS"]), 1),
            "peak_rss_mib": round(mib(st["VmHWM"]), 1),
        }

    def post(self, path, body, timeout=600):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        c.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, data

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def new_client_latencies(srv, n):
    lat = []
    for i in range(n):
        t = time.perf_counter()
        status, _ = srv.post("/api/embed", {"model": MODEL, "input": f"new client {i}"})
        lat.append((time.perf_counter() - t) * 1e3)
        assert status == 200, status
    return lat


def flood(binary, n_idle, n_slow):
    srv = Server(binary)
    srv.post("/api/embed", {"model": MODEL, "input": "warm up"})
    base = new_client_latencies(srv, 100)
    before = srv.stats()
    socks = []
    for _ in range(n_idle):
        socks.append(socket.create_connection(("127.0.0.1", srv.port)))
    slow = []
    for _ in range(n_slow):
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(b"POST /api/embed HTTP/1.1\r\nHost: x\r\n")
        slow.append(s)
    stop = threading.Event()

    def trickle():
        while not stop.is_set():
            for s in slow:
                try:
                    s.send(b"X")
                except OSError:
                    pass
            stop.wait(1.0)

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    time.sleep(1.0)
    during = srv.stats()
    lat = new_client_latencies(srv, 200)
    after = srv.stats()
    # The head deadline (10 s) answers the slowloris clients with 408 and closes them.
    time.sleep(11)
    got408 = 0
    for s in slow[:50]:
        s.settimeout(2)
        try:
            if b" 408 " in s.recv(256):
                got408 += 1
        except OSError:
            pass
    stop.set()
    idle_open = 0
    for s in socks[:200]:
        s.setblocking(False)
        try:
            idle_open += s.recv(1) != b""
        except BlockingIOError:
            idle_open += 1
        except OSError:
            pass
    later = srv.stats()
    for s in socks + slow:
        s.close()
    srv.stop()
    return {
        "idle": n_idle,
        "slowloris": n_slow,
        "baseline_p50_ms": round(pct(base, 50), 2),
        "baseline_p99_ms": round(pct(base, 99), 2),
        "flood_p50_ms": round(pct(lat, 50), 2),
        "flood_p99_ms": round(pct(lat, 99), 2),
        "flood_max_ms": round(max(lat), 2),
        "server_before": before,
        "server_during": during,
        "server_after_200_clients": after,
        "server_12s_later": later,
        "slowloris_answered_408_of_50": got408,
        "idle_still_open_of_200_after_12s": idle_open,
    }


def many_inputs(binary, n):
    inputs = [f"text {i}" for i in range(n)]
    out = {"inputs": n}
    batched = None
    for path in ["/api/embed", "/v1/embeddings"]:
        srv = Server(binary)
        srv.post("/api/embed", {"model": MODEL, "input": "warm up"})
        base = srv.stats()["peak_rss_mib"]
        t = time.perf_counter()
        status, data = srv.post(path, {"model": MODEL, "input": inputs})
        took = time.perf_counter() - t
        st = srv.stats()
        assert status == 200, (status, data[:200])
        doc = json.loads(data)
        vecs = doc["embeddings"] if path == "/api/embed" else [d["embedding"] for d in doc["data"]]
        assert len(vecs) == n
        out[path] = {
            "peak_rss_before_mib": base,
            "peak_rss_mib": st["peak_rss_mib"],
            "seconds": round(took, 1),
            "answer_bytes": len(data),
            "threads": st["threads"],
        }
        if batched is None:
            # All the inputs again in batches of 64, one request after another: the same
            # vectors, and the time that takes next to the single request.
            t = time.perf_counter()
            batched = []
            for k in range(0, n, 64):
                s2, d2 = srv.post("/api/embed", {"model": MODEL, "input": inputs[k:k + 64]})
                assert s2 == 200
                batched += json.loads(d2)["embeddings"]
            out["batches_of_64_seconds"] = round(time.perf_counter() - t, 1)
        out[path]["equal_to_batches_of_64"] = vecs == batched
        srv.stop()
    return out


def big_body(binary, limit=32 << 20):
    n = 512
    filler = "lorem ipsum dolor sit amet " * ((limit // n - 200) // 27)
    inputs = [f"passage {i}: {filler}" for i in range(n)]
    body = {"model": MODEL, "input": inputs}
    size = len(json.dumps(body))
    assert size <= limit, size
    srv = Server(binary)
    srv.post("/api/embed", {"model": MODEL, "input": "warm up"})
    base = srv.stats()["peak_rss_mib"]
    t = time.perf_counter()
    status, data = srv.post("/api/embed", body)
    took = time.perf_counter() - t
    st = srv.stats()
    assert status == 200, (status, data[:200])
    vecs = json.loads(data)["embeddings"]
    same = len(vecs) == n
    for k in range(0, n, 8):
        s2, d2 = srv.post("/api/embed", {"model": MODEL, "input": inputs[k:k + 8]})
        assert s2 == 200
        same &= json.loads(d2)["embeddings"] == vecs[k:k + 8]
    srv.stop()
    return {"body_bytes": size, "inputs": n, "peak_rss_before_mib": base,
            "peak_rss_mib": st["peak_rss_mib"], "seconds": round(took, 1),
            "equal_to_batches_of_8": same}


def sigterm(binary, n_slow):
    srv = Server(binary, {"QUIVER_SHUTDOWN_TIMEOUT": "30s"})
    srv.post("/api/embed", {"model": MODEL, "input": "warm up"})
    slow = []
    for i in range(n_slow):
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(b"POST /api/embed HTTP/1.1\r\nHost: x\r\n")
        slow.append(s)
    result = {}

    def inflight():
        try:
            result["status"], data = srv.post(
                "/api/embed", {"model": MODEL, "input": [f"{i} " * 40 for i in range(600)]})
            result["vectors"] = len(json.loads(data)["embeddings"])
        except Exception as e:  # noqa: BLE001 - reported, not raised
            result["error"] = repr(e)

    t = threading.Thread(target=inflight)
    t.start()
    time.sleep(0.3)
    t0 = time.perf_counter()
    srv.proc.send_signal(signal.SIGTERM)
    rc = srv.proc.wait(timeout=60)
    took = time.perf_counter() - t0
    t.join(60)
    closed = 0
    for s in slow[:100]:
        s.settimeout(2)
        try:
            closed += s.recv(64) == b""
        except OSError:
            closed += 1
    for s in slow:
        s.close()
    return {"slow_clients": n_slow, "exit_code": rc, "exit_seconds": round(took, 2),
            "in_flight": result, "slow_closed_of_100": closed}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--slow", type=int, default=1000)
    ap.add_argument("--inputs", type=int, default=100000)
    ap.add_argument("--only", choices=["flood", "inputs", "body", "sigterm"])
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    res = {}
    if a.only in (None, "flood"):
        res["flood"] = flood(a.binary, a.idle, a.slow)
        print(json.dumps(res["flood"], indent=1), flush=True)
    if a.only in (None, "inputs"):
        res["inputs"] = many_inputs(a.binary, a.inputs)
        print(json.dumps(res["inputs"], indent=1), flush=True)
    if a.only in (None, "body"):
        res["body"] = big_body(a.binary)
        print(json.dumps(res["body"], indent=1), flush=True)
    if a.only in (None, "sigterm"):
        res["sigterm"] = sigterm(a.binary, a.slow)
        print(json.dumps(res["sigterm"], indent=1), flush=True)


if __name__ == "__main__":
    sys.exit(main())
