#!/usr/bin/env python3
"""Drives a running Quiver server with the official `ollama` Python client (pip install ollama).

The server address comes from OLLAMA_HOST, as the client reads it. The model (default
`all-minilm`, override with QUIVER_TEST_MODEL) must be available to the server. Exits non-zero
on the first failed check; prints one line per check.
"""
import math
import os
import sys

import ollama

MODEL = os.environ.get("QUIVER_TEST_MODEL", "all-minilm")
DIM = int(os.environ.get("QUIVER_TEST_DIM", "384"))


def norm(v):
    return math.sqrt(sum(x * x for x in v))


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b)) / (norm(a) * norm(b))


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}")
        sys.exit(1)
    print(f"ok: {what}")


def field(obj, name):
    """Works with the client's typed responses (new) and plain dicts (old)."""
    return obj[name] if isinstance(obj, dict) else getattr(obj, name)


def main():
    client = ollama.Client(host=os.environ.get("OLLAMA_HOST"))

    single = client.embed(model=MODEL, input="why is the sky blue?")
    embs = field(single, "embeddings")
    check(len(embs) == 1, "embed single: one vector")
    check(len(embs[0]) == DIM, f"embed single: {DIM} dimensions")
    check(abs(norm(embs[0]) - 1.0) < 1e-3, "embed single: unit norm")
    check(field(single, "prompt_eval_count") == 8 or MODEL != "all-minilm", "embed single: prompt_eval_count 8")

    texts = ["why is the sky blue?", "the grass is green", "a", "why is the sky blue?"]
    batch = field(client.embed(model=MODEL, input=texts), "embeddings")
    check(len(batch) == len(texts), "embed batch: one vector per input")
    check(all(len(v) == DIM for v in batch), "embed batch: dimensions")
    check(all(abs(norm(v) - 1.0) < 1e-3 for v in batch), "embed batch: unit norms")
    check(cosine(batch[0], embs[0]) > 0.9999, "embed batch: item 0 equals the single request")
    check(cosine(batch[3], embs[0]) > 0.9999, "embed batch: item 3 (same text) too, order kept")
    check(cosine(batch[1], embs[0]) < 0.99, "embed batch: a different text differs")
    for i, t in enumerate(texts):
        one = field(client.embed(model=MODEL, input=t), "embeddings")[0]
        check(cosine(one, batch[i]) > 0.9999, f"embed batch: item {i} matches its own request")

    legacy = field(client.embeddings(model=MODEL, prompt="why is the sky blue?"), "embedding")
    check(len(legacy) == DIM, "embeddings (legacy): dimensions")
    check(norm(legacy) > 1.5, f"embeddings (legacy): not normalised (norm {norm(legacy):.2f})")
    check(cosine(legacy, embs[0]) > 0.9999, "embeddings (legacy): same direction as embed")

    ps = field(client.ps(), "models")
    names = [field(m, "name") if not isinstance(m, dict) else m["name"] for m in ps]
    check(any(n.startswith(MODEL) for n in names), f"ps: {MODEL} is loaded ({names})")
    m = [m for m in ps if field(m, "name").startswith(MODEL)][0]
    check(field(m, "size") > 0, "ps: size")
    check(field(field(m, "details"), "format") == "gguf", "ps: details.format gguf")

    models = field(client.list(), "models")
    listed = [field(m, "model") for m in models]
    check(any(n.startswith(MODEL) for n in listed), f"list: {MODEL} listed ({listed})")

    show = client.show(MODEL)
    check("embedding" in (field(show, "capabilities") or []), "show: embedding capability")
    info = field(show, "modelinfo") if not isinstance(show, dict) else show["model_info"]
    check(info.get("general.architecture"), "show: model_info has general.architecture")

    try:
        client.embed(model="no-such-model-xyz", input="x")
        check(False, "unknown model raises")
    except ollama.ResponseError as e:
        check(e.status_code == 404, f"unknown model: ResponseError 404 ({e.status_code}: {e.error})")

    manage(client)
    print("all checks passed")


def manage(client):
    """create (blob upload + files), copy, delete; push and pull when a registry is given
    (QUIVER_TEST_REGISTRY=host:port, a plain-HTTP registry)."""
    gguf = os.environ.get("QUIVER_TEST_GGUF")
    if not gguf:
        print("skipped: model management (set QUIVER_TEST_GGUF to a small .gguf)")
        return
    digest = client.create_blob(gguf)
    check(digest.startswith("sha256:"), f"create_blob: {digest[:19]}")
    statuses = [field(r, "status") for r in client.create(model="mgmt-test", files={"m.gguf": digest}, stream=True)]
    check(statuses[-1] == "success", f"create: {statuses}")
    check(field(client.copy("mgmt-test", "mgmt-copy"), "status") == "success", "copy")
    listed = [field(m, "model") for m in field(client.list(), "models")]
    check("mgmt-copy:latest" in listed, "copy: listed")
    try:
        client.copy("no-such-model-xyz", "x")
        check(False, "copy of an unknown model raises")
    except ollama.ResponseError as e:
        check(e.status_code == 404, f"copy unknown: 404 ({e.error})")
    check(field(client.delete("mgmt-copy"), "status") == "success", "delete")
    try:
        client.delete("mgmt-copy")
        check(False, "delete twice raises")
    except ollama.ResponseError as e:
        check(e.status_code == 404, f"delete unknown: 404 ({e.error})")

    registry = os.environ.get("QUIVER_TEST_REGISTRY")
    if not registry:
        print("skipped: push/pull (set QUIVER_TEST_REGISTRY=host:port)")
        return
    remote = f"{registry}/team/mgmt-test"
    check(field(client.copy("mgmt-test", remote), "status") == "success", "copy to a registry name")
    pushed = [field(r, "status") for r in client.push(remote, insecure=True, stream=True)]
    check(pushed[0] == "retrieving manifest" and pushed[-1] == "success", f"push: {pushed[0]} … {pushed[-1]}")
    client.delete(remote)
    seen = []
    for r in client.pull(remote, insecure=True, stream=True):
        s = field(r, "status")
        if not seen or seen[-1] != s:
            seen.append(s)
    check(seen[0] == "pulling manifest", f"pull(stream=True): {seen}")
    check(seen[-3:] == ["verifying sha256 digest", "writing manifest", "success"], "pull: last statuses")
    check(sum(1 for s in seen if s.startswith("pulling ") and len(s) == 20) == 2, "pull: two layers")
    one = client.pull(remote, insecure=True, stream=False)
    check(field(one, "status") == "success", "pull(stream=False): success")
    for m in ("mgmt-test", remote):
        client.delete(m)


if __name__ == "__main__":
    main()
