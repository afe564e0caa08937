"""The token loop on a loaded MLX model: chunked cancellable prefill and sampling.

Runs only on the MLX engine's own thread (MLX streams are thread-local). It drives mlx-lm's
`generate_step` with mlx-lm's samplers and logits processors, and turns what it yields into
the shared decode loop's SampledTokens.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from mlxjan.engine.base import SamplingParams, TokenLogprob
from mlxjan.engine.generation import SampledToken

# Prompt tokens per forward pass while prefilling: the client's disconnect is noticed
# between chunks, so this bounds how long a cancelled request keeps the engine.
PREFILL_CHUNK = 512


class PrefillCancelled(Exception):
    """Raised from mlx-lm's progress callback to stop a prefill the client abandoned."""


@dataclass
class LiveCache:
    """The model's KV cache and the tokens it holds, owned by the engine thread."""

    layers: list[Any]
    tokens: list[int] = field(default_factory=list)

    @property
    def size(self) -> int:
        return int(self.layers[0].offset) if self.layers else 0


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


def generate(model: Any, live: LiveCache, prompt: list[int], sampling: SamplingParams,
             pieces: list[bytes], eos: set[int],
             cancelled: threading.Event) -> Iterator[SampledToken]:
    """Prefill `prompt[live.size:]` onto the live cache, then sample until end of generation.

    The live cache's token list is kept equal to what the cache holds, so the next request
    can reuse it; raises PrefillCancelled if the client leaves during the prefill.
    """
    import mlx.core as mx
    from mlx_lm.generate import generate_step

    if sampling.seed is not None:
        mx.random.seed(sampling.seed)
    sampler, processors = make_sampler_chain(sampling)
    start = live.size

    def progress(done: int, total: int) -> None:
        if cancelled.is_set() and done < total:
            raise PrefillCancelled

    steps = generate_step(
        mx.array(prompt[start:]), model, max_tokens=-1, sampler=sampler,
        logits_processors=processors or None, prompt_cache=live.layers,
        prefill_step_size=PREFILL_CHUNK, prompt_progress_callback=progress,
    )
    fed = list(prompt)
    try:
        for sampled, logprobs in steps:
            token = int(sampled)
            fed.append(token)
            if token in eos:
                yield SampledToken(b"", end_of_generation=True)
                return
            logprob = _logprob(token, logprobs, sampling.top_logprobs, pieces) \
                if sampling.logprobs else None
            yield SampledToken(pieces[token] if token < len(pieces) else b"", logprob=logprob)
    finally:
        steps.close()
        # generate_step feeds each token to the model before yielding it, so the cache holds
        # every token seen here; the next request trims what it does not share.
        live.tokens = fed[: live.size]


def _logprob(token: int, logprobs: Any, top: int, pieces: list[bytes]) -> TokenLogprob:
    import mlx.core as mx

    def entry(tok: int) -> tuple[str, float, tuple[int, ...]]:
        raw = pieces[tok] if tok < len(pieces) else b""
        return raw.decode("utf-8", errors="replace"), float(logprobs[tok].item()), tuple(raw)

    text, value, raw = entry(token)
    ranked: list[int] = []
    if top:
        best = cast(list[int], mx.argpartition(-logprobs, kth=top - 1)[:top].tolist())
        ranked = sorted(best, key=lambda t: -float(logprobs[t].item()))
    return TokenLogprob(text, value, raw, tuple(entry(t) for t in ranked))
