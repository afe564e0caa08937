"""Parallel streams: aggregate decode tokens/s of 4 streams against one, mlxjan against peers.

Same model (the default GGUF), same threads, one run. All servers are up at once and the
rounds alternate between them (one stream, then four, server after server), so that a
machine shared with other work slows each about equally. Each stream is a greedy answer of up
to --max-tokens tokens to a short prompt; speed is completion tokens over wall time (short
prompts: almost all of it is decoding). Peers: llama-cpp-python's server (one sequence at a
time) and, with --llama-server PATH, llama.cpp's own `llama-server -np 4` (4 slots, continuous
batching; built from the llama-cpp-python sdist, never committed).

    .venv/bin/python benchmarks/bench_parallel.py [--llama-server PATH] [--threads N]
        [--rounds N] [--mlxjan-at WORKTREE [--no-peers]]
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_tools import cache_peers, peer_args, server
from mlxjan.settings import DEFAULT_MODEL

STREAMS = 4
MAX_TOKENS = 128


def answer(url: str, n: int) -> tuple[int, float]:
    """One streamed greedy answer: completion tokens and time to first token."""
    body = {"model": DEFAULT_MODEL, "stream": True, "max_tokens": MAX_TOKENS,
            "temperature": 0.0, "stream_options": {"include_usage": True},
            "messages": [{"role": "user",
                          "content": f"Count from {n} to {n + 400}, one number per line."}]}
    start, first, tokens, chunks = time.perf_counter(), 0.0, 0, 0
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=900) as resp:
        for line in resp.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            choices = chunk.get("choices") or []
            if choices and (choices[0].get("delta") or {}).get("content"):
                first = first or time.perf_counter() - start
                chunks += 1
            tokens = (chunk.get("usage") or {}).get("completion_tokens", tokens)
    return tokens or chunks, first  # llama_cpp.server sends no usage: a chunk per token


def streams(url: str, count: int, base: int) -> tuple[float, float]:
    """`count` answers at once: aggregate tokens/s over wall time, and the mean TTFT."""
    start = time.perf_counter()
    with ThreadPoolExecutor(count) as pool:
        results = list(pool.map(lambda i: answer(url, base + 37 * i), range(count)))
    wall = time.perf_counter() - start
    return sum(t for t, _ in results) / wall, statistics.mean(f for _, f in results)


def main() -> int:
    args, gguf = peer_args()
    # llama_cpp.server by default cuts off the answer streaming when a new request comes.
    peers = cache_peers(args, gguf, "--interrupt_requests", "false")
    one: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in peers}
    four: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in peers}
    with ExitStack() as stack:
        urls = {name: stack.enter_context(server(cmd)) for name, cmd in peers}
        for url in urls.values():
            answer(url, 1)  # warm-up: mlxjan loads the model on first use
        for round_ in range(args.rounds):
            # Every other round in the opposite order, so no server always runs right
            # after the same neighbour.
            order = list(urls.items())
            for name, url in order if round_ % 2 == 0 else order[::-1]:
                one[name].append(streams(url, 1, 10 + round_))
                four[name].append(streams(url, STREAMS, 100 + 10 * round_))
                print(f"round {round_ + 1} {name}: 1 stream {one[name][-1][0]:.2f} tok/s, "
                      f"{STREAMS} streams {four[name][-1][0]:.2f} tok/s", file=sys.stderr,
                      flush=True)
    print(f"{'server':20} {'1 stream tok/s':>15} {'TTFT s':>7} {'4 streams tok/s':>16} "
          f"{'TTFT s':>7} {'ratio':>6}")
    for name in urls:
        single = statistics.mean(s for s, _ in one[name])
        together = statistics.mean(s for s, _ in four[name])
        print(f"{name:20} {single:15.2f} {statistics.mean(f for _, f in one[name]):7.2f} "
              f"{together:16.2f} {statistics.mean(f for _, f in four[name]):7.2f} "
              f"{together / single:5.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
