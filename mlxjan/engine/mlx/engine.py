"""The MLX engine, through mlx-lm, on its own engine thread.

One dedicated thread loads the model and makes every MLX call (MLX streams are
thread-local). Prompts are rendered with the model's chat template in the same sandbox as
the llama.cpp engine. Answers run together in one continuous batch (batch.py): a new
request joins between decode steps, each answer keeps its own sampling, constraint and stop
rules (the shared Decoder), and finished answers leave their KV cache in the prompt cache.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlxjan.chat.fim import FimFormat
from mlxjan.chat.mlx_parsers import load_parser
from mlxjan.chat.reasoning import ReasoningFormat, detect_reasoning
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
from mlxjan.engine.mlx.batch import Answer, Batch
from mlxjan.engine.mlx.check import check_model, probe_tokens
from mlxjan.engine.mlx.decode import MlxRestart, Runner
from mlxjan.engine.mlx.guidance import Guide
from mlxjan.engine.mlx.lark import lark_for
from mlxjan.engine.mlx.state import MLX_CODEC, CacheLayers
from mlxjan.engine.mlx.vocab import HfVocabulary, Vocab, token_pieces
from mlxjan.engine.prompt_cache import PromptCache
from mlxjan.engine.raw_prompt import RawPrompts
from mlxjan.engine.reasoning import plan as plan_reasoning
from mlxjan.engine.selfcheck import Remembered
from mlxjan.engine.thread import EngineThread, Sink, prepared
from mlxjan.errors import EngineError, ModelSelfCheckError
from mlxjan.types import Constraint, Event, ForcedToolCall, GenerationRequest, Started

log = logging.getLogger(__name__)


@dataclass
class _Loaded:
    runner: Runner
    tokenizer: Any  # mlx-lm's TokenizerWrapper around a Hugging Face tokenizer
    template: ChatTemplate
    template_source: str | None
    tool_format: ToolFormat
    reasoning_format: ReasoningFormat | None
    vocab: Vocab
    batch: Batch
    raw: RawPrompts  # completions' prompts (raw text, fill-in-the-middle)
    fim: FimFormat | None
    context_length: int
    guide: Guide | None = None  # built on the first constrained request

    def guidance(self) -> Guide:
        if self.guide is None:
            hf = self.tokenizer._tokenizer
            args = getattr(self.runner.model, "args", None)
            size = int(getattr(args, "vocab_size", 0)) or len(hf)
            self.guide = Guide(hf, size, hf.eos_token_id)
        return self.guide


class MlxEngine:
    def __init__(self, model_id: str, model_dir: Callable[[], Path], *,
                 chat_template: str | None, context_length: int,
                 tool_grammar: bool = True, prompt_cache_bytes: int = 0,
                 max_batch: int = 8, disk_cache: DiskCacheConfig | None = None,
                 self_checks: Remembered | None = None, model_key: str = "") -> None:
        """`model_dir` is called on the engine thread at load time: it may convert first.
        `self_checks` remembers load-time self-checks, under `model_key` (the model's sha256)."""
        self.model_id = model_id
        self._checks = self_checks or Remembered(None)
        self._model_key = model_key or model_id
        self.context_length = context_length
        self.tool_grammar = tool_grammar
        self._model_dir = model_dir
        self._template_source = chat_template
        self.max_batch = max_batch
        disk = disk_cache.open(_state_params()) if disk_cache else None
        self._cache: PromptCache[CacheLayers] = PromptCache(prompt_cache_bytes, disk, MLX_CODEC)
        self._thread = EngineThread(f"mlx-{model_id}", background=self._step)
        self._loaded: _Loaded | None = None

    # --- lifecycle (every MLX call happens on the engine thread) ---------------------------

    async def load(self) -> None:
        await self._thread.call(self._ensure_loaded)

    def _ensure_loaded(self) -> _Loaded:
        if self._loaded is not None:
            return self._loaded
        path = self._model_dir()
        log.info("loading %s with MLX", path)
        try:
            from mlx_lm import load as mlx_load
            model, tokenizer = mlx_load(str(path))[:2]
        except ImportError as exc:
            raise EngineError(f"the MLX engine needs mlx and mlx-lm installed: {exc}") from exc
        except (OSError, ValueError, KeyError) as exc:
            raise EngineError(f"failed to load model '{self.model_id}' with MLX: {exc}") from exc
        _set_wired_limit(model)
        self._cache.open_disk()
        hf = tokenizer._tokenizer
        source = self._template_source or getattr(hf, "chat_template", None)
        import mlx.core as mx

        runner = Runner(model, mx.new_stream(mx.default_device()))
        self._self_check(runner, tokenizer)
        reasoning = detect_reasoning(source, vocab=hf.get_vocab())
        special = reasoning is not None and reasoning.special_tokens
        vocab = Vocab(token_pieces(hf, special), frozenset(tokenizer.eos_token_ids))
        raw = RawPrompts(HfVocabulary(hf), self.model_id)
        self._loaded = _Loaded(
            raw=raw, fim=raw.fim_format(), context_length=self.context_length,
            runner=runner, tokenizer=tokenizer, vocab=vocab,
            template_source=source, tool_format=_tool_format(source, hf),
            reasoning_format=reasoning,
            template=ChatTemplate(source, bos_token=hf.bos_token or "",
                                  eos_token=hf.eos_token or ""),
            batch=Batch(runner, vocab, self._cache, self.max_batch,
                        encode=lambda text: list(hf.encode(text, add_special_tokens=False))),
        )
        return self._loaded

    def _self_check(self, runner: Runner, tokenizer: Any) -> None:
        """Refuse a model whose MLX paths disagree on the probe text (check.py)."""
        import mlx.core as mx

        key = ["mlx", cpu_info().fingerprint(), str(_state_params()["mlx"]),
               str(mx.default_device()), self._model_key]
        verdict = self._checks.get(key)
        if verdict is None:
            verdict = {"refused": check_model(runner, probe_tokens(tokenizer))}
            self._checks.put(key, verdict)
            log.info("%s: self-check %s", self.model_id,
                     f"failed: {verdict['refused']}" if verdict["refused"] else "passed")
        if verdict.get("refused"):
            raise ModelSelfCheckError(
                f"'{self.model_id}' computes wrong answers with MLX on this machine "
                f"({verdict['refused']}). Serve it with `--engine llamacpp`, or update mlx.")

    async def unload(self) -> None:
        def drop() -> None:
            if self._loaded is not None:
                self._loaded.batch.close()
                self._cache.flush()
                self._loaded = None
                _release_wired_limit()

        await self._thread.call(drop)

    async def aclose(self) -> None:
        await self.unload()
        # MLX needs the streams a thread made destroyed by that thread before it ends;
        # left to process exit, their teardown aborts the process (exit 134).
        await self._thread.call(_clear_streams)
        self._thread.close()

    def health(self) -> EngineStatus:
        loaded = self._loaded
        return EngineStatus(
            engine="mlx", model=self.model_id, loaded=loaded is not None,
            context_length=self.context_length,
            batch=BatchStatus(running=loaded.batch.running if loaded else 0,
                              max=self.max_batch),
            prompt_cache=self._cache.stats())

    # --- generation ------------------------------------------------------------------------

    async def count_tokens(self, request: GenerationRequest) -> int:
        loaded = await self._thread.call(self._ensure_loaded) if self._loaded is None \
            else self._loaded
        # Tokenizing is pure Python/Rust work on the tokenizer, no MLX call.
        return await asyncio.to_thread(lambda: len(_prompt(loaded, request)[0]))

    def stream(self, request: GenerationRequest) -> AsyncGenerator[Event, None]:
        return self._thread.open_stream(lambda sink: self._start(request, sink))

    def _step(self) -> bool:
        return self._loaded is not None and self._loaded.batch.step()

    def _start(self, request: GenerationRequest, sink: Sink) -> None:
        """Check and tokenize the request, then add it to the running batch."""
        checked = prepared(sink, lambda: self._checked(request))
        if checked is None:
            return
        loaded, prompt, reasoning, room, matcher, restart = checked
        layers, cached = loaded.batch.reuse(prompt)
        sink.emit(Started(len(prompt), cached))
        decoder = Decoder(request.sampling, prompt_tokens=len(prompt), cached_tokens=cached,
                          max_new_tokens=room, emit=sink.emit,
                          tool_calls=splitter_for(request, loaded.tool_format),
                          reasoning=reasoning,
                          redo_check=restart.check if restart is not None else None)
        loaded.batch.add(Answer(prompt, request.sampling, decoder, sink, matcher, restart),
                         layers, cached)

    def _checked(self, request: GenerationRequest) -> tuple[
            _Loaded, list[int], Reasoning | None, int, Any | None, MlxRestart | None]:
        """The loaded model, the prompt and its reasoning, the answer's room, its matcher
        and its redo."""
        loaded = self._ensure_loaded()
        prompt, reasoning = _prompt(loaded, request)
        room = answer_room(len(prompt), self.context_length, request.sampling)
        fmt = loaded.tool_format
        declared = declared_tools(request.tools)
        matcher = (self._matcher(loaded, request.constraint, fmt, declared)
                   if request.constraint is not None else None)
        return (loaded, prompt, reasoning, room, matcher,
                self._restart(loaded, request, fmt, declared))

    def _restart(self, loaded: _Loaded, request: GenerationRequest, fmt: ToolFormat,
                 declared: Mapping[str, JsonSchema]) -> MlxRestart | None:
        def fresh() -> Any | None:  # each redo gets a matcher of its own
            return self._matcher(loaded, ForcedToolCall(), fmt, declared)

        return call_redo(request, fmt, declared, self.tool_grammar and fmt.json_body,
                         lambda: fresh if fresh() is not None else None)

    @staticmethod
    def _matcher(loaded: _Loaded, constraint: Constraint, fmt: ToolFormat,
                 declared: Mapping[str, JsonSchema]) -> Any | None:
        if isinstance(constraint, ForcedToolCall) and not fmt.json_body:
            log.info("%s tool calls are not JSON; no grammar forces them, decoding "
                     "unconstrained", fmt.name)
            return None
        guide = loaded.guidance()
        return guide.matcher(lark_for(constraint, fmt, declared, guide.single_token))


def _tool_format(template: str | None, hf_tokenizer: Any) -> ToolFormat:
    """The model's tool-call family, from its template or vocabulary; a family parsed by
    mlx-lm has its parser imported now, not in the middle of an answer."""
    fmt = detect_format(template, vocab=hf_tokenizer.get_vocab())
    if fmt.parser is not None:
        load_parser(fmt.parser)
    return fmt


def _state_params() -> dict[str, str | int | float | bool]:
    """What a saved KV state depends on besides the model file: the library versions."""
    from importlib.metadata import version

    return {"engine": "mlx", "mlx": version("mlx"), "mlx_lm": version("mlx-lm")}


def _prompt(loaded: _Loaded, request: GenerationRequest) -> tuple[list[int], Reasoning | None]:
    """The prompt's tokens, and how the answer's reasoning is split (engine/reasoning.py)."""
    if request.prompt is not None:
        return loaded.raw.tokens(request.prompt, loaded.fim, loaded.context_length,
                                 request.sampling.max_tokens), None
    text, reasoning = plan_reasoning(loaded.reasoning_format, request,
                                     loaded.template.render_request(request))
    bos = loaded.template.bos_token
    # The tokenizer adds BOS itself where the model wants one, unless the template did.
    tokens: list[int] = loaded.tokenizer._tokenizer.encode(
        text, add_special_tokens=not (bos and text.startswith(bos)))
    return tokens, reasoning


def _set_wired_limit(model: Any) -> None:
    """On Metal, keep the weights wired in memory (the mlx-lm recipe), within the device's
    recommended working set."""
    import mlx.core as mx
    from mlx.utils import tree_reduce

    if not mx.metal.is_available():
        return
    weights = tree_reduce(  # type: ignore[no-untyped-call]
        lambda acc, x: acc + x.nbytes if isinstance(x, mx.array) else acc, model, 0)
    limit = int(mx.device_info()["max_recommended_working_set_size"])
    mx.set_wired_limit(min(int(weights), limit))


def _clear_streams() -> None:
    import mlx.core as mx

    mx.clear_streams()


def _release_wired_limit() -> None:
    import mlx.core as mx

    if mx.metal.is_available():
        mx.set_wired_limit(0)
        mx.clear_cache()
