"""Prompt reuse: time to first token as a share of cold, mlxjan against peers, one run.

Workload on the default model: conversation A with a ~2,000-token system prompt (cold), its
second turn, a conversation B with another long system prompt, then A again (A-B-A). Each
server starts fresh, and answers a one-word prompt first so that loading the model (mlxjan
loads on first use, the peers at start) is not counted. Then the restart scenario: a fresh
server answers A's first turn, is stopped (SIGTERM) and started again, and A's second turn is
timed, as a share of that run's cold turn. mlxjan persists its prompt cache to disk; the peers
start cold again (llama-server could save and restore a slot by hand, with --slot-save-path
and POST /slots/{id}?action=save|restore, but a plain restart loses its cache).
Peers: llama-cpp-python's server and, with --llama-server PATH, llama.cpp's own
`llama-server -np 4` (built from the llama-cpp-python sdist; never committed).

    .venv/bin/python benchmarks/bench_cache.py [--llama-server PATH]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_tools import cache_peers, peer_args, server
from mlxjan.settings import DEFAULT_MODEL

SYSTEM_A = "You are a ship's navigator. " + "The sea is calm and the stars are bright. " * 220
SYSTEM_B = "You are a mountain guide. " + "The trail is steep and the air is thin. " * 220


def ttft(url: str, system: str, history: list[dict[str, str]]) -> float:
    body = {"model": DEFAULT_MODEL, "stream": True, "max_tokens": 8, "temperature": 0.0,
            "messages": [{"role": "system", "content": system}, *history]}
    start = time.perf_counter()
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=900) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                choices = json.loads(line[6:]).get("choices") or []
                if choices and choices[0].get("delta", {}).get("content"):
                    return time.perf_counter() - start
    raise RuntimeError("no token came")


TURN1 = [{"role": "user", "content": "Where are we?"}]
TURN2 = [*TURN1, {"role": "assistant", "content": "At sea."},
         {"role": "user", "content": "Which way is north?"}]


def warm_up(url: str) -> None:
    ttft(url, "Be brief.", [{"role": "user", "content": "Hello"}])


def workload(url: str) -> dict[str, float]:
    turn1, turn2 = TURN1, TURN2
    warm_up(url)
    cold = ttft(url, SYSTEM_A, turn1)
    second = ttft(url, SYSTEM_A, turn2)
    ttft(url, SYSTEM_B, turn1)
    aba = ttft(url, SYSTEM_A, [*turn2, {"role": "assistant", "content": "That way."},
                               {"role": "user", "content": "How far to port?"}])
    return {"cold": cold, "turn2": second, "aba": aba}


def fresh(cmd: list[str]) -> dict[str, float]:
    """The workload on a fresh server with an empty prompt-cache folder."""
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as cache_dir, \
            server(cmd, {"MLXJAN_PROMPT_CACHE_DIR": cache_dir}) as url:
        return workload(url)


def restart(cmd: list[str]) -> dict[str, float]:
    """A's first turn, a stop and a start on the same prompt-cache folder, A's second turn."""
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as cache_dir:
        env = {"MLXJAN_PROMPT_CACHE_DIR": cache_dir}  # mlxjan's; the peers ignore it
        with server(cmd, env) as url:
            warm_up(url)
            cold = ttft(url, SYSTEM_A, TURN1)
        with server(cmd, env) as url:
            warm_up(url)
            return {"cold": cold, "restart": ttft(url, SYSTEM_A, TURN2)}


def main() -> int:
    args, gguf = peer_args()
    peers = cache_peers(args, gguf)
    print(f"{'server':20} {'cold s':>8} {'turn 2':>14} {'A-B-A':>14} {'restart':>22}")
    for name, cmd in peers:
        r, r2 = fresh(cmd), restart(cmd)
        print(f"{name:20} {r['cold']:8.2f} {r['turn2']:6.2f} ({r['turn2'] / r['cold']:5.1%}) "
              f"{r['aba']:6.2f} ({r['aba'] / r['cold']:5.1%}) "
              f"{r2['restart']:6.2f} of {r2['cold']:5.2f} ({r2['restart'] / r2['cold']:5.1%})",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
