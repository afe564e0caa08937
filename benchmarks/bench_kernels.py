"""llama.cpp kernel plans on this CPU: prefill and decode tok/s with repacked weights and with
the plain kernels, through the engine's one loader, and what the load-time self-check costs.

    .venv/bin/python benchmarks/bench_kernels.py [--rounds 3] [--threads N]

Plans alternate round by round, so a noisy neighbour slows both alike. Decode is greedy,
one token per llama_decode, as a lone answer runs; prefill is one 512-token prompt chunk.
A plan the self-check rejects on this CPU is not measured: it may crash the process.
"""

from __future__ import annotations

import argparse
import statistics
import time

from mlxjan.engine.llamacpp.decode import CHUNK, Runtime, evaluate, load, logits_at
from mlxjan.engine.llamacpp.kernels import PLAIN, REPACKED, KernelCheck, KernelPlan
from mlxjan.models.store import ModelStore
from mlxjan.settings import DEFAULT_MODEL, Settings

PROMPT = "def fibonacci(n):\n    " * 200
DECODE = 64


def one_round(runtime: Runtime) -> tuple[float, float]:
    """(prefill tok/s, decode tok/s) on a fresh sequence."""
    runtime.ctx.kv_cache_seq_rm(0, 0, -1)
    prompt = runtime.tokenize(PROMPT, False)[:CHUNK]
    began = time.perf_counter()
    evaluate(runtime, prompt, 0, every_logit=False)
    prefill = len(prompt) / (time.perf_counter() - began)
    began = time.perf_counter()
    for i in range(DECODE):
        token = int(logits_at(runtime, -1).argmax())
        evaluate(runtime, [token], len(prompt) + i, every_logit=False)
    return prefill, DECODE / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    settings = Settings()
    store = ModelStore(settings.data_dir)
    manifest = store.get(DEFAULT_MODEL)
    assert manifest is not None, f"install {DEFAULT_MODEL} first: mlxjan pull {DEFAULT_MODEL}"
    weights = store.weights_path(manifest)

    began = time.perf_counter()
    verdict = KernelCheck(None).verdict(weights, manifest.sha256)
    print(f"self-check, uncached: {time.perf_counter() - began:.1f} s -> {verdict.detail}")
    plans: list[KernelPlan] = [PLAIN] + ([REPACKED] if verdict.plan == REPACKED else [])
    runtimes = {plan: load(weights, 4096, args.threads, 1, plan) for plan in plans}
    results: dict[KernelPlan, list[tuple[float, float]]] = {plan: [] for plan in plans}
    for _ in range(args.rounds):
        for plan in plans:
            results[plan].append(one_round(runtimes[plan]))
    for plan in plans:
        prefill = statistics.median(r[0] for r in results[plan])
        decode = statistics.median(r[1] for r in results[plan])
        print(f"{plan.describe():32} prefill {prefill:7.1f} tok/s   decode {decode:6.1f} tok/s")
        runtimes[plan].close()


if __name__ == "__main__":
    main()
