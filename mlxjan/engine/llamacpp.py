"""The llama.cpp engine, through llama-cpp-python, on its own engine thread.

Prompts are rendered with the model's own chat template (chat/template.py), never with
llama-cpp-python's built-in chat formats. The token loop (llamacpp_decode.py) reuses the
longest prefix still in the KV cache from the previous request (reported as cached),
prefills in cancellable chunks and samples with this server's own sampler chain.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import AsyncGenerator, Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

from mlxjan.chat.constraints import gbnf_for
from mlxjan.chat.template import ChatTemplate
from mlxjan.chat.tool_calls import (
    JsonSchema,
    ToolFormat,
    call_attempt,
    declared_tools,
    detect_format,
)
from mlxjan.chat.tool_stream import splitter_for
from mlxjan.engine.base import Constraint, Event, ForcedToolCall, GenerationRequest, Started
from mlxjan.engine.cache_store import DiskCacheConfig
from mlxjan.engine.generation import decode_loop
from mlxjan.engine.llamacpp_decode import (
    KV_CODEC,
    KvState,
    Restart,
    context_params,
    prefill,
    restore,
    reuse_prefix,
    sample,
    snapshot,
)
from mlxjan.engine.prompt_cache import PromptCache, common_prefix
from mlxjan.engine.worker import Emit, EngineThread
from mlxjan.errors import ContextLengthExceededError, EngineError

if TYPE_CHECKING:
    from llama_cpp import Llama
    from llama_cpp.llama_grammar import LlamaGrammar

log = logging.getLogger(__name__)
_RANDOM_SEED = 0xFFFFFFFF  # llama.cpp's "pick a random seed"
# Shorter prompts are cheaper to recompute than to snapshot; smaller gains not worth a restore.
MIN_SNAPSHOT_TOKENS = 512
MIN_REUSE_GAIN = 256
# A request that computed this many new prompt tokens leaves its cache on disk right away
# (a copy here, the write in the background): it survives a crash, not only a clean stop.
PERSIST_AFTER_TOKENS = 1024


class LlamaCppEngine:
    def __init__(self, model_id: str, weights: Path, *, chat_template: str | None,
                 context_length: int, threads: int | None = None,
                 tool_grammar: bool = True, prompt_cache_bytes: int = 0,
                 disk_cache: DiskCacheConfig | None = None) -> None:
        self.model_id = model_id
        disk = disk_cache.open(_state_params(context_length)) if disk_cache else None
        self._cache: PromptCache[KvState] = PromptCache(prompt_cache_bytes, disk, KV_CODEC)
        self.tool_grammar = tool_grammar
        self.weights = weights
        self.context_length = context_length
        self.threads = threads
        self._template_source = chat_template
        self._thread = EngineThread(f"llamacpp-{model_id}")
        self._llm: Llama | None = None
        self._template = ChatTemplate(chat_template)
        self._add_bos = False

    # --- lifecycle (every llama.cpp call happens on the engine thread) --------------------

    async def load(self) -> None:
        await self._thread.call(self._ensure_loaded)

    def _ensure_loaded(self) -> Llama:
        if self._llm is not None:
            return self._llm
        import llama_cpp

        log.info("loading %s (n_ctx=%d)", self.weights, self.context_length)
        try:
            llm = llama_cpp.Llama(str(self.weights), **context_params(
                self.context_length, self.threads))
        except (ValueError, RuntimeError) as exc:
            raise EngineError(f"failed to load model '{self.model_id}': {exc}") from exc
        self._cache.open_disk()
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
                self._persist_live(self._llm)
                self._llm.close()
                self._llm = None

        await self._thread.call(drop)

    async def aclose(self) -> None:
        await self.unload()
        self._thread.close()

    def health(self) -> dict[str, object]:
        return {"engine": "llamacpp", "model": self.model_id, "loaded": self._llm is not None,
                "context_length": self.context_length,
                "prompt_cache": asdict(self._cache.stats())}

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
        sampling = request.sampling
        self._switch_cache(llm, prompt)
        cached = reuse_prefix(llm, prompt, batch_aligned=sampling.seed is not None)
        emit(Started(len(prompt), cached))
        if not prefill(llm, prompt[cached:], cancelled):
            return
        seed = _RANDOM_SEED if sampling.seed is None else sampling.seed % _RANDOM_SEED
        llm.set_seed(seed if seed != _RANDOM_SEED else random.getrandbits(31))
        fmt = detect_format(self._template_source)
        declared = declared_tools(request.tools)
        tokens = sample(llm, prompt, sampling, self._grammar(llm, request.constraint, fmt,
                                                             declared),
                        self._restart(llm, request, fmt, declared))
        decode_loop(tokens, sampling, prompt_tokens=len(prompt), cached_tokens=cached,
                    max_new_tokens=min(sampling.max_tokens or room, room), emit=emit,
                    cancelled=cancelled,
                    tool_calls=splitter_for(request, fmt))
        if (self._cache.persisting and len(prompt) - cached >= PERSIST_AFTER_TOKENS
                and not cancelled.is_set()):
            self._cache.persist(llm.input_ids[: llm.n_tokens].tolist(), *snapshot(llm))

    def _switch_cache(self, llm: Llama, prompt: list[int]) -> None:
        """Keep the live cache as a snapshot before a different prompt overwrites it, and
        restore the snapshot that shares the most with `prompt` when it beats the live one."""
        live = llm.input_ids[: llm.n_tokens].tolist()
        live_shared = common_prefix(live, prompt)
        entry, shared = self._cache.lookup(prompt, at_least=live_shared + MIN_REUSE_GAIN)
        better = entry is not None and shared >= live_shared + MIN_REUSE_GAIN
        overwritten = len(live) - live_shared >= MIN_REUSE_GAIN or better
        if len(live) >= MIN_SNAPSHOT_TOKENS and overwritten and not self._cache.holds(live):
            self._cache.put(live, *snapshot(llm))
        if entry is not None and better and restore(llm, entry.state, entry.size, entry.tokens):
            self._cache.take(entry)
            log.info("%s: restored a cached prefix of %d tokens (from %s)", self.model_id,
                     shared, entry.source)
        elif len(prompt) >= MIN_SNAPSHOT_TOKENS and live_shared < MIN_REUSE_GAIN:
            self._cache.miss()

    def _persist_live(self, llm: Llama) -> None:
        """Write the live cache to disk (unless a file covers it) and wait for the writes:
        at unload and shutdown, when nothing else waits for the engine."""
        live = llm.input_ids[: llm.n_tokens].tolist()
        if self._cache.persisting and len(live) >= MIN_SNAPSHOT_TOKENS:
            self._cache.persist(live, *snapshot(llm))
        self._cache.flush()

    def _restart(self, llm: Llama, request: GenerationRequest, fmt: ToolFormat,
                 declared: Mapping[str, JsonSchema]) -> Restart | None:
        """With tools on offer and no constraint, a call begun in free text is redone under
        a grammar, so it comes out valid, in the family's native syntax, and greedily: the
        arguments are data, where sampling noise only adds mistakes."""
        if not declared or request.constraint is not None or not self.tool_grammar:
            return None
        grammar = self._grammar(llm, ForcedToolCall(), fmt, declared)
        if grammar is None:
            return None
        return Restart(lambda text: call_attempt(text, fmt), grammar,
                       replace(request.sampling, temperature=0.0))

    @staticmethod
    def _grammar(llm: Llama, constraint: Constraint | None, fmt: ToolFormat,
                 declared: Mapping[str, JsonSchema]) -> LlamaGrammar | None:
        if constraint is None:
            return None
        gbnf = gbnf_for(constraint, fmt, declared)
        if gbnf is None:
            return None
        import llama_cpp
        from llama_cpp.llama_grammar import LlamaGrammar

        # llama-cpp-python adds a grammar sampler without checking it was built, and a
        # grammar llama.cpp cannot parse crashes the process: try it on this vocabulary first.
        probe = llama_cpp.llama_sampler_init_grammar(llm._model.vocab, gbnf.encode(), b"root")
        if not probe:
            log.warning("llama.cpp rejected the grammar for %s; decoding unconstrained",
                        type(constraint).__name__)
            return None
        llama_cpp.llama_sampler_free(probe)
        return LlamaGrammar.from_string(gbnf, verbose=False)


def _state_params(context_length: int) -> dict[str, str | int | float | bool]:
    """What a saved KV state is only valid under: the library that wrote it (its format)
    and the context parameters that shape it."""
    from importlib.metadata import version

    shaping = ("n_ctx", "flash_attn", "type_k", "type_v")
    return {"engine": "llamacpp", "llama_cpp_python": version("llama-cpp-python"),
            **{k: v for k, v in context_params(context_length, None).items() if k in shaping}}


def _token_text(llm: Llama, token: int) -> str:
    if token < 0:
        return ""
    return llm.detokenize([token], special=True).decode("utf-8", errors="replace")


