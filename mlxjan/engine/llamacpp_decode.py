"""The token loop on a loaded llama.cpp model: cache reuse, chunked prefill, sampling.

Written against llama-cpp-python's low-level pieces instead of `Llama.generate`, for three
things that needs: a prefill that stops between chunks when the client has left, a sampler
chain this server builds (grammar included), and restarting an answer under a grammar when
the model begins a tool call in free text.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mlxjan.engine.base import SamplingParams, TokenLogprob
from mlxjan.engine.generation import SampledToken
from mlxjan.engine.prompt_cache import StateCodec
from mlxjan.errors import EngineError

if TYPE_CHECKING:
    from llama_cpp import Llama
    from llama_cpp._internals import LlamaSampler
    from llama_cpp.llama_grammar import LlamaGrammar

# From the answer so far: True to restart it constrained, False never, None not yet.
AttemptCheck = Callable[[str], "bool | None"]


def reuse_prefix(llm: Llama, prompt: list[int], *, batch_aligned: bool) -> int:
    """Trim the KV cache to the longest prefix shared with `prompt`; return its length.

    The last prompt token is always evaluated again, for fresh logits. With
    `batch_aligned` the kept prefix ends on a multiple of n_batch, so the final prompt batch
    (and with it the logits) is the same as in a cold run: seeded sampling then gives the
    same text whatever was cached.
    """
    keep = 0
    for a, b in zip(llm._input_ids[: llm.n_tokens], prompt[:-1], strict=False):
        if a != b:
            break
        keep += 1
    if batch_aligned:
        keep = keep // llm.n_batch * llm.n_batch
    if keep < llm.n_tokens and not llm._ctx.kv_cache_seq_rm(-1, keep, -1):
        keep = 0  # a cache that cannot be trimmed: start over
        llm._ctx.kv_cache_seq_rm(-1, 0, -1)
    llm.n_tokens = keep
    return keep


def prefill(llm: Llama, tokens: list[int], cancelled: threading.Event) -> bool:
    """Evaluate `tokens` one batch at a time; False if cancelled in between.

    Only the last token's logits are computed: `Llama.eval` would also compute them for
    the last token of every batch, and nothing reads those.
    """
    for start in range(0, len(tokens), llm.n_batch):
        if cancelled.is_set():
            return False
        chunk = tokens[start:start + llm.n_batch]
        _decode_prompt(llm, chunk, logits=start + len(chunk) == len(tokens))
    return True


def _decode_prompt(llm: Llama, tokens: list[int], *, logits: bool) -> None:
    if logits:
        _decode(llm, tokens)
        return
    n_past = llm.n_tokens
    llm._ctx.kv_cache_seq_rm(-1, n_past, -1)  # as Llama.eval does: nothing stale after
    llm._batch.set_batch(batch=tokens, n_past=n_past, logits_all=False)
    llm._batch.batch.logits[len(tokens) - 1] = False
    try:
        llm._ctx.decode(llm._batch)
    except RuntimeError as exc:
        raise EngineError(f"llama.cpp failed to evaluate tokens: {exc}") from exc
    llm.input_ids[n_past:n_past + len(tokens)] = tokens
    llm.n_tokens = n_past + len(tokens)


@dataclass(frozen=True)
class Restart:
    """When `check` says so, the answer starts again under `grammar`, with `sampling`."""

    check: AttemptCheck
    grammar: LlamaGrammar
    sampling: SamplingParams


def sample(llm: Llama, prompt: list[int], sampling: SamplingParams,
           grammar: LlamaGrammar | None = None,
           restart: Restart | None = None) -> Iterator[SampledToken]:
    """Sample after the prompt until end of generation (the caller stops it otherwise).

    With `restart`, its check sees the answer as it grows; when it says True, everything
    sampled is dropped and the answer starts again under its grammar (once).
    """
    import llama_cpp

    vocab = llm._model.vocab
    sampler = build_sampler(llm, sampling, grammar)
    text = ""
    while True:
        token = sampler.sample(llm._ctx, -1)
        if llama_cpp.llama_vocab_is_eog(vocab, token):
            yield SampledToken(b"", end_of_generation=True)
            return
        piece = llm.detokenize([token])
        if restart is not None:
            decision = restart.check(text + piece.decode("utf-8", errors="ignore"))
            if decision:
                # The model began a tool call in free text: answer again, constrained.
                _rewind_to_prompt(llm, prompt)
                sampling = restart.sampling
                sampler, restart, text = build_sampler(llm, sampling, restart.grammar), None, ""
                yield SampledToken(b"", restart=True)
                continue
            if decision is False:
                restart = None
        text += piece.decode("utf-8", errors="ignore")
        logprob = _logprob(llm, token, sampling.top_logprobs) if sampling.logprobs else None
        yield SampledToken(piece, logprob=logprob)
        _decode(llm, [token])


def build_sampler(llm: Llama, sampling: SamplingParams,
                  grammar: LlamaGrammar | None) -> LlamaSampler:
    """The same chain as llama-cpp-python builds, with an optional grammar."""
    from llama_cpp._internals import LlamaSampler

    chain = LlamaSampler()
    chain.add_penalties(n_vocab=llm.n_vocab(), penalty_last_n=llm.last_n_tokens_size,
                        penalty_repeat=sampling.repetition_penalty,
                        penalty_freq=sampling.frequency_penalty,
                        penalty_present=sampling.presence_penalty)
    if grammar is not None:
        chain.add_grammar(llm._model, grammar)
    if sampling.temperature <= 0:
        chain.add_greedy()
        return chain
    chain.add_top_k(sampling.top_k)
    chain.add_top_p(sampling.top_p, 1)
    chain.add_min_p(sampling.min_p, 1)
    chain.add_temp(sampling.temperature)
    chain.add_dist(llm._seed)
    return chain


def _rewind_to_prompt(llm: Llama, prompt: list[int]) -> None:
    """Drop what was generated and evaluate the last prompt token again, for its logits."""
    llm._ctx.kv_cache_seq_rm(-1, len(prompt) - 1, -1)
    llm.n_tokens = len(prompt) - 1
    _decode(llm, prompt[-1:])


def _decode(llm: Llama, tokens: list[int]) -> None:
    try:
        llm.eval(tokens)
    except RuntimeError as exc:  # llama_decode failures surface as RuntimeError
        raise EngineError(f"llama.cpp failed to evaluate tokens: {exc}") from exc


def _logprob(llm: Llama, token: int, top: int) -> TokenLogprob:
    import llama_cpp

    ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
    logits: np.ndarray[Any, np.dtype[np.float32]] = np.ctypeslib.as_array(
        ptr, shape=(llm.n_vocab(),))
    shifted = logits - logits.max()
    logsum = float(np.log(np.exp(shifted).sum()))

    def entry(tok: int) -> tuple[str, float, tuple[int, ...]]:
        raw = llm.detokenize([tok])
        return raw.decode("utf-8", errors="replace"), float(shifted[tok]) - logsum, tuple(raw)

    text, value, raw = entry(token)
    best = np.argpartition(-shifted, top)[:top] if top else np.array([], dtype=np.int64)
    ranked = sorted((int(t) for t in best), key=lambda t: -float(shifted[t]))
    return TokenLogprob(text, value, raw, tuple(entry(t) for t in ranked))


def context_params(context_length: int, threads: int | None) -> dict[str, Any]:
    """Keyword arguments for `llama_cpp.Llama`: the context this engine runs.

    Flash attention is what llama-server turns on by default ("auto") and llama-cpp-python
    leaves off: without it a cold 2,000-token prefill took about twice as long on CPU.
    """
    return {"n_ctx": context_length, "n_threads": threads, "n_threads_batch": threads,
            "flash_attn": True, "verbose": False}


# Snapshots of the live KV cache, for the prompt cache (engine/prompt_cache.py).
KvState = Any  # a ctypes byte array holding one sequence's state


def _encode(state: KvState, size: int) -> memoryview:
    return memoryview(state).cast("B")[:size]


def _decode_state(data: bytearray) -> KvState:
    return (ctypes.c_uint8 * len(data)).from_buffer(data)  # shares data's memory


KV_CODEC: StateCodec[KvState] = StateCodec(_encode, _decode_state)


def snapshot(llm: Llama) -> tuple[KvState, int]:
    """Copy the live cache (sequence 0) out of llama.cpp."""
    import llama_cpp

    size = llama_cpp.llama_state_seq_get_size(llm._ctx.ctx, 0)
    buffer = (ctypes.c_uint8 * size)()
    written = llama_cpp.llama_state_seq_get_data(llm._ctx.ctx, buffer, size, 0)
    return buffer, int(written)


def restore(llm: Llama, state: KvState, size: int, tokens: tuple[int, ...]) -> bool:
    """Replace the live cache with a snapshot of `tokens`; False (cache empty) on failure."""
    import llama_cpp

    llm._ctx.kv_cache_seq_rm(-1, 0, -1)
    if not llama_cpp.llama_state_seq_set_data(llm._ctx.ctx, state, size, 0):
        llm.n_tokens = 0
        return False
    llm.input_ids[: len(tokens)] = tokens
    llm.n_tokens = len(tokens)
    return True
