"""Decode speed and short-prompt time to first token: `mlxjan serve` vs `llama_cpp.server`.

Both servers run the same GGUF with the same context size and thread count, one at a time,
in alternating rounds (A B A B ...) so that machine noise hits both alike. Each request
streams a greedy answer to a short prompt that is new each time (a counter in it), so both
servers prefill the same short prompt. Reported: medians and the ratios mlxjan / peer.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python benchmarks/bench_serve.py --rounds 4 --requests 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_tools import llama_cpp_server
from mlxjan.models.store import ModelStore
from mlxjan.settings import DEFAULT_MODEL, Settings
from mlxjan.testing.server import free_port, wait_until_up


@dataclass
class Samples:
    ttft: list[float] = field(default_factory=list)
    decode_tps: list[float] = field(default_factory=list)


def launch(kind: str, gguf: Path, port: int, ctx: int, threads: int) -> subprocess.Popen[bytes]:
    if kind == "mlxjan":
        cmd = [sys.executable, "-m", "mlxjan", "serve", "--port", str(port),
               "--context-length", str(ctx), "--threads", str(threads), "--log-level", "warning"]
    else:
        cmd = llama_cpp_server(str(gguf), "--port", str(port), "--n_ctx", str(ctx),
                               "--n_threads", str(threads), "--n_threads_batch", str(threads),
                               "--model_alias", DEFAULT_MODEL, "--verbose", "False")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def one_request(http: httpx.Client, url: str, n: int, max_tokens: int) -> tuple[float, float]:
    body = {"model": DEFAULT_MODEL, "stream": True, "temperature": 0.0, "max_tokens": max_tokens,
            "messages": [{"role": "user", "content":
                          f"Request {n}. Write a long story about a lighthouse keeper."}]}
    start = time.perf_counter()
    stamps: list[float] = []
    with http.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            choices = chunk.get("choices") or []
            if choices and choices[0].get("delta", {}).get("content"):
                stamps.append(time.perf_counter())
    ttft = stamps[0] - start
    decode = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    return ttft, decode


def run_round(kind: str, gguf: Path, args: argparse.Namespace, counter: list[int],
              into: Samples) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = launch(kind, gguf, port, args.ctx, args.threads)
    try:
        wait_until_up(url, proc, path="/v1/models")
        with httpx.Client(timeout=600) as http:
            one_request(http, url, -1, 8)  # warm-up: load weights, first-call costs
            for _ in range(args.requests):
                counter[0] += 1
                ttft, tps = one_request(http, url, counter[0], args.max_tokens)
                into.ttft.append(ttft)
                into.decode_tps.append(tps)
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    manifest = ModelStore(Settings().data_dir).get(DEFAULT_MODEL)
    if manifest is None:
        raise SystemExit(f"run `mlxjan pull {DEFAULT_MODEL}` first")
    gguf = ModelStore(Settings().data_dir).weights_path(manifest)
    results = {"mlxjan": Samples(), "llama_cpp.server": Samples()}
    counter = [0]
    for _ in range(args.rounds):
        for kind, samples in results.items():
            run_round(kind, gguf, args, counter, samples)
    med = {k: (statistics.median(s.ttft), statistics.median(s.decode_tps))
           for k, s in results.items()}
    for kind, (ttft, tps) in med.items():
        print(f"{kind:18} TTFT median {ttft * 1000:7.1f} ms   decode median {tps:6.2f} tok/s "
              f"(n={len(results[kind].ttft)})")
    ours, peer = med["mlxjan"], med["llama_cpp.server"]
    print(f"ratios mlxjan/peer: decode {ours[1] / peer[1]:.3f}x (target >= 0.95), "
          f"TTFT {ours[0] / peer[0]:.3f}x (target <= 1.1)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
