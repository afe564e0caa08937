"""The self-check's child process: evaluate the probe text under one kernel plan.

    python -m mlxjan.engine.llamacpp.probe MODEL.gguf --repack 0|1 --out ROWS.npy [--embedding]

Writes one log-softmax row per text position to ROWS.npy (with --embedding: one unit vector
per embedding probe text), and prints one JSON line with the text's tokens (none for
embeddings) and the build's CPU features. A kernel path that crashes takes only this
process down; kernels.py reads the signal from its exit status.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from mlxjan.engine.llamacpp.decode import Runtime, evaluate, load, logits_at
from mlxjan.engine.llamacpp.kernels import KernelPlan
from mlxjan.engine.selfcheck import EMBEDDING_PROBES, PROBE_TEXT, STEPS, Rows, log_softmax

CONTEXT = 256


def probe_rows(runtime: Runtime, tokens: list[int], steps: int = STEPS) -> Rows:
    """Log-softmax of the logits at every position: the head of `tokens` in one batch, the
    last `steps` tokens one call each."""
    head = len(tokens) - steps
    evaluate(runtime, tokens[:head], 0, every_logit=True)
    rows = [log_softmax(logits_at(runtime, n)) for n in range(head)]
    for i in range(steps):
        evaluate(runtime, tokens[head + i:head + i + 1], head + i, every_logit=True)
        rows.append(log_softmax(logits_at(runtime, 0)))
    return np.stack(rows)


def build_features() -> list[str]:
    """The CPU features this llama.cpp build was compiled with ("AVX2", "AMX_INT8", ...)."""
    import llama_cpp

    info = llama_cpp.llama_print_system_info().decode(errors="replace")
    # "CPU : SSE3 = 1 | AVX2 = 1 | ... | REPACK = 1 |"
    return sorted({part.split("=")[0].split()[-1] for part in info.split("|")
                   if part.strip().endswith("= 1")})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlxjan.engine.llamacpp.probe")
    parser.add_argument("weights", type=Path)
    parser.add_argument("--repack", type=int, choices=(0, 1), required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--embedding", action="store_true")
    args = parser.parse_args(argv)
    if args.embedding:
        return embedding_main(args.weights, KernelPlan(repack=bool(args.repack)), args.out)
    import llama_cpp

    runtime = load(args.weights, CONTEXT, None, 1, KernelPlan(repack=bool(args.repack)))
    add_bos = bool(llama_cpp.llama_vocab_get_add_bos(runtime.model.vocab))
    tokens = runtime.tokenize(PROBE_TEXT, add_bos)
    np.save(args.out, probe_rows(runtime, tokens))
    runtime.close()
    print(json.dumps({"tokens": tokens, "build": build_features()}))
    return 0


def embedding_main(weights: Path, plan: KernelPlan, out: Path) -> int:
    from mlxjan.engine.llamacpp.embed import EmbeddingRuntime

    runtime = EmbeddingRuntime.open(weights, CONTEXT, None, plan)
    vectors = runtime.embed([runtime.tokenize(text) for text in EMBEDDING_PROBES])
    np.save(out, np.stack([v / np.linalg.norm(v) for v in vectors]).astype(np.float32))
    runtime.close()
    print(json.dumps({"tokens": [], "build": build_features()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
