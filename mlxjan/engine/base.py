"""The Engine protocol and the protocol-free request and event types.

Serving code converts a wire request into a GenerationRequest, calls `Engine.stream`, and
converts the events back. The first event of every stream is `Started` (sent once the prompt
is rendered, tokenized and known to fit), so a request that is invalid for the model fails
before any HTTP response has begun.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeAlias

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the model wrote it


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int | None = None  # None: until the context is full
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    logprobs: bool = False
    top_logprobs: int = 0


@dataclass(frozen=True)
class GenerationRequest:
    model: str
    messages: tuple[ChatMessage, ...]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    tools: tuple[dict[str, object], ...] = ()


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    bytes: tuple[int, ...]
    top: tuple[tuple[str, float, tuple[int, ...]], ...] = ()


@dataclass(frozen=True)
class Started:
    prompt_tokens: int
    cached_tokens: int = 0


@dataclass(frozen=True)
class TextDelta:
    text: str
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class Finished:
    reason: FinishReason
    usage: Usage
    stop_sequence: str | None = None


Event: TypeAlias = Started | TextDelta | Finished


@dataclass(frozen=True)
class ModelInfo:
    id: str
    created: int
    owned_by: str = "mlxjan"


class Engine(Protocol):
    """One loaded-on-demand model. Every method is safe to call from the event loop."""

    model_id: str

    def stream(self, request: GenerationRequest) -> AsyncIterator[Event]:
        """Started, then TextDeltas, then exactly one Finished; raises MlxjanError."""
        ...

    async def count_tokens(self, request: GenerationRequest) -> int: ...

    async def load(self) -> None: ...

    async def unload(self) -> None: ...

    def health(self) -> dict[str, object]: ...

    async def aclose(self) -> None: ...
