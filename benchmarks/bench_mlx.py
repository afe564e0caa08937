"""MLX decode speed: `mlxjan serve --engine mlx` against mlx-lm itself, on one tiny model.

Three ways to run the same MLX model (the default model's tokenizer with a few random
layers, made by converters.tiny), in alternating rounds so machine noise hits all alike:
`mlx_lm.stream_generate` called directly in this process, `mlxjan serve --engine mlx`, and
`mlx_lm.server`. Each request streams a greedy answer of --max-tokens tokens to a new short
prompt; decode speed is tokens after the first over the time after the first. Then
--streams requests at once measure each server's batching (aggregate tokens/s).

    .venv/bin/python benchmarks/bench_mlx.py --rounds 3 --requests 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from converters.tiny import make_tiny_model
from mlxjan.models.store import ModelStore, folder_sha256, new_manifest, staged_size
from mlxjan.settings import DEFAULT_MODEL, Settings
from mlxjan.testing.server import free_port, wait_until_up

MODEL = "bench-tiny-mlx"


def prompt(n: int) -> str:
    return f"Request {n}. Write a long story about a lighthouse keeper."


def build_model(root: Path, layers: int, hidden: int) -> Path:
    """The tiny model installed in a data dir under `root`; returns its folder."""
    store = ModelStore(Settings().data_dir)
    manifest = store.get(DEFAULT_MODEL)
    if manifest is None:
        raise SystemExit(f"run `mlxjan pull {DEFAULT_MODEL}` first")
    bench_store = ModelStore(root)
    with bench_store.staging(MODEL) as staged:
        folder = make_tiny_model(store.weights_path(manifest), staged / "m", layers=layers,
                                 hidden=hidden, heads=8, kv_heads=2, intermediate=hidden * 4,
                                 dtype="float16")
        bench_store.install(folder, new_manifest(
            id=MODEL, format="mlx", source="bench", file=".", sha256=folder_sha256(folder),
            size=staged_size(folder), architecture="qwen2", context_length=4096))
    return bench_store.model_dir(MODEL)


def direct(model: Any, tokenizer: Any, n: int, max_tokens: int) -> float:
    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_sampler

    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt(n)}],
                                         add_generation_prompt=True, tokenize=False)
    stamps = [time.perf_counter() for _ in stream_generate(
        model, tokenizer, text, max_tokens=max_tokens, sampler=make_sampler(0.0))]
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def over_http(url: str, model: str, n: int, max_tokens: int) -> float:
    body = {"model": model, "stream": True, "temperature": 0.0, "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": prompt(n)}]}
    stamps: list[float] = []
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body,
                      timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choices = json.loads(line[6:]).get("choices") or []
            if choices and (choices[0].get("delta") or {}).get("content"):
                stamps.append(time.perf_counter())
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def parallel(url: str, model: str, counter: list[int], streams: int, max_tokens: int) -> float:
    """Aggregate decode speed of `streams` answers at once: tokens over wall time."""
    first = counter[0] + 1
    counter[0] += streams

    def one(n: int) -> int:
        body = {"model": model, "temperature": 0.0, "max_tokens": max_tokens,
                "messages": [{"role": "user", "content": prompt(n)}]}
        reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=600).json()
        return int(reply["usage"]["completion_tokens"])

    start = time.perf_counter()
    with ThreadPoolExecutor(streams) as pool:
        total = sum(pool.map(one, range(first, first + streams)))
    return total / (time.perf_counter() - start)


def server_round(kind: str, home: Path, folder: Path, args: argparse.Namespace,
                 counter: list[int], together: list[float]) -> list[float]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    if kind == "mlxjan":
        cmd = [sys.executable, "-m", "mlxjan", "serve", "--engine", "mlx", "--port", str(port),
               "--model", MODEL, "--log-level", "warning"]
        model = MODEL
    else:
        cmd = [sys.executable, "-m", "mlx_lm", "server", "--model", str(folder), "--port",
               str(port), "--log-level", "WARNING"]
        model = str(folder)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "MLXJAN_HOME": str(home)})
    try:
        wait_until_up(url, proc, path="/v1/models")
        over_http(url, model, -1, 8)  # warm-up: load weights, first-call costs
        speeds = []
        for _ in range(args.requests):
            counter[0] += 1
            speeds.append(over_http(url, model, counter[0], args.max_tokens))
        together.append(parallel(url, model, counter, args.streams, args.max_tokens))
        return speeds
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--streams", type=int, default=4)
    args = parser.parse_args()
    from mlx_lm import load

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        folder = build_model(home, args.layers, args.hidden)
        model, tokenizer = load(str(folder))[:2]
        direct(model, tokenizer, -1, 8)  # warm-up
        results: dict[str, list[float]] = {"mlx_lm.generate": [], "mlxjan": [],
                                           "mlx_lm.server": []}
        counter = [0]
        together: dict[str, list[float]] = {"mlxjan": [], "mlx_lm.server": []}
        for _ in range(args.rounds):
            for _ in range(args.requests):
                counter[0] += 1
                results["mlx_lm.generate"].append(
                    direct(model, tokenizer, counter[0], args.max_tokens))
            for kind in ("mlxjan", "mlx_lm.server"):
                results[kind] += server_round(kind, home, folder, args, counter,
                                              together[kind])
    med = {k: statistics.median(v) for k, v in results.items()}
    for kind, tps in med.items():
        print(f"{kind:16} decode median {tps:8.2f} tok/s (n={len(results[kind])})")
    for kind, speeds in together.items():
        agg = statistics.median(speeds)
        print(f"{kind:16} {args.streams} parallel streams {agg:8.2f} tok/s aggregate = "
              f"{agg / med[kind]:.2f}x one stream")
    print(f"ratios: mlxjan / mlx_lm.generate {med['mlxjan'] / med['mlx_lm.generate']:.3f}x "
          f"(target >= 0.9), mlxjan / mlx_lm.server {med['mlxjan'] / med['mlx_lm.server']:.3f}x "
          f"(target >= 1.0)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
