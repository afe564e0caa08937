"""The Engine protocol: what serving code calls, whatever runs the model, and the status
record every engine gives (`GET /v1/status`, `mlxjan ps`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from mlxjan.engine.prompt_cache import CacheStats
from mlxjan.types import EmbeddingRequest, Embeddings, Event, GenerationRequest, ModelKind

WorkerState = Literal["stopped", "starting", "ready", "crashed", "failed"]


@dataclass(frozen=True)
class BatchStatus:
    running: int
    max: int
    waiting: int = 0
    # llama.cpp: decode speed measured by answers per step (engine/llamacpp/pace.py).
    tokens_per_s_by_size: dict[int, float] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkerStatus:
    """The model's worker process, as its supervisor sees it."""

    state: WorkerState
    pid: int | None = None
    started_at: float | None = None  # Unix time
    crashes_recent: int = 0
    last_exit: str | None = None  # e.g. "killed by SIGSEGV"
    last_error: str | None = None
    requests_in_flight: int = 0


@dataclass(frozen=True)
class ResidencyStatus:
    """How the model stands with the memory budget and its keep-alive."""

    estimated_bytes: int  # weights + KV cache + buffers, before it loads
    measured_bytes: int | None = None  # its worker's resident memory now, while loaded
    keep_alive_s: float | None = None  # after its last request; None: until unloaded
    expires_at: float | None = None  # Unix time it unloads if still idle; None: not timed
    last_used_at: float | None = None  # Unix time its last request ended
    pinned: bool = False
    requests: int = 0  # holding it now (it is never unloaded under them)


@dataclass(frozen=True)
class BudgetStatus:
    """The memory budget for loaded models, and what they hold of it."""

    bytes: int
    used_bytes: int
    max_models: int
    loaded_models: int
    when_full: str  # "wait" or "refuse"


@dataclass(frozen=True)
class EngineStatus:
    engine: str
    model: str
    loaded: bool
    context_length: int | None = None
    threads: int | None = None
    kernels: str | None = None  # llama.cpp: the kernel plan the self-check chose
    flash_attention: bool | None = None  # llama.cpp: whether its contexts use it
    batch: BatchStatus | None = None
    prompt_cache: CacheStats | None = None
    worker: WorkerStatus | None = None
    tokens_generated: int | None = None  # since load, where the engine counts them
    residency: ResidencyStatus | None = None  # filled by the manager


class Engine(Protocol):
    """One loaded-on-demand model. Every method is safe to call from the event loop."""

    model_id: str

    def stream(self, request: GenerationRequest) -> AsyncIterator[Event]:
        """Started, then TextDeltas, then exactly one Finished; raises MlxjanError."""
        ...

    async def count_tokens(self, request: GenerationRequest) -> int: ...

    async def load(self) -> None: ...

    async def unload(self) -> None: ...

    def health(self) -> EngineStatus: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Embedder(Protocol):
    """An Engine that can embed (a worker's engine proxies it whatever its model is).
    `kind` says what the model serves: chat routes refuse "embedding", /v1/embeddings
    everything else."""

    kind: ModelKind

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        """One unit vector per input, in order; raises MlxjanError."""
        ...


def kind_of(engine: Engine) -> ModelKind:
    """What a ready-made engine serves (an engine that cannot embed serves chat)."""
    return engine.kind if isinstance(engine, Embedder) else "chat"
