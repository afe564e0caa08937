"""The token loop on a loaded MLX model: chunked cancellable prefill and sampling.

Runs only on the MLX engine's own thread (MLX streams are thread-local). It drives mlx-lm's
`generate_step` with mlx-lm's samplers and logits processors, and turns what it yields into
the shared decode loop's SampledTokens.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from mlxjan.engine.base import SamplingParams, TokenLogprob
from mlxjan.engine.generation import SampledToken
from mlxjan.engine.mlx_guidance import mask_processor
from mlxjan.engine.mlx_vocab import Vocab

# Prompt tokens per forward pass while prefilling: the client's disconnect is noticed
# between chunks, so this bounds how long a cancelled request keeps the engine.
PREFILL_CHUNK = 512


class PrefillCancelled(Exception):
    """Raised from mlx-lm's progress callback to stop a prefill the client abandoned."""


@dataclass(frozen=True)
class Runner:
    """A loaded model and the MLX stream its engine thread computes on.

    The stream is made on the engine thread itself: mlx-lm's module-level thread-local
    stream, used from another thread, aborts the process at exit on the CPU backend.
    """

    model: Any
    stream: Any


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


@dataclass(frozen=True)
class MlxRestart:
    """When `check` says so, the answer starts again under a fresh `matcher()`."""

    check: Callable[[str], bool | None]
    matcher: Callable[[], Any]
    sampling: SamplingParams


def generate(runner: Runner, live: LiveCache, prompt: list[int], sampling: SamplingParams,
             vocab: Vocab, cancelled: threading.Event, matcher: Any = None,
             restart: MlxRestart | None = None) -> Iterator[SampledToken]:
    """Prefill `prompt[live.size:]` onto the live cache, then sample until end of generation.

    `matcher` (llguidance) masks every step. With `restart`, its check sees the answer as it
    grows; when it says True, the answer is dropped and sampled again under its matcher.
    The live cache's token list is kept equal to what the cache holds, so the next request
    can reuse it; raises PrefillCancelled if the client leaves during the prefill.
    """
    import mlx.core as mx

    if sampling.seed is not None:
        mx.random.seed(sampling.seed)
    fed = list(prompt)
    steps = _steps(runner, live, prompt, sampling, matcher, cancelled)
    text = ""
    try:
        while True:  # not `for`: a restart swaps `steps` for a new generator
            sampled, logprobs = next(steps)  # never exhausted: max_tokens=-1
            token = int(sampled)
            fed.append(token)
            if token in vocab.eos:
                yield SampledToken(b"", end_of_generation=True)
                return
            piece = vocab.piece(token)
            if restart is not None:
                decision = restart.check(text + piece.decode("utf-8", errors="ignore"))
                if decision:
                    steps.close()
                    _rewind(runner.model, live, len(prompt) - 1)
                    fed, text, sampling = list(prompt), "", restart.sampling
                    steps = _steps(runner, live, prompt, sampling, restart.matcher(), cancelled)
                    restart = None
                    yield SampledToken(b"", restart=True)
                    continue
                if decision is False:
                    restart = None
            text += piece.decode("utf-8", errors="ignore")
            logprob = _logprob(token, logprobs, sampling.top_logprobs, vocab) \
                if sampling.logprobs else None
            yield SampledToken(piece, logprob=logprob)
    finally:
        steps.close()
        # generate_step feeds each token to the model before yielding it, so the cache holds
        # every token seen here; the next request trims what it does not share.
        live.tokens = fed[: live.size]


def _steps(runner: Runner, live: LiveCache, prompt: list[int], sampling: SamplingParams,
           matcher: Any, cancelled: threading.Event) -> Generator[tuple[Any, Any], None, None]:
    """mlx-lm's generate_step over what the live cache does not hold yet."""
    import mlx.core as mx
    from mlx_lm.generate import generate_step

    suffix = prompt[live.size:]
    sampler, processors = make_sampler_chain(sampling)
    if matcher is not None:
        processors.append(mask_processor(matcher, skip=len(suffix)))

    def progress(done: int, total: int) -> None:
        if cancelled.is_set() and done < total:
            raise PrefillCancelled

    steps: Generator[tuple[Any, Any], None, None] = generate_step(
        mx.array(suffix), runner.model, runner.stream, max_tokens=-1, sampler=sampler,
        logits_processors=processors or None, prompt_cache=live.layers,
        prefill_step_size=PREFILL_CHUNK, prompt_progress_callback=progress)
    return steps


def _rewind(model: Any, live: LiveCache, keep: int) -> None:
    """Cut the live cache back to its first `keep` tokens (or empty it if it cannot trim)."""
    from mlx_lm.models.cache import can_trim_prompt_cache, make_prompt_cache, trim_prompt_cache

    excess = live.size - keep
    if excess > 0 and can_trim_prompt_cache(live.layers):
        trim_prompt_cache(live.layers, excess)
    elif excess > 0:
        live.layers = make_prompt_cache(model)
    live.tokens = live.tokens[: live.size]


def _logprob(token: int, logprobs: Any, top: int, vocab: Vocab) -> TokenLogprob:
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
