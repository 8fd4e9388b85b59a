#!/usr/bin/env python3
"""Prints the comparison table from the JSON files scripts/bench_compare.sh wrote to DIR."""
import json
import os
import sys

out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/quiver-compare"


def load(name):
    p = os.path.join(out, name)
    return json.load(open(p)) if os.path.exists(p) else None


def rate(report, kind, batch):
    for r in report.get("rows", []):
        if r["kind"] == kind and r["batch"] == batch:
            return f'{r["embeddings_per_s"]:.1f}'
    return "-"


def rss_mib(kib):
    return f"{kib / 1024:.0f}" if kib else "-"


engines = []
for label, f, gguf in [("quiver HTTP F16", "quiver-f16", "fixtures/all-minilm-f16.gguf"),
                       ("quiver HTTP Q8_0", "quiver-q8_0", "fixtures/all-minilm-q8_0.gguf")]:
    r = load(f + ".json")
    if r:
        p = os.path.join(out, f + ".rss_kib")
        kib = int(open(p).read().strip() or 0) if os.path.exists(p) else 0
        r["peak_rss_kib"] = kib
        r["model_bytes"] = os.path.getsize(gguf) if os.path.exists(gguf) else None
        engines.append((label, r))
st = load("st.json")
if st:
    st["model_bytes"] = None
    engines.append(("sentence-transformers fp32 (in process)", st))
for f, label in [("llama.json", "llama-server F16 (HTTP, -np 32 -c 16384 -ub 8192)"),
                 ("llama-np4.json", "llama-server F16 (HTTP, -np 4 -c 2048 -ub 1024)")]:
    ll = load(f)
    if ll:
        engines.append((label, ll))

print("| engine | queries/s b32 | queries/s b256 | passages/s b64 | 1-query median ms | p90 ms "
      "| peak RSS MiB | model MiB |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for label, r in engines:
    lat = (r.get("latency") or [{}])[-1]
    mb = r.get("model_bytes")
    print(f'| {label} | {rate(r, "query", 32)} | {rate(r, "query", 256)} | '
          f'{rate(r, "passage", 64)} | {lat.get("median_ms", 0):.2f} | {lat.get("p90_ms", 0):.2f} | '
          f'{rss_mib(r.get("peak_rss_kib"))} | {f"{mb / 2**20:.0f}" if mb else "-"} |')
for label, r in engines:
    c = r.get("concurrency")
    if c:
        print(f'{label}: {c["clients"]} concurrent single-query clients {c["concurrent_queries_per_s"]:.1f} q/s '
              f'vs one client batching {c["clients"]}: {c["batched_queries_per_s"]:.1f} q/s '
              f'(ratio {c["ratio"]:.2f})')
v = load("versus.json")
if v:
    for x in v.get("versus", []):
        print(f'Q8_0 / F16, library path, {x["kind"]} batch {x["batch"]}, {x["threads"]} threads, '
              f'{x["reps"]} alternated repetitions: median {x["median_ratio"]:.3f} '
              f'(range {x["min_ratio"]:.3f}-{x["max_ratio"]:.3f})')
