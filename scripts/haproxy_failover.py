#!/usr/bin/env python3
"""Two `quiver serve` replicas behind HAProxy (Debian package) on loopback: load through the
balancer, one replica stopped mid-run (SIGTERM, then again SIGKILL after it is restarted),
failed requests counted; and throughput with two replicas against one.

  scripts/haproxy_failover.py path/to/quiver [--clients 8] [--seconds 20] [--signal both|TERM|KILL]

HAProxy retries a request whose connection failed or came back empty on the other replica
(`retry-on conn-failure empty-response response-timeout`, `option redispatch`), and health
checks take the dead one out. Bounded: CLIENTS threads for SECONDS seconds, loopback only.
"""
import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

BODY = json.dumps({"model": "all-minilm", "input": ["a short query", "another one"]})


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_up(port, proc=None, limit=60):
    t = time.time()
    while time.time() - t < limit:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"process on {port} exited: {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on {port}")


def replica(binary, port=None):
    port = port or free_port()
    env = dict(os.environ, QUIVER_HOST=f"127.0.0.1:{port}")
    p = subprocess.Popen([binary, "serve"], env=env, stderr=subprocess.DEVNULL)
    wait_up(port, p)
    return p, port


def haproxy(ports, tmp):
    fe = free_port()
    servers = "\n".join(
        f"  server r{i} 127.0.0.1:{p} check inter 300ms fall 1 rise 2" for i, p in enumerate(ports))
    cfg = f"""global
  maxconn 2048
defaults
  mode http
  timeout connect 1s
  timeout client 60s
  timeout server 60s
  retries 3
  option redispatch 1
  retry-on conn-failure empty-response response-timeout
frontend fe
  bind 127.0.0.1:{fe}
  default_backend be
backend be
  balance leastconn
  option httpchk GET /
  http-request wait-for-body time 2s
{servers}
"""
    path = os.path.join(tmp, "haproxy.cfg")
    with open(path, "w") as f:
        f.write(cfg)
    p = subprocess.Popen(["haproxy", "-f", path], stderr=subprocess.DEVNULL)
    wait_up(fe, p)
    return p, fe


def load(port, clients, seconds, midway=None):
    ok = [0] * clients
    failed = [0] * clients
    errors = []
    stop = time.time() + seconds

    def client(k):
        conn = None
        while time.time() < stop:
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request("POST", "/api/embed", body=BODY,
                             headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                data = r.read()
                if r.status == 200 and len(json.loads(data)["embeddings"]) == 2:
                    ok[k] += 1
                else:
                    failed[k] += 1
                    errors.append(f"{r.status} {data[:80]!r}")
            except Exception as e:  # noqa: BLE001 - counted as a failure
                failed[k] += 1
                errors.append(repr(e)[:100])
                conn = None

    ts = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    t0 = time.time()
    for t in ts:
        t.start()
    if midway:
        time.sleep(seconds / 2)
        midway()
    for t in ts:
        t.join()
    took = time.time() - t0
    return {"ok": sum(ok), "failed": sum(failed), "per_s": round(sum(ok) / took, 1),
            "errors": sorted(set(errors))[:5]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--signal", choices=["both", "KILL", "TERM"], default="both")
    a = ap.parse_args()
    if not shutil.which("haproxy"):
        print("skipping: haproxy is not installed (apt-get install haproxy)")
        return 0
    tmp = tempfile.mkdtemp()
    procs = []
    try:
        r1, p1 = replica(a.binary)
        r2, p2 = replica(a.binary)
        procs += [r1, r2]
        # One replica alone, then both, through the balancer.
        hp1, fe1 = haproxy([p1], tmp)
        procs.append(hp1)
        one = load(fe1, a.clients, a.seconds / 2)
        hp1.terminate()
        hp1.wait()
        hp, fe = haproxy([p1, p2], tmp)
        procs.append(hp)
        two = load(fe, a.clients, a.seconds / 2)
        out = {"clients": a.clients, "one_replica": one, "two_replicas": two,
               "two_over_one": round(two["per_s"] / max(one["per_s"], 1e-9), 2)}
        failed = 0
        for name in ["TERM", "KILL"] if a.signal == "both" else [a.signal]:
            sig = getattr(signal, "SIG" + name)
            victim = procs[1]
            stopped = load(fe, a.clients, a.seconds, midway=lambda: victim.send_signal(sig))
            code = victim.wait()
            stopped["replica_exit_code"] = code
            out[f"two_replicas_one_SIG{name}_midway"] = stopped
            # A failed request, or a replica that does not exit 0 on SIGTERM, fails the run.
            failed += stopped["failed"] + (name == "TERM" and code != 0)
            # Back on its port, and back in the balancer once two health checks pass.
            procs[1], _ = replica(a.binary, p2)
            time.sleep(1.5)
        print(json.dumps(out, indent=1))
        return 1 if failed else 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
