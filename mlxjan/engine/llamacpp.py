"""The llama.cpp engine, through llama-cpp-python, on its own engine thread.

Prompts are rendered with the model's own chat template (chat/template.py), never with
llama-cpp-python's built-in chat formats; tokens come from `Llama.generate`, which also reuses
the longest prefix still in the KV cache from the previous request (reported as cached).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import AsyncGenerator, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlxjan.chat.constraints import gbnf_for
from mlxjan.chat.template import ChatTemplate
from mlxjan.chat.tool_calls import JsonSchema, ToolFormat, declared_tools, detect_format
from mlxjan.chat.tool_stream import ToolCallSplitter
from mlxjan.engine.base import Event, GenerationRequest, SamplingParams, Started, TokenLogprob
from mlxjan.engine.generation import SampledToken, decode_loop
from mlxjan.engine.worker import Emit, EngineThread
from mlxjan.errors import ContextLengthExceededError, EngineError

if TYPE_CHECKING:
    from llama_cpp import Llama
    from llama_cpp.llama_grammar import LlamaGrammar

log = logging.getLogger(__name__)
_RANDOM_SEED = 0xFFFFFFFF  # llama.cpp's "pick a random seed"


class LlamaCppEngine:
    def __init__(self, model_id: str, weights: Path, *, chat_template: str | None,
                 context_length: int, threads: int | None = None) -> None:
        self.model_id = model_id
        self.weights = weights
        self.context_length = context_length
        self.threads = threads
        self._template_source = chat_template
        self._thread = EngineThread(f"llamacpp-{model_id}")
        self._llm: Llama | None = None
        self._template = ChatTemplate(chat_template)
        self._add_bos = False
        self._load_lock = threading.Lock()

    # --- lifecycle (every llama.cpp call happens on the engine thread) --------------------

    async def load(self) -> None:
        await self._thread.call(self._ensure_loaded)

    def _ensure_loaded(self) -> Llama:
        if self._llm is not None:
            return self._llm
        import llama_cpp

        log.info("loading %s (n_ctx=%d)", self.weights, self.context_length)
        try:
            llm = llama_cpp.Llama(str(self.weights), n_ctx=self.context_length,
                                  n_threads=self.threads, n_threads_batch=self.threads,
                                  verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise EngineError(f"failed to load model '{self.model_id}': {exc}") from exc
        vocab = llm._model.vocab
        self._add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
        self._template = ChatTemplate(
            self._template_source,
            bos_token=_token_text(llm, llm.token_bos()),
            eos_token=_token_text(llm, llm.token_eos()),
        )
        self._llm = llm
        return llm

    async def unload(self) -> None:
        def drop() -> None:
            if self._llm is not None:
                self._llm.close()
                self._llm = None

        await self._thread.call(drop)

    async def aclose(self) -> None:
        await self.unload()
        self._thread.close()

    def health(self) -> dict[str, object]:
        return {"engine": "llamacpp", "model": self.model_id, "loaded": self._llm is not None,
                "context_length": self.context_length}

    # --- generation ------------------------------------------------------------------------

    async def count_tokens(self, request: GenerationRequest) -> int:
        # Tokenizing only reads the vocabulary, which llama.cpp never changes after loading,
        # so it runs beside generation instead of queueing behind it on the engine thread.
        if self._llm is None:
            await self.load()
        return await asyncio.to_thread(lambda: len(self._prompt_tokens(request)))

    def stream(self, request: GenerationRequest) -> AsyncGenerator[Event, None]:
        return self._thread.stream(lambda emit, cancelled:
                                   self._generate(request, emit, cancelled))

    def _prompt_tokens(self, request: GenerationRequest) -> list[int]:
        llm = self._ensure_loaded()
        text = self._template.render(request.messages, request.tools)
        add_bos = self._add_bos and not (
            self._template.bos_token and text.startswith(self._template.bos_token)
        )
        return llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def _generate(self, request: GenerationRequest, emit: Emit,
                  cancelled: threading.Event) -> None:
        llm = self._ensure_loaded()
        prompt = self._prompt_tokens(request)
        room = self.context_length - len(prompt)
        if room < 1:
            raise ContextLengthExceededError(len(prompt), self.context_length)
        cached = _common_prefix(llm, prompt)
        if request.sampling.seed is not None:
            cached = _align_cache(llm, cached)
        emit(Started(len(prompt), cached))
        sampling = request.sampling
        limit = min(sampling.max_tokens or room, room)
        fmt = detect_format(self._template_source)
        declared = declared_tools(request.tools)
        grammar = self._grammar(request, fmt, declared)
        splitter = ToolCallSplitter(fmt, declared) if declared else None
        decode_loop(self._sample(llm, prompt, sampling, grammar), sampling,
                    prompt_tokens=len(prompt), cached_tokens=cached, max_new_tokens=limit,
                    emit=emit, cancelled=cancelled, tool_calls=splitter)

    @staticmethod
    def _grammar(request: GenerationRequest, fmt: ToolFormat,
                 declared: Mapping[str, JsonSchema]) -> LlamaGrammar | None:
        if request.constraint is None:
            return None
        gbnf = gbnf_for(request.constraint, fmt, declared)
        if gbnf is None:
            return None
        from llama_cpp.llama_grammar import LlamaGrammar

        try:
            return LlamaGrammar.from_string(gbnf, verbose=False)
        except ValueError as exc:  # llama.cpp refused the grammar text
            log.warning("llama.cpp rejected the grammar (%s); decoding unconstrained", exc)
            return None

    def _sample(self, llm: Llama, prompt: list[int], sampling: SamplingParams,
                grammar: LlamaGrammar | None = None) -> Iterator[SampledToken]:
        import llama_cpp

        seed = _RANDOM_SEED if sampling.seed is None else sampling.seed % _RANDOM_SEED
        llm.set_seed(seed if seed != _RANDOM_SEED else random.getrandbits(31))
        vocab = llm._model.vocab
        try:
            for token in llm.generate(
                prompt, top_k=sampling.top_k, top_p=sampling.top_p, min_p=sampling.min_p,
                temp=sampling.temperature, repeat_penalty=sampling.repetition_penalty,
                frequency_penalty=sampling.frequency_penalty,
                presence_penalty=sampling.presence_penalty, grammar=grammar,
            ):
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    yield SampledToken(b"", end_of_generation=True)
                    return
                piece = llm.detokenize([token])
                logprob = _logprob(llm, token, sampling.top_logprobs) if sampling.logprobs \
                    else None
                yield SampledToken(piece, logprob=logprob)
        except RuntimeError as exc:  # llama_decode failures surface as RuntimeError
            raise EngineError(f"llama.cpp failed while generating: {exc}") from exc


def _common_prefix(llm: Llama, prompt: list[int]) -> int:
    """How many prompt tokens `Llama.generate` will reuse from the KV cache."""
    n = 0
    for a, b in zip(llm._input_ids[: llm.n_tokens], prompt, strict=False):
        if a != b:
            break
        n += 1
    # generate() re-evaluates the last token when the whole prompt is cached.
    return min(n, len(prompt) - 1)


def _align_cache(llm: Llama, reusable: int) -> int:
    """Keep only a batch-aligned part of the cached prefix, for reproducible seeded output.

    Logits differ slightly with the batch shape that computed them, and sampling at
    temperature > 0 amplifies that: the same seed gave different text depending on what was
    cached. Re-evaluating from a multiple of n_batch makes the final prompt batch, and so the
    logits, the same as in a cold run.
    """
    keep = reusable // llm.n_batch * llm.n_batch
    if keep < llm.n_tokens:
        llm._ctx.kv_cache_seq_rm(-1, keep, -1)
        llm.n_tokens = keep
    return keep


def _token_text(llm: Llama, token: int) -> str:
    if token < 0:
        return ""
    return llm.detokenize([token], special=True).decode("utf-8", errors="replace")


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
