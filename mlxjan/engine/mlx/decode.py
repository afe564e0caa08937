"""Sampling pieces for the MLX engine: the model runner, each answer's own random stream
and sampler (built on mlx-lm's filters) and mlx-lm's logits processors for our sampling
parameters, the tool-call redo rule, and logprobs.

Used only on the MLX engine's own thread (MLX streams are thread-local).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias, cast

from mlxjan.engine.mlx.vocab import Vocab
from mlxjan.types import SamplingParams, TokenLogprob

if TYPE_CHECKING:
    from mlxjan.engine.generation import CallRedo


@dataclass(frozen=True)
class Runner:
    """A loaded model and the MLX stream its engine thread computes on.

    The stream is made on the engine thread itself: mlx-lm's module-level thread-local
    stream, used from another thread, aborts the process at exit on the CPU backend.
    """

    model: Any
    stream: Any


class RandomStream:
    """One answer's own random stream: a PRNG key, split once per sampled token.

    MLX's global random state is shared by every answer in the batch: seeding it for one
    answer would change the others, and their draws would change it. A seeded answer's key
    comes from its seed, so its text depends on nothing else that runs; an unseeded one's
    from fresh entropy.
    """

    def __init__(self, seed: int | None) -> None:
        import mlx.core as mx

        # The API takes seeds from -2**63 to 2**64 - 1; a key takes an unsigned 64-bit one.
        self._key = mx.random.key((secrets.randbits(64) if seed is None else seed) % 2**64)

    def next_key(self) -> Any:
        import mlx.core as mx

        self._key, key = mx.random.split(self._key)
        return key


def make_sampler_chain(sampling: SamplingParams, stream: RandomStream
                       ) -> tuple[Callable[..., Any], list[Any]]:
    """A sampler drawing from `stream` for our sampling parameters (mlx-lm's filters, in
    the order mlx-lm's make_sampler applies them), and mlx-lm's logits processors.

    mlx-lm's BatchGenerator calls each answer's sampler on that answer's row alone.
    """
    import mlx.core as mx
    from mlx_lm.sample_utils import (
        apply_min_p,
        apply_top_k,
        apply_top_p,
        greedy_sampler,
        make_logits_processors,
    )

    processors = make_logits_processors(
        repetition_penalty=sampling.repetition_penalty
        if sampling.repetition_penalty != 1.0 else None,
        presence_penalty=sampling.presence_penalty or None,
        frequency_penalty=sampling.frequency_penalty or None,
        # llama.cpp's penalties look back 64 tokens; use the same window on both engines.
        repetition_context_size=64, presence_context_size=64, frequency_context_size=64,
    )
    if sampling.temperature <= 0:
        return greedy_sampler, processors
    scale = 1.0 / sampling.temperature
    filters: list[Callable[[Any], Any]] = []
    if 0 < sampling.top_p < 1.0:
        filters.append(lambda x: apply_top_p(x, sampling.top_p))
    if sampling.min_p != 0.0:
        filters.append(lambda x: apply_min_p(x, sampling.min_p))
    if sampling.top_k > 0:
        filters.append(lambda x: apply_top_k(x, sampling.top_k))

    def sampler(logprobs: Any) -> Any:
        for keep in filters:
            logprobs = keep(logprobs)
        return mx.random.categorical(logprobs * scale, key=stream.next_key())

    return sampler, processors


# A tool call begun in free text, redone under a fresh matcher (engine/generation.py).
MlxRestart: TypeAlias = "CallRedo[Callable[[], Any]]"


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
