"""Embeddings per second: `mlxjan serve` vs llama-cpp-python's own server, same GGUF, one run.

256 short texts (12 to 20 tokens), embedded by nomic-embed-text-v1.5 F16 on each server in
turn: as one request of 256 inputs (`--rounds` times, median), then as 256 requests of one
input each, one after another. The peer, `python -m llama_cpp.server --embedding true`
(there is no llama-server binary here), loads under the kernel plan mlxjan's embedding
self-check chose for this CPU, with the same context and threads; its batch size is its
own default. Reported: embeddings per second and the ratios mlxjan / peer.

    .venv/bin/pip install -e '.[bench]'
    mlxjan pull nomic-embed-text-v1.5
    .venv/bin/python benchmarks/bench_embeddings.py [--rounds 3] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mlxjan.engine.cpu import cpu_info
from mlxjan.engine.llamacpp.kernels import KernelCheck
from mlxjan.models.store import ModelStore
from mlxjan.settings import Settings
from mlxjan.testing.server import free_port, wait_until_up

MODEL = "nomic-embed-text-v1.5"
CONTEXT = 2048
SUBJECTS = ["the old lighthouse", "a red bicycle", "the city library", "our garden pond",
            "the night train", "a mountain village", "the science museum", "a wooden boat"]
EVENTS = ["was repainted last spring", "opens early on weekdays", "needs a new roof",
          "hosted a music festival", "was closed for repairs", "welcomed many visitors"]


def texts(count: int = 256) -> list[str]:
    """Short, distinct documents: numbered, so no two are the same text."""
    return [f"search_document: note {n}: {SUBJECTS[n % len(SUBJECTS)]} "
            f"{EVENTS[n // len(SUBJECTS) % len(EVENTS)]}." for n in range(count)]


def commands(gguf: Path, sha256: str, threads: int) -> dict[str, list[str]]:
    plan = KernelCheck(Settings().self_checks_dir, embedding=True).verdict(gguf, sha256)
    peer = [sys.executable, "-m", "benchmarks.llama_cpp_peer",
            "--repack", str(int(plan.require().repack)), "--model", str(gguf),
            "--embedding", "true", "--n_ctx", str(CONTEXT), "--n_threads", str(threads),
            "--n_threads_batch", str(threads), "--model_alias", MODEL, "--verbose", "False"]
    ours = [sys.executable, "-m", "mlxjan", "serve", "--context-length", str(CONTEXT),
            "--threads", str(threads), "--log-level", "warning"]
    return {"mlxjan": ours, "llama_cpp.server": peer}


def embed(http: httpx.Client, url: str, inputs: list[str]) -> None:
    reply = http.post(f"{url}/v1/embeddings", json={
        "model": MODEL, "input": inputs, "encoding_format": "float"})
    reply.raise_for_status()
    assert len(reply.json()["data"]) == len(inputs)


def measure(cmd: list[str], docs: list[str], rounds: int) -> tuple[float, float]:
    """(embeddings/s as one request of all, embeddings/s as one request each)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([*cmd, "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_until_up(url, proc, path="/v1/models", timeout=180)
        with httpx.Client(timeout=600) as http:
            embed(http, url, docs[:8])  # warm-up: the model loads, first-call costs
            batched = []
            for _ in range(rounds):
                start = time.perf_counter()
                embed(http, url, docs)
                batched.append(len(docs) / (time.perf_counter() - start))
            start = time.perf_counter()
            for doc in docs:
                embed(http, url, [doc])
            single = len(docs) / (time.perf_counter() - start)
        return statistics.median(batched), single
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=cpu_info().physical_cores)
    args = parser.parse_args()
    store = ModelStore(Settings().data_dir)
    manifest = store.get(MODEL)
    if manifest is None:
        raise SystemExit(f"run `mlxjan pull {MODEL}` first")
    docs = texts()
    results = {name: measure(cmd, docs, args.rounds) for name, cmd in
               commands(store.weights_path(manifest), manifest.sha256, args.threads).items()}
    for name, (batched, single) in results.items():
        print(f"{name:18} 256 in one request {batched:6.1f} embeddings/s   "
              f"one a request {single:6.1f} embeddings/s")
    ours, peer = results["mlxjan"], results["llama_cpp.server"]
    print(f"ratios mlxjan/peer: one request {ours[0] / peer[0]:.2f}x, "
          f"one a request {ours[1] / peer[1]:.2f}x ({args.threads} threads)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
