"""Editor completion: time to first token of fill-in-the-middle requests as a user types,
mlxjan against llama-cpp-python's server on the same GGUF, one run.

The file: about 1,500 tokens of Python before the cursor and a little after it. The user
types one line; every third keystroke sends a FIM request (`/v1/completions` with `suffix`,
16 tokens, streamed), as an editor plugin does after a pause. The first request is cold;
each later one shares everything before the cursor with the one before it, so a prompt cache
should make it cost only the few new characters and the suffix.

    .venv/bin/python benchmarks/bench_fim.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_tools import cache_peers, peer_args, server
from mlxjan.settings import DEFAULT_MODEL

FUNCTIONS = "".join(
    f"def scale_{i}(values, factor={i}):\n"
    f"    \"\"\"Multiply each value by {i} and drop the negative ones.\"\"\"\n"
    f"    return [v * factor for v in values if v >= 0]\n\n\n"
    for i in range(40))
PREFIX = f"import math\n\n\n{FUNCTIONS}def mean(values):\n"
LINE = "    total = sum(values)"
SUFFIX = "\n    return total / len(values)\n\n\nprint(mean([1, 2, 3]))\n"
EVERY = 3  # characters typed between requests


def ttft(url: str, typed: str, prefix: str = PREFIX) -> float:
    body = {"model": DEFAULT_MODEL, "prompt": prefix + typed, "suffix": SUFFIX,
            "max_tokens": 16, "temperature": 0.0, "stream": True}
    start = time.perf_counter()
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=900) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if line.startswith("data: "):  # the first token (or the end, if none came)
                return time.perf_counter() - start
    raise RuntimeError("no answer came")


def keystrokes(url: str) -> list[float]:
    ttft(url, "", prefix="# warm-up\n")  # loads the model (mlxjan loads on first use)
    return [ttft(url, LINE[:n]) for n in range(0, len(LINE) + 1, EVERY)]


def main() -> int:
    args, gguf = peer_args()
    print(f"{'server':20} {'cold s':>8} {'typing median s':>16} {'max s':>8}  "
          f"({len(range(0, len(LINE) + 1, EVERY)) - 1} keystroke requests)")
    for name, cmd in cache_peers(args, gguf):
        with tempfile.TemporaryDirectory(prefix="bench-fim-") as cache_dir, \
                server(cmd, {"MLXJAN_PROMPT_CACHE_DIR": cache_dir}) as url:
            times = keystrokes(url)
        typing = times[1:]
        print(f"{name:20} {times[0]:8.2f} {statistics.median(typing):16.3f} "
              f"{max(typing):8.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
