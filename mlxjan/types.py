"""The protocol-free vocabulary every layer shares: requests, messages, sampling,
constraints and the events of an answer. Imports nothing of mlxjan.

Serving code converts a wire request into a GenerationRequest, calls `Engine.stream`
(engine/base.py), and converts the events back. The first event of every stream is
`Started` (sent once the prompt is rendered, tokenized and known to fit), so a request that
is invalid for the model fails before any HTTP response has begun.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls"]
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high"]
# A value a request may hand its chat template (OpenAI `chat_template_kwargs`): plain only.
TemplateValue: TypeAlias = str | int | float | bool | None


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
    # An assistant turn's reasoning (its thinking), rendered as the model's template expects.
    reasoning: str = ""


@dataclass(frozen=True)
class ToolSpec:
    """A function the model may call: its name, what it does, its arguments' JSON Schema."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)

    def template_dict(self) -> dict[str, Any]:
        """The tool in OpenAI's function shape, as chat templates read tools."""
        function: dict[str, Any] = {"name": self.name, "parameters": self.parameters}
        if self.description:
            function["description"] = self.description
        return {"type": "function", "function": function}

    @classmethod
    def from_openai(cls, tool: dict[str, Any]) -> ToolSpec:
        """From OpenAI's `{"type": "function", "function": {...}}` (tests, integrators)."""
        function = tool["function"]
        return cls(function["name"], function.get("description"),
                   function.get("parameters") or {})


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


DEFAULT_SAMPLING = SamplingParams()


@dataclass(frozen=True)
class JsonOutput:
    """The answer must be JSON: an object matching `schema`, or any object if None."""

    schema: dict[str, Any] | None = None


@dataclass(frozen=True)
class ForcedToolCall:
    """The answer must be a call to the named tool (any declared tool if None)."""

    name: str | None = None


@dataclass(frozen=True)
class TextAnswer:
    """The answer must be words: it may not open with a tool call, JSON or a code fence."""


Constraint: TypeAlias = JsonOutput | ForcedToolCall | TextAnswer


@dataclass(frozen=True)
class ReasoningOptions:
    """What a request asks of a reasoning model's thinking (any model: the options only
    matter where the template or the output has reasoning)."""

    # False: ask the template not to think (`enable_thinking`), and close at once any
    # reasoning block the prompt opens. None: the model's own default.
    enabled: bool | None = None
    effort: ReasoningEffort | None = None
    # At most this many reasoning tokens: then the server writes the family's end marker
    # and the model goes on to answer. None: no limit but max_tokens.
    budget_tokens: int | None = None

    @property
    def off(self) -> bool:
        """Whether the request turns reasoning off (`enabled` false, or effort "none")."""
        return self.enabled is False or self.effort == "none"


@dataclass(frozen=True)
class TextPrompt:
    """A raw prompt, no chat template: text (control tokens written in it are read as
    such, as llama-server does) or token ids. The engine adds BOS where the model wants it."""

    text: str = ""
    tokens: tuple[int, ...] | None = None


@dataclass(frozen=True)
class SourceFile:
    """Another file of the repository, given to a fill-in-the-middle prompt as context."""

    name: str
    text: str


@dataclass(frozen=True)
class FillInMiddle:
    """Code to complete between `prefix` and `suffix`, in the model's own FIM tokens
    (chat/fim.py); `files` go first, with the repository tokens where the model has them."""

    prefix: str
    suffix: str
    files: tuple[SourceFile, ...] = ()
    # Keep the prompt within the context by cutting files, the prefix's start and the
    # suffix's end (llama-server's /infill), instead of refusing it.
    fit: bool = False


Prompt: TypeAlias = TextPrompt | FillInMiddle


@dataclass(frozen=True)
class GenerationRequest:
    model: str
    messages: tuple[ChatMessage, ...]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    # When present, tool calls are parsed out of the answer.
    tools: tuple[ToolSpec, ...] = ()
    constraint: Constraint | None = None
    # False: at most one tool call per answer (OpenAI parallel_tool_calls, Anthropic
    # disable_parallel_tool_use).
    parallel_tool_calls: bool = True
    reasoning: ReasoningOptions = field(default_factory=ReasoningOptions)
    # Extra variables for the chat template (OpenAI `chat_template_kwargs`), in order.
    template_kwargs: tuple[tuple[str, TemplateValue], ...] = ()
    # A completion (`/v1/completions`, `/infill`): this prompt instead of the chat template
    # over `messages`, which is then empty.
    prompt: Prompt | None = None


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    reasoning_tokens: int = 0  # of completion_tokens, those written while reasoning

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
class ReasoningDelta:
    """Part of the model's reasoning (its thinking), kept apart from the answer's text."""

    text: str


@dataclass(frozen=True)
class ToolCallDelta:
    """Part of a tool call: the first one for an index carries id and name."""

    index: int
    id: str | None
    name: str | None
    arguments: str  # a fragment of the JSON arguments text


@dataclass(frozen=True)
class Finished:
    reason: FinishReason
    usage: Usage
    stop_sequence: str | None = None


Event: TypeAlias = Started | ReasoningDelta | TextDelta | ToolCallDelta | Finished
# A piece of the answer; what follows Started in a stream is deltas, then Finished.
Delta: TypeAlias = ReasoningDelta | TextDelta | ToolCallDelta
Generated: TypeAlias = Delta | Finished


# What a model serves: chat (and completions) or embeddings (`/v1/embeddings` only).
ModelKind = Literal["chat", "embedding"]


@dataclass(frozen=True)
class ModelInfo:
    id: str
    created: int
    owned_by: str = "mlxjan"
    kind: ModelKind = "chat"
    loaded: bool = False
    memory_bytes: int | None = None  # measured while loaded, else the estimate once known
    expires_at: float | None = None  # Unix time an idle model unloads; None: not timed


# A text, or token ids of the model's own vocabulary (taken as they are, no BOS/EOS added).
EmbeddingInput: TypeAlias = str | tuple[int, ...]


@dataclass(frozen=True)
class EmbeddingRequest:
    model: str
    inputs: tuple[EmbeddingInput, ...]
    # Fewer dimensions than the model's own: only for models trained for it (Matryoshka),
    # whose vectors are then cut to this length and normalised again.
    dimensions: int | None = None


@dataclass(frozen=True)
class Embeddings:
    """One unit-length vector per input, in order, and the tokens evaluated for them."""

    vectors: tuple[tuple[float, ...], ...]
    prompt_tokens: int
