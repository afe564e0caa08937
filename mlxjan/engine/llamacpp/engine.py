"""The llama.cpp engine, through llama-cpp-python, on its own engine thread.

Prompts are rendered with the model's own chat template (chat/template.py), never with
llama-cpp-python's built-in chat formats. Answers run together in one continuous batch
(batch.py): each holds a KV sequence (a slot) of one llama.cpp context, new
requests join between decode steps, and each answer keeps its own sampler chain, constraint
and stop rules. Slots keep their prompts after an answer, and the prompt cache keeps
snapshots of what they held: a new prompt starts from the longest prefix either has.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from mlxjan.chat.fim import FimFormat
from mlxjan.chat.reasoning import detect_reasoning
from mlxjan.chat.template import ChatTemplate
from mlxjan.chat.tool_calls import (
    JsonSchema,
    ToolFormat,
    declared_tools,
    detect_format,
)
from mlxjan.chat.tool_stream import splitter_for
from mlxjan.engine.base import BatchStatus, EngineStatus
from mlxjan.engine.cache_store import DiskCacheConfig
from mlxjan.engine.cpu import cpu_info
from mlxjan.engine.generation import Decoder, Reasoning, answer_room, call_redo
from mlxjan.engine.llamacpp.batch import Answer, Batch
from mlxjan.engine.llamacpp.decode import (
    KV_CODEC,
    KvState,
    LlamaVocabulary,
    Restart,
    Runtime,
    context_params,
    load,
)
from mlxjan.engine.llamacpp.grammar import gbnf_for
from mlxjan.engine.llamacpp.kernels import KernelCheck, Verdict
from mlxjan.engine.prompt_cache import PromptCache
from mlxjan.engine.raw_prompt import RawPrompts
from mlxjan.engine.reasoning import plan as plan_reasoning
from mlxjan.engine.thread import EngineThread, Sink, prepared
from mlxjan.types import Constraint, Event, ForcedToolCall, GenerationRequest

if TYPE_CHECKING:
    from llama_cpp.llama_grammar import LlamaGrammar

log = logging.getLogger(__name__)
# Each slot holds a whole context's KV cache up front, and two CPU cores gain little from
# more than four sequences per step: llama.cpp runs at most this many answers at once.
MAX_SLOTS = 4


class LlamaCppEngine:
    def __init__(self, model_id: str, weights: Path, *, chat_template: str | None,
                 context_length: int, threads: int | None = None,
                 tool_grammar: bool = True, prompt_cache_bytes: int = 0,
                 disk_cache: DiskCacheConfig | None = None, max_batch: int = MAX_SLOTS,
                 kernels: KernelCheck | None = None, model_key: str = "",
                 flash_attention: bool | None = None) -> None:
        """`kernels` decides (and remembers) which kernel paths are right for these weights
        on this CPU, under `model_key` (their sha256)."""
        self.model_id = model_id
        self._kernels = kernels or KernelCheck(None)
        self._model_key = model_key or str(weights)
        self._verdict: Verdict | None = None
        self.slots = max(1, min(max_batch, MAX_SLOTS))
        self.flash_attention = context_params(
            context_length, threads, self.slots, flash_attention)["flash_attn"] is True
        disk = disk_cache.open(_state_params(context_length, self.slots, self.flash_attention)
                               ) if disk_cache else None
        self._cache: PromptCache[KvState] = PromptCache(prompt_cache_bytes, disk, KV_CODEC)
        self.tool_grammar = tool_grammar
        self.weights = weights
        self.context_length = context_length
        self.threads = threads or cpu_info().physical_cores
        self._template_source = chat_template
        self._thread = EngineThread(f"llamacpp-{model_id}", background=self._step)
        self._runtime: Runtime | None = None
        self._batch: Batch | None = None
        self._template = ChatTemplate(chat_template)
        self._reasoning_format = detect_reasoning(chat_template)
        self._add_bos = False
        self._raw: RawPrompts | None = None
        self._fim: FimFormat | None = None

    # --- lifecycle (every llama.cpp call happens on the engine thread) --------------------

    async def load(self) -> None:
        await self._thread.call(self._ensure_loaded)

    def _ensure_loaded(self) -> Batch:
        if self._batch is not None:
            return self._batch
        import llama_cpp

        verdict = self._kernels.verdict(self.weights, self._model_key)
        self._verdict = verdict
        plan = verdict.require()
        log.info("loading %s (%d slots of %d tokens, %d threads, flash attention %s, %s: %s)",
                 self.weights, self.slots, self.context_length, self.threads,
                 "on" if self.flash_attention else "off", plan.describe(), verdict.detail)
        runtime = load(self.weights, self.context_length, self.threads, self.slots, plan,
                       self.flash_attention)
        self._cache.open_disk()
        model = runtime.model
        self._add_bos = bool(llama_cpp.llama_vocab_get_add_bos(model.vocab))
        self._template = ChatTemplate(
            self._template_source,
            bos_token=_token_text(runtime, model.token_bos()),
            eos_token=_token_text(runtime, model.token_eos()),
        )
        self._raw = RawPrompts(LlamaVocabulary(runtime, self._add_bos), self.model_id)
        self._fim = self._raw.fim_format()
        self._runtime = runtime
        self._batch = Batch(runtime, self._cache, self._decoder, self._thread.outbox.flush)
        return self._batch

    async def unload(self) -> None:
        def drop() -> None:
            if self._batch is not None and self._runtime is not None:
                self._batch.persist_slots()
                self._cache.flush()
                self._batch.close()
                self._runtime.close()
            self._batch = self._runtime = self._raw = None

        await self._thread.call(drop)

    async def aclose(self) -> None:
        await self.unload()
        self._thread.close()

    def health(self) -> EngineStatus:
        batch = self._batch
        return EngineStatus(
            engine="llamacpp", model=self.model_id, loaded=batch is not None,
            context_length=self.context_length, threads=self.threads,
            flash_attention=self.flash_attention,
            kernels=self._verdict.detail if self._verdict else None,
            batch=BatchStatus(running=batch.running if batch else 0, max=self.slots,
                              waiting=batch.waiting if batch else 0,
                              tokens_per_s_by_size=batch.pace.rates() if batch else {}),
            prompt_cache=self._cache.stats())

    # --- generation ------------------------------------------------------------------------

    async def count_tokens(self, request: GenerationRequest) -> int:
        # Tokenizing only reads the vocabulary, which llama.cpp never changes after loading,
        # so it runs beside generation instead of queueing behind it on the engine thread.
        if self._runtime is None:
            await self.load()
        return await asyncio.to_thread(lambda: len(self._prompt(request)[0]))

    def stream(self, request: GenerationRequest) -> AsyncGenerator[Event, None]:
        return self._thread.open_stream(lambda sink: self._start(request, sink))

    def _step(self) -> bool:
        batch = self._batch
        if batch is None:
            return False
        try:
            return batch.step()
        except Exception as exc:  # a bug mid-step: fail the answers, keep the thread alive
            batch.fail_all(exc)
            return False

    def _prompt(self, request: GenerationRequest) -> tuple[list[int], Reasoning | None]:
        """The prompt's tokens, and how the answer's reasoning is split (engine/reasoning.py)."""
        self._ensure_loaded()
        assert self._runtime is not None and self._raw is not None
        if request.prompt is not None:
            return self._raw.tokens(request.prompt, self._fim, self.context_length,
                                    request.sampling.max_tokens), None
        text, reasoning = plan_reasoning(self._reasoning_format, request,
                                         self._template.render_request(request))
        add_bos = self._add_bos and not (
            self._template.bos_token and text.startswith(self._template.bos_token)
        )
        return self._runtime.tokenize(text, add_bos), reasoning

    def _start(self, request: GenerationRequest, sink: Sink) -> None:
        """Check and tokenize the request, then queue it for a slot in the batch."""
        answer = prepared(sink, lambda: self._answer(request, sink))
        if answer is not None:
            self._ensure_loaded().add(answer)

    def _answer(self, request: GenerationRequest, sink: Sink) -> Answer:
        prompt, reasoning = self._prompt(request)
        answer_room(len(prompt), self.context_length, request.sampling)
        fmt = detect_format(self._template_source)
        declared = declared_tools(request.tools)
        special = self._reasoning_format is not None and self._reasoning_format.special_tokens
        return Answer(prompt, request.sampling, self._grammar(request.constraint, fmt, declared),
                      self._restart(request, fmt, declared), sink,
                      tool_calls=splitter_for(request, fmt), reasoning=reasoning,
                      special=special)

    def _decoder(self, answer: Answer, cached: int) -> Decoder:
        restart = answer.restart
        return Decoder(answer.sampling, prompt_tokens=len(answer.prompt), cached_tokens=cached,
                       max_new_tokens=answer_room(len(answer.prompt), self.context_length,
                                                  answer.sampling),
                       emit=answer.sink.emit, tool_calls=answer.tool_calls,
                       reasoning=answer.reasoning,
                       redo_check=restart.check if restart is not None else None)

    def _restart(self, request: GenerationRequest, fmt: ToolFormat,
                 declared: Mapping[str, JsonSchema]) -> Restart | None:
        return call_redo(request, fmt, declared, self.tool_grammar,
                         lambda: self._grammar(ForcedToolCall(), fmt, declared))

    def _vocab(self) -> object:
        assert self._runtime is not None
        return self._runtime.model.vocab

    def _grammar(self, constraint: Constraint | None, fmt: ToolFormat,
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
        probe = llama_cpp.llama_sampler_init_grammar(self._vocab(), gbnf.encode(), b"root")
        if not probe:
            log.warning("llama.cpp rejected the grammar for %s; decoding unconstrained",
                        type(constraint).__name__)
            return None
        llama_cpp.llama_sampler_free(probe)
        return LlamaGrammar.from_string(gbnf, verbose=False)


def _state_params(context_length: int, slots: int,
                  flash_attention: bool) -> dict[str, str | int | float | bool]:
    """What a saved KV state is only valid under: the library that wrote it (its format)
    and the context parameters that shape it."""
    from importlib.metadata import version

    shaping = ("n_ctx", "n_seq_max", "kv_unified", "flash_attn", "type_k", "type_v")
    params = context_params(context_length, None, slots, flash_attention)
    return {"engine": "llamacpp", "llama_cpp_python": version("llama-cpp-python"),
            **{k: v for k, v in params.items() if k in shaping}}


def _token_text(runtime: Runtime, token: int) -> str:
    if token < 0:
        return ""
    return runtime.piece(token, special=True).decode("utf-8", errors="replace")
