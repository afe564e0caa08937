"""Sampling pieces for the MLX engine: the model runner, mlx-lm's samplers and logits
processors for our sampling parameters, the tool-call redo rule, and logprobs.

Used only on the MLX engine's own thread (MLX streams are thread-local).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from mlxjan.engine.base import SamplingParams, TokenLogprob
from mlxjan.engine.mlx_vocab import Vocab


@dataclass(frozen=True)
class Runner:
    """A loaded model and the MLX stream its engine thread computes on.

    The stream is made on the engine thread itself: mlx-lm's module-level thread-local
    stream, used from another thread, aborts the process at exit on the CPU backend.
    """

    model: Any
    stream: Any


def make_sampler_chain(sampling: SamplingParams) -> tuple[Callable[..., Any], list[Any]]:
    """mlx-lm's sampler and logits processors for our sampling parameters."""
    from mlx_lm.sample_utils import make_logits_processors, make_sampler

    sampler = make_sampler(
        temp=max(sampling.temperature, 0.0), top_p=sampling.top_p, min_p=sampling.min_p,
        top_k=sampling.top_k,
    )
    processors = make_logits_processors(
        repetition_penalty=sampling.repetition_penalty
        if sampling.repetition_penalty != 1.0 else None,
        presence_penalty=sampling.presence_penalty or None,
        frequency_penalty=sampling.frequency_penalty or None,
        # llama.cpp's penalties look back 64 tokens; use the same window on both engines.
        repetition_context_size=64, presence_context_size=64, frequency_context_size=64,
    )
    return sampler, processors


@dataclass(frozen=True)
class MlxRestart:
    """When `check` says so, the answer starts again under a fresh `matcher()`."""

    check: Callable[[str], bool | None]
    matcher: Callable[[], Any]
    sampling: SamplingParams


def token_logprob(token: int, logprobs: Any, top: int, vocab: Vocab) -> TokenLogprob:
    """The sampled token's log-probability and the `top` most likely alternatives."""
    import mlx.core as mx

    def entry(tok: int) -> tuple[str, float, tuple[int, ...]]:
        raw = vocab.piece(tok)
        return raw.decode("utf-8", errors="replace"), float(logprobs[tok].item()), tuple(raw)

    text, value, raw = entry(token)
    ranked: list[int] = []
    if top:
        best = cast(list[int], mx.argpartition(-logprobs, kth=top - 1)[:top].tolist())
        ranked = sorted(best, key=lambda t: -float(logprobs[t].item()))
    return TokenLogprob(text, value, raw, tuple(entry(t) for t in ranked))
