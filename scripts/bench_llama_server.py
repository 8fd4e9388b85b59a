#!/usr/bin/env python3
"""Anchor for `quiver bench`: llama.cpp's llama-server over HTTP on the same corpus and GGUF.

usage: bench_llama_server.py LLAMA_SERVER_BIN GGUF CORPUS_JSON [--threads 2] [--json OUT]

Starts `llama-server -m GGUF --embeddings -t THREADS ...` on a free loopback port, waits for
/health, and measures over POST /v1/embeddings (one keep-alive connection, stdlib only):
queries/s at batch 256 (and 32), passages/s at batch 64, one-query latency (median, p90).
Same procedure as quiver bench: one warm-up, median of --reps repetitions, a repetition embeds
at least 64 queries / 8 passages in whole batches. Also reports the server's peak RSS (VmHWM).

Context: llama-server splits -c across -np parallel slots and packs up to -ub tokens of several
slots into one forward pass, so -c must give every slot room for a 250-token passage and -ub
must hold the largest single sequence. The defaults (-np 32, -c 16384, -b/-ub 8192) let a
256-input request run 32 sequences per pass.
"""
import argparse
import http.client
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import time


def plan(texts, batch, min_items):
    n_batches = -(-max(batch, min_items) // batch)
    it = itertools.cycle(texts)
    return [[next(it) for _ in range(batch)] for _ in range(n_batches)]


def quantile(samples, q):
    s = sorted(samples)
    rank = max(1, min(len(s), int(-(-q * len(s) // 1))))
    return s[rank - 1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vm_hwm_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class Client:
    def __init__(self, port):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)

    def embed(self, texts):
        body = json.dumps({"input": texts, "model": "all-minilm", "encoding_format": "float"})
        self.conn.request("POST", "/v1/embeddings", body, {"Content-Type": "application/json"})
        r = self.conn.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError(f"llama-server answered {r.status}: {data[:300]!r}")
        out = json.loads(data)
        if len(out["data"]) != len(texts):
            raise RuntimeError(f"{len(texts)} inputs gave {len(out['data'])} embeddings")
        return out.get("usage", {}).get("prompt_tokens", 0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("server_bin")
    ap.add_argument("gguf")
    ap.add_argument("corpus")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parallel", type=int, default=32, help="llama-server -np")
    ap.add_argument("--ctx", type=int, default=16384, help="llama-server -c (all slots)")
    ap.add_argument("--ubatch", type=int, default=8192, help="llama-server -b and -ub")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--min-queries", type=int, default=64)
    ap.add_argument("--min-passages", type=int, default=8)
    ap.add_argument("--query-batches", default="32,256")
    ap.add_argument("--passage-batches", default="64")
    ap.add_argument("--latency-requests", type=int, default=50)
    ap.add_argument("--json")
    a = ap.parse_args()

    with open(a.corpus) as f:
        corpus = json.load(f)
    port = free_port()
    cmd = [a.server_bin, "-m", a.gguf, "--embeddings", "-t", str(a.threads),
           "-tb", str(a.threads), "--host", "127.0.0.1", "--port", str(port),
           "-c", str(a.ctx), "-b", str(a.ubatch), "-ub", str(a.ubatch), "-np", str(a.parallel),
           "--pooling", "mean", "--no-webui"]
    print("+", " ".join(cmd), file=sys.stderr)
    log = open(os.environ.get("LLAMA_SERVER_LOG", "/tmp/llama-server-bench.log"), "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama-server exited ({proc.returncode}); see {log.name}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError("llama-server did not become healthy in 120 s")
            time.sleep(0.2)

        client = Client(port)
        rows = []
        jobs = [("query", int(b), a.min_queries) for b in a.query_batches.split(",") if b] + \
               [("passage", int(b), a.min_passages) for b in a.passage_batches.split(",") if b]
        for kind, batch, min_items in jobs:
            texts = corpus["queries" if kind == "query" else "passages"]
            batches = plan(texts, batch, min_items)
            items = sum(len(b) for b in batches)
            client.embed(batches[0])
            times, tokens = [], 0
            for _ in range(a.reps):
                tokens = 0
                t0 = time.perf_counter()
                for b in batches:
                    tokens += client.embed(b)
                times.append(time.perf_counter() - t0)
            med = statistics.median(times)
            row = dict(path="llama-server", kind=kind, batch=batch, threads=a.threads,
                       items=items, tokens=tokens, reps=a.reps, median_s=med,
                       embeddings_per_s=items / med, tokens_per_s=tokens / med)
            print(f"llama-server {kind:8} batch {batch:4} threads {a.threads}: "
                  f"{row['embeddings_per_s']:9.1f} embed/s {row['tokens_per_s']:9.0f} tok/s",
                  file=sys.stderr)
            rows.append(row)

        queries = corpus["queries"]
        client.embed([queries[0]])
        lat = []
        for q in itertools.islice(itertools.cycle(queries), a.latency_requests):
            t0 = time.perf_counter()
            client.embed([q])
            lat.append(time.perf_counter() - t0)
        latency = dict(path="llama-server", threads=a.threads, requests=len(lat),
                       median_ms=statistics.median(lat) * 1e3, p90_ms=quantile(lat, 0.9) * 1e3)
        report = dict(engine="llama-server", command=" ".join(cmd), rows=rows,
                      latency=[latency], peak_rss_kib=vm_hwm_kib(proc.pid),
                      model_bytes=os.path.getsize(a.gguf))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    print(json.dumps(report, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
