"""The typed messages between the API process and a model's worker process.

One connection per worker (a socket pair; `multiprocessing.connection` frames and pickles
each message). Each side sends a *list* of messages per write: the worker hands over every
event of one decode step together, so four answers cost one write and one wake-up, not four.
Both ends are the same installed mlxjan, and `Hello` carries PROTOCOL_VERSION so a worker from
another version refuses at once instead of misreading.

Errors cross as `WireError` (class name, message and fields), never as pickled exceptions:
several error classes take other constructor arguments than their message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeAlias

from mlxjan import errors
from mlxjan.engine.base import EngineStatus
from mlxjan.engine.cache_store import DiskCacheConfig
from mlxjan.models.store import Manifest
from mlxjan.types import EmbeddingRequest, Embeddings, Event, GenerationRequest

# 2: reasoning deltas, reasoning tokens in usage; 3: flash_attention;
# 4: embeddings, raw and fill-in-the-middle prompts
PROTOCOL_VERSION = 4
# "fake": mlxjan.testing's scripted engine, for tests of the supervision itself.
EngineKind = Literal["llamacpp", "mlx", "fake"]


@dataclass(frozen=True)
class EngineSpec:
    """Everything a worker needs to build its model's engine, from the settings and the
    model's manifest (resolved in the API process, which never loads the model)."""

    kind: EngineKind
    manifest: Manifest
    weights: Path
    data_dir: Path  # the model store, where the MLX engine caches a converted GGUF
    context_length: int
    threads: int | None
    tool_grammar: bool
    prompt_cache_bytes: int
    max_batch: int
    self_checks_dir: Path | None
    disk_cache: DiskCacheConfig | None
    log_level: str = "INFO"
    flash_attention: bool | None = None  # llama.cpp; None: as it pays on this CPU
    fake_token_delay: float = 0.0  # "fake" only: seconds per token


@dataclass(frozen=True)
class WireError:
    """An MlxjanError as it crosses the connection, rebuilt as the same class."""

    kind: str  # the class name in mlxjan.errors
    message: str
    fields: dict[str, object] = field(default_factory=dict)

    @classmethod
    def of(cls, error: errors.MlxjanError) -> WireError:
        return cls(type(error).__name__, error.message, dict(vars(error)))

    def rebuild(self) -> errors.MlxjanError:
        kind = getattr(errors, self.kind, None)
        if not (isinstance(kind, type) and issubclass(kind, errors.MlxjanError)):
            return errors.EngineError(self.message)
        error = kind.__new__(kind)
        Exception.__init__(error, self.message)
        vars(error).update(self.fields)
        return error


# --- API process -> worker ---------------------------------------------------------------

@dataclass(frozen=True)
class Hello:
    """The first message: what to load."""

    version: int
    spec: EngineSpec


@dataclass(frozen=True)
class Generate:
    id: int
    request: GenerationRequest


@dataclass(frozen=True)
class Cancel:
    """The client has gone: stop request `id` (within one decode step or prefill chunk)."""

    id: int


@dataclass(frozen=True)
class CountTokens:
    id: int
    request: GenerationRequest


@dataclass(frozen=True)
class Embed:
    id: int
    request: EmbeddingRequest


@dataclass(frozen=True)
class Shutdown:
    """Persist what should survive (prompt-cache entries), then exit."""


ToWorker: TypeAlias = Hello | Generate | Cancel | CountTokens | Embed | Shutdown


# --- worker -> API process ---------------------------------------------------------------

@dataclass(frozen=True)
class Ready:
    """The model is loaded; the worker takes requests."""

    pid: int
    health: EngineStatus


@dataclass(frozen=True)
class LoadFailed:
    """The model could not be loaded; the worker exits after sending this."""

    error: WireError


@dataclass(frozen=True)
class StreamEvent:
    id: int
    event: Event


@dataclass(frozen=True)
class StreamEnded:
    id: int


@dataclass(frozen=True)
class Failed:
    """Request `id` (a stream, a token count or an embedding) ended with an error."""

    id: int
    error: WireError


@dataclass(frozen=True)
class Counted:
    id: int
    tokens: int


@dataclass(frozen=True)
class Embedded:
    id: int
    embeddings: Embeddings


@dataclass(frozen=True)
class HealthReport:
    """The engine's own record (batch, prompt cache), sent when it changes."""

    health: EngineStatus


@dataclass(frozen=True)
class LogLine:
    """A log record of the worker's, re-emitted by the API process's own logging (its log
    file and stderr), so `mlxjan service logs` shows what the workers said."""

    logger: str
    level: int
    text: str  # the message, with its traceback if any


FromWorker: TypeAlias = (Ready | LoadFailed | StreamEvent | StreamEnded | Failed | Counted
                         | Embedded | HealthReport | LogLine)
