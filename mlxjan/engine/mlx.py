"""The MLX engine, through mlx-lm, on its own engine thread.

One dedicated thread loads the model and makes every MLX call (MLX streams are
thread-local). Prompts are rendered with the model's chat template in the same sandbox as
the llama.cpp engine, tokens stream through the shared decode loop (stop strings, UTF-8,
tool-call splitting, usage), and the KV cache of the last request is kept and trimmed to
the prefix the next prompt shares, with older prefixes kept as snapshots in the prompt cache.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from mlxjan.chat.guidance import lark_for
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
from mlxjan.engine.generation import decode_loop
from mlxjan.engine.mlx_decode import LiveCache, MlxRestart, PrefillCancelled, Runner, generate
from mlxjan.engine.mlx_guidance import Guide
from mlxjan.engine.mlx_vocab import Vocab, token_pieces
from mlxjan.engine.prompt_cache import PromptCache, common_prefix
from mlxjan.engine.worker import Emit, EngineThread
from mlxjan.errors import ContextLengthExceededError, EngineError

log = logging.getLogger(__name__)
# As in the llama.cpp engine: shorter prefixes are cheaper to recompute than to snapshot.
MIN_SNAPSHOT_TOKENS = 512
MIN_REUSE_GAIN = 256


@dataclass
class _Loaded:
    runner: Runner
    tokenizer: Any  # mlx-lm's TokenizerWrapper around a Hugging Face tokenizer
    template: ChatTemplate
    template_source: str | None
    vocab: Vocab
    live: LiveCache
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
                 tool_grammar: bool = True, prompt_cache_bytes: int = 0) -> None:
        """`model_dir` is called on the engine thread at load time: it may convert first."""
        self.model_id = model_id
        self.context_length = context_length
        self.tool_grammar = tool_grammar
        self._model_dir = model_dir
        self._template_source = chat_template
        self._cache: PromptCache[list[Any]] = PromptCache(prompt_cache_bytes)
        self._thread = EngineThread(f"mlx-{model_id}")
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
            from mlx_lm.models.cache import make_prompt_cache

            model, tokenizer = mlx_load(str(path))[:2]
        except ImportError as exc:
            raise EngineError(f"the MLX engine needs mlx and mlx-lm installed: {exc}") from exc
        except (OSError, ValueError, KeyError) as exc:
            raise EngineError(f"failed to load model '{self.model_id}' with MLX: {exc}") from exc
        _set_wired_limit(model)
        hf = tokenizer._tokenizer
        source = self._template_source or getattr(hf, "chat_template", None)
        import mlx.core as mx

        self._loaded = _Loaded(
            runner=Runner(model, mx.new_stream(mx.default_device())), tokenizer=tokenizer,
            template_source=source,
            template=ChatTemplate(source, bos_token=hf.bos_token or "",
                                  eos_token=hf.eos_token or ""),
            vocab=Vocab(token_pieces(hf), frozenset(tokenizer.eos_token_ids)),
            live=LiveCache(make_prompt_cache(model)),
        )
        return self._loaded

    async def unload(self) -> None:
        def drop() -> None:
            if self._loaded is not None:
                self._loaded = None
                _release_wired_limit()

        await self._thread.call(drop)

    async def aclose(self) -> None:
        await self.unload()
        # MLX needs the streams a thread made destroyed by that thread before it ends;
        # left to process exit, their teardown aborts the process (exit 134).
        await self._thread.call(_clear_streams)
        self._thread.close()

    def health(self) -> dict[str, object]:
        return {"engine": "mlx", "model": self.model_id, "loaded": self._loaded is not None,
                "context_length": self.context_length,
                "prompt_cache": asdict(self._cache.stats())}

    # --- generation ------------------------------------------------------------------------

    async def count_tokens(self, request: GenerationRequest) -> int:
        loaded = await self._thread.call(self._ensure_loaded) if self._loaded is None \
            else self._loaded
        # Tokenizing is pure Python/Rust work on the tokenizer, no MLX call.
        return await asyncio.to_thread(lambda: len(_prompt_tokens(loaded, request)))

    def stream(self, request: GenerationRequest) -> AsyncGenerator[Event, None]:
        return self._thread.stream(lambda emit, cancelled:
                                   self._generate(request, emit, cancelled))

    def _generate(self, request: GenerationRequest, emit: Emit,
                  cancelled: threading.Event) -> None:
        loaded = self._ensure_loaded()
        prompt = _prompt_tokens(loaded, request)
        room = self.context_length - len(prompt)
        if room < 1:
            raise ContextLengthExceededError(len(prompt), self.context_length)
        cached = self._reuse(loaded, prompt)
        emit(Started(len(prompt), cached))
        fmt = detect_format(loaded.template_source)
        declared = declared_tools(request.tools)
        sampling = request.sampling
        matcher = (self._matcher(loaded, request.constraint, fmt, declared)
                   if request.constraint is not None else None)
        tokens = generate(loaded.runner, loaded.live, prompt, sampling, loaded.vocab, cancelled,
                          matcher, self._restart(loaded, request, fmt, declared))
        try:
            decode_loop(tokens, sampling, prompt_tokens=len(prompt), cached_tokens=cached,
                        max_new_tokens=min(sampling.max_tokens or room, room), emit=emit,
                        cancelled=cancelled,
                        tool_calls=splitter_for(request, fmt))
        except PrefillCancelled:
            log.info("%s: prefill cancelled, the client left", self.model_id)

    def _restart(self, loaded: _Loaded, request: GenerationRequest, fmt: ToolFormat,
                 declared: Mapping[str, JsonSchema]) -> MlxRestart | None:
        """As on llama.cpp: a call begun in free text is redone greedily under a grammar."""
        if not declared or request.constraint is not None or not self.tool_grammar:
            return None
        if self._matcher(loaded, ForcedToolCall(), fmt, declared) is None:
            return None
        return MlxRestart(lambda text: call_attempt(text, fmt),
                          lambda: self._matcher(loaded, ForcedToolCall(), fmt, declared),
                          replace(request.sampling, temperature=0.0))

    @staticmethod
    def _matcher(loaded: _Loaded, constraint: Constraint, fmt: ToolFormat,
                 declared: Mapping[str, JsonSchema]) -> Any | None:
        guide = loaded.guidance()
        return guide.matcher(lark_for(constraint, fmt, declared, guide.single_token))

    def _reuse(self, loaded: _Loaded, prompt: list[int]) -> int:
        """Make the live cache hold the longest cached prefix of `prompt`; return its length.

        The last prompt token is always evaluated again, for fresh logits.
        """
        from mlx_lm.models.cache import can_trim_prompt_cache, make_prompt_cache

        live = loaded.live
        wanted = prompt[:-1]
        keep = common_prefix(live.tokens, wanted)
        entry, shared = self._cache.best(wanted)
        better = entry is not None and shared >= keep + MIN_REUSE_GAIN
        overwritten = len(live.tokens) - keep >= MIN_REUSE_GAIN or better
        if len(live.tokens) >= MIN_SNAPSHOT_TOKENS and overwritten \
                and not self._cache.holds(live.tokens):
            self._snapshot(live)
        if entry is not None and better:
            live.layers, live.tokens = copy.deepcopy(entry.state), list(entry.tokens)
            self._cache.take(entry)
            keep = shared
            log.info("%s: restored a cached prefix of %d tokens", self.model_id, shared)
        elif len(prompt) >= MIN_SNAPSHOT_TOKENS and keep < MIN_REUSE_GAIN:
            self._cache.miss()
        excess = live.size - keep
        if excess > 0 and not can_trim_prompt_cache(live.layers):
            # e.g. a sliding window that has rotated: start the prompt over
            live.layers, keep = make_prompt_cache(loaded.runner.model), 0
        elif excess > 0:
            from mlx_lm.models.cache import trim_prompt_cache

            trim_prompt_cache(live.layers, excess)
        live.tokens = live.tokens[:keep]
        return keep

    def _snapshot(self, live: LiveCache) -> None:
        layers = copy.deepcopy(live.layers)
        size = sum(int(getattr(layer, "nbytes", 0)) for layer in layers)
        self._cache.put(live.tokens[: live.size], layers, size)


def _prompt_tokens(loaded: _Loaded, request: GenerationRequest) -> list[int]:
    text = loaded.template.render(request.messages, request.tools)
    bos = loaded.template.bos_token
    # The tokenizer adds BOS itself where the model wants one, unless the template did.
    tokens: list[int] = loaded.tokenizer._tokenizer.encode(
        text, add_special_tokens=not (bos and text.startswith(bos)))
    return tokens


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
