"""A scripted engine for API tests: real event flow and stop rules, no model.

A reply is produced by `script(request)` and split into one "token" per word (with its
leading space), or per character when `char_tokens` is set, then runs through the same
decode loop as the real engines, on its own engine thread. With `reasoning`, that text comes
first as ReasoningDelta events (split the same way), whatever the request asks, so tests see
what each protocol does with reasoning; those pieces are not counted in the usage.
With `kind="embedding"` it embeds instead (fake_embeddings.py) and refuses chat, as a real
embedding model does.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from pathlib import Path

from mlxjan.chat.tool_calls import HERMES, ToolFormat
from mlxjan.chat.tool_stream import splitter_for
from mlxjan.engine.base import EngineStatus
from mlxjan.engine.generation import SampledToken, answer_room, decode_loop
from mlxjan.engine.protocol import EngineSpec
from mlxjan.engine.thread import Emit, EngineThread
from mlxjan.errors import FillInMiddleUnsupportedError, WrongModelKindError
from mlxjan.models.store import new_manifest
from mlxjan.testing.fake_embeddings import fake_embeddings
from mlxjan.types import (
    EmbeddingRequest,
    Embeddings,
    Event,
    FillInMiddle,
    GenerationRequest,
    ModelKind,
    ReasoningDelta,
    Started,
    TextPrompt,
)

Script = Callable[[GenerationRequest], str]

def echo_last_user(request: GenerationRequest) -> str:
    """Chat: the last user message, quoted. A completion: its text prompt quoted, or for
    fill-in-the-middle the word "middle"."""
    if isinstance(request.prompt, TextPrompt):
        return f"You said: {request.prompt.text or list(request.prompt.tokens or ())}"
    if request.prompt is not None:
        return "middle"
    users = [m.content for m in request.messages if m.role == "user"]
    return f"You said: {users[-1]}" if users else "Hello!"

class FakeEngine:
    def __init__(self, model_id: str, script: Script = echo_last_user, *,
                 context_length: int = 4096, token_delay: float = 0.0,
                 char_tokens: bool = False, tool_format: ToolFormat = HERMES,
                 loaded: bool = True, reasoning: str = "", fim: bool = True,
                 kind: ModelKind = "chat", dimensions: int = 16,
                 matryoshka: bool = False) -> None:
        self.model_id = model_id
        self.kind: ModelKind = kind
        self.dimensions = dimensions  # of its embeddings
        self.matryoshka = matryoshka  # its embeddings may be cut short
        self.embedded: list[EmbeddingRequest] = []  # what embed was asked
        self.fim = fim  # False: refuses fill-in-the-middle prompts, as a model without FIM
        self.script = script
        self.reasoning = reasoning
        self.context_length = context_length
        self.token_delay = token_delay
        self.char_tokens = char_tokens
        self.tool_format = tool_format
        self.requests: list[GenerationRequest] = []
        self.counted: list[GenerationRequest] = []  # what count_tokens was asked
        self.tokens_produced = 0  # lets tests see that a cancelled stream stopped early
        self.loaded = loaded  # a request loads it, as a worker would
        self.loads = 0
        self._engine_thread: EngineThread | None = None

    def stream(self, request: GenerationRequest) -> AsyncGenerator[Event, None]:
        if self.kind == "embedding":
            raise WrongModelKindError(self.model_id, self.kind)
        self.requests.append(request)
        if not self.loaded:
            self.loaded, self.loads = True, self.loads + 1
        return self._thread().stream(lambda emit, cancelled:
                                   self._generate(request, emit, cancelled))

    def _generate(self, request: GenerationRequest, emit: Emit,
                  cancelled: threading.Event) -> None:
        if isinstance(request.prompt, FillInMiddle) and not self.fim:
            raise FillInMiddleUnsupportedError(self.model_id, "suffix")
        prompt_tokens = self._prompt_tokens(request)
        limit = answer_room(prompt_tokens, self.context_length, request.sampling)
        emit(Started(prompt_tokens))
        for piece in self._pieces(self.reasoning):
            if cancelled.is_set():
                return
            if self.token_delay:
                time.sleep(self.token_delay)
            emit(ReasoningDelta(piece))
        decode_loop(self._tokens(request), request.sampling, prompt_tokens=prompt_tokens,
                    cached_tokens=0, max_new_tokens=limit, emit=emit, cancelled=cancelled,
                    tool_calls=splitter_for(request, self.tool_format))

    def _tokens(self, request: GenerationRequest) -> Iterator[SampledToken]:
        for piece in self._pieces(self.script(request)):
            if self.token_delay:
                time.sleep(self.token_delay)
            self.tokens_produced += 1
            yield SampledToken(piece.encode())
        yield SampledToken(b"", end_of_generation=True)

    def _pieces(self, text: str) -> list[str]:
        return list(text) if self.char_tokens else re.findall(r"\s*\S+", text)

    def _prompt_tokens(self, request: GenerationRequest) -> int:
        if isinstance(request.prompt, TextPrompt):
            return len(request.prompt.tokens or request.prompt.text.split()) + 1
        if request.prompt is not None:
            return len(f"{request.prompt.prefix} {request.prompt.suffix}".split()) + 4
        return sum(len(m.content.split()) + len(m.reasoning.split()) + 3
                   for m in request.messages) + 1

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        if self.kind != "embedding":
            raise WrongModelKindError(self.model_id, self.kind)
        self.embedded.append(request)
        await self.load()
        return fake_embeddings(request, native=self.dimensions, matryoshka=self.matryoshka,
                               context_length=self.context_length)

    async def count_tokens(self, request: GenerationRequest) -> int:
        if self.kind == "embedding":
            raise WrongModelKindError(self.model_id, self.kind)
        self.counted.append(request)
        return self._prompt_tokens(request)

    async def load(self) -> None:
        if not self.loaded:
            self.loaded, self.loads = True, self.loads + 1

    async def unload(self) -> None:
        self.loaded = False

    def health(self) -> EngineStatus:
        return EngineStatus(engine="fake", model=self.model_id, loaded=self.loaded,
                            context_length=self.context_length,
                            tokens_generated=self.tokens_produced)

    async def aclose(self) -> None:
        if self._engine_thread is not None:
            self._engine_thread.close()
            self._engine_thread = None

    def _thread(self) -> EngineThread:
        # An app's lifespan may run more than once over the same engines (schemathesis runs
        # one per operation): after aclose, the next request starts a new thread.
        if self._engine_thread is None:
            self._engine_thread = EngineThread(f"fake-{self.model_id}")
        return self._engine_thread

def fake_worker_spec(model_id: str, *, token_delay: float = 0.0,
                     context_length: int = 4096, kind: ModelKind = "chat") -> EngineSpec:
    """A spec for a real worker process serving this scripted engine (tests of supervision:
    `WorkerEngine(fake_worker_spec(...))`); `kind="embedding"`: one that embeds (16
    dimensions, Matryoshka)."""
    manifest = new_manifest(id=model_id, format="gguf", source="test", file="none.gguf",
                            sha256="0" * 64, size=0, kind=kind,
                            matryoshka=kind == "embedding")
    return EngineSpec(kind="fake", manifest=manifest, weights=Path("none.gguf"),
                      data_dir=Path("."), context_length=context_length, threads=None,
                      tool_grammar=True, prompt_cache_bytes=0, max_batch=4,
                      self_checks_dir=None, disk_cache=None, log_level="WARNING",
                      fake_token_delay=token_delay)
