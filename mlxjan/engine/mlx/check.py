"""The MLX engine's load-time self-check (the shared part is selfcheck.py).

The probe text is evaluated three ways, each by kernels the others do not use: whole, in
one call (the prompt's matrix kernels), step by step through the KV cache (decoding's
vector kernels and cache updates), and, where MLX computes on a GPU, whole on the CPU.
Their next-token distributions must agree. A model failing this is refused: MLX has no
slower path that is known right. Runs on the engine thread (MLX streams are thread-local).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mlxjan.engine.mlx.decode import Runner
from mlxjan.engine.selfcheck import PROBE_TEXT, STEPS, Rows, compare, log_softmax


def probe_tokens(tokenizer: Any) -> list[int]:
    tokens: list[int] = tokenizer.encode(PROBE_TEXT)
    return tokens


def _rows(logits: Any) -> Rows:
    import mlx.core as mx

    return log_softmax(np.array(logits[0].astype(mx.float32)))


def evaluate_whole(runner: Runner, tokens: list[int], stream: Any | None = None) -> Rows:
    import mlx.core as mx

    with mx.stream(stream or runner.stream):
        return _rows(runner.model(mx.array([tokens])))


def evaluate_stepwise(runner: Runner, tokens: list[int]) -> Rows:
    """The head in one call, then the last STEPS tokens one at a time through the cache."""
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    head = len(tokens) - STEPS
    with mx.stream(runner.stream):
        cache = make_prompt_cache(runner.model)
        rows = [_rows(runner.model(mx.array([tokens[:head]]), cache=cache))]
        rows += [_rows(runner.model(mx.array([[t]]), cache=cache)) for t in tokens[head:]]
    return np.concatenate(rows)


def check_model(runner: Runner, tokens: list[int]) -> str | None:
    """None when the model's paths agree on the probe text; else what went wrong."""
    import mlx.core as mx

    whole = evaluate_whole(runner, tokens)
    if not np.isfinite(whole).all():
        return "its logits are not finite"
    cause = compare(whole, evaluate_stepwise(runner, tokens))
    if cause is not None:
        return f"decoding step by step: {cause}"
    if mx.default_device() == mx.gpu:
        cause = compare(evaluate_whole(runner, tokens, mx.cpu), whole)
        if cause is not None:
            return f"on the GPU, against the CPU: {cause}"
    return None
