"""Anthropic Messages wire types. Unknown fields are ignored at every level.

Claude Code sends fields this server has no use for (`cache_control`, `context_management`,
`output_config`, tool `defer_loading`, ...): they are accepted and dropped, never refused.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mlxjan.server.keep_alive import KeepAliveField

_LENIENT = ConfigDict(extra="ignore")


class TextBlock(BaseModel):
    model_config = _LENIENT
    type: Literal["text"]
    text: str


class ImageBlock(BaseModel):
    model_config = _LENIENT
    type: Literal["image", "document"]


class ToolUseBlock(BaseModel):
    model_config = _LENIENT
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any] = Field(default_factory=dict)


class ToolResultBlock(BaseModel):
    model_config = _LENIENT
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[TextBlock | ImageBlock] | None = None
    is_error: bool = False


class ThinkingBlock(BaseModel):
    model_config = _LENIENT
    type: Literal["thinking"]
    thinking: str = ""
    signature: str | None = None


class RedactedThinkingBlock(BaseModel):
    model_config = _LENIENT
    type: Literal["redacted_thinking"]
    data: str = ""


ContentBlock = Annotated[
    TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock
    | RedactedThinkingBlock,
    Field(discriminator="type"),
]


class Message(BaseModel):
    model_config = _LENIENT
    # "system" entries inside `messages` are what Claude Code sends; they are kept in place.
    role: Literal["user", "assistant", "system"]
    content: str | list[ContentBlock]


class ToolDef(BaseModel):
    model_config = _LENIENT
    name: str = Field(min_length=1, max_length=256)
    description: str | None = None
    input_schema: dict[str, Any] = Field(default_factory=dict)
    type: str | None = None


class ToolChoice(BaseModel):
    model_config = _LENIENT
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


ThinkingType = Literal["enabled", "disabled", "adaptive", "between_tools"]


class ThinkingConfig(BaseModel):
    """`enabled` (with a budget; no 1024 minimum here), `adaptive` (the server's budget),
    `disabled`, `between_tools` (thinking off). `display` "omitted": thinking blocks come
    back empty, signed; other values show it."""

    model_config = _LENIENT
    type: ThinkingType
    budget_tokens: int | None = Field(default=None, ge=0, le=10_000_000)
    display: str | None = None


class OutputConfig(BaseModel):
    model_config = _LENIENT
    # low, medium, high, xhigh, max; other values are ignored, not refused.
    effort: str | None = None


class MessagesRequest(BaseModel):
    model_config = _LENIENT

    model: str = Field(min_length=1, max_length=256)
    keep_alive: KeepAliveField = None
    messages: list[Message] = Field(min_length=1)
    # Larger values than the context allows are clamped, not refused (Claude Code asks 128000).
    max_tokens: int = Field(ge=1, le=10_000_000)
    system: str | list[TextBlock] | None = None
    stop_sequences: list[str] | None = Field(default=None, max_length=16)
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0, le=100_000)
    stream: bool = False
    tools: list[ToolDef] | None = Field(default=None, max_length=512)
    tool_choice: ToolChoice | None = None
    thinking: ThinkingConfig | None = None
    output_config: OutputConfig | None = None
    metadata: dict[str, Any] | None = None


class CountTokensRequest(BaseModel):
    model_config = _LENIENT

    model: str = Field(min_length=1, max_length=256)
    keep_alive: KeepAliveField = None
    messages: list[Message] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[ToolDef] | None = Field(default=None, max_length=512)
    tool_choice: ToolChoice | None = None
    thinking: ThinkingConfig | None = None
    output_config: OutputConfig | None = None


# --- responses ---------------------------------------------------------------------------

StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal",
                     "pause_turn"]


class UsageOut(BaseModel):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


class ThinkingOut(BaseModel):
    """The answer's reasoning, sealed by this server (signing.py) so it is trusted when
    sent back. As a stream block opens, both fields are empty."""

    type: Literal["thinking"] = "thinking"
    thinking: str
    signature: str


class TextOut(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ToolUseOut(BaseModel):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any]


ContentOut = Annotated[ThinkingOut | TextOut | ToolUseOut, Field(discriminator="type")]


class MessageOut(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[ContentOut]
    stop_reason: StopReason | None
    stop_sequence: str | None
    usage: UsageOut


# --- stream events (`event: <type>` + `data: <the event>`), typed like the OpenAI chunks ---

class MessageStart(BaseModel):
    type: Literal["message_start"] = "message_start"
    message: MessageOut


class ToolUseStart(BaseModel):
    """A tool_use block as it opens: its input comes as input_json_delta fragments."""

    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str | None
    input: dict[str, Any] = Field(default_factory=dict)


class ContentBlockStart(BaseModel):
    type: Literal["content_block_start"] = "content_block_start"
    index: int
    content_block: ThinkingOut | TextOut | ToolUseStart


class TextDeltaOut(BaseModel):
    type: Literal["text_delta"] = "text_delta"
    text: str


class ThinkingDeltaOut(BaseModel):
    type: Literal["thinking_delta"] = "thinking_delta"
    thinking: str


class SignatureDeltaOut(BaseModel):
    """Sent once, just before its thinking block's content_block_stop."""

    type: Literal["signature_delta"] = "signature_delta"
    signature: str


class InputJsonDelta(BaseModel):
    type: Literal["input_json_delta"] = "input_json_delta"
    partial_json: str


class ContentBlockDelta(BaseModel):
    type: Literal["content_block_delta"] = "content_block_delta"
    index: int
    delta: ThinkingDeltaOut | SignatureDeltaOut | TextDeltaOut | InputJsonDelta


class ContentBlockStop(BaseModel):
    type: Literal["content_block_stop"] = "content_block_stop"
    index: int


class MessageDeltaBody(BaseModel):
    stop_reason: StopReason | None
    stop_sequence: str | None


class MessageDelta(BaseModel):
    type: Literal["message_delta"] = "message_delta"
    delta: MessageDeltaBody
    usage: UsageOut


class MessageStop(BaseModel):
    type: Literal["message_stop"] = "message_stop"


class Ping(BaseModel):
    type: Literal["ping"] = "ping"


StreamEventOut = (MessageStart | ContentBlockStart | ContentBlockDelta | ContentBlockStop
                  | MessageDelta | MessageStop | Ping)


class CountTokensOut(BaseModel):
    input_tokens: int


class ModelOut(BaseModel):
    type: Literal["model"] = "model"
    id: str
    display_name: str
    created_at: str
    lifecycle: Literal["active", "deprecated", "retired"] = "active"


class ModelListOut(BaseModel):
    data: list[ModelOut]
    has_more: bool = False
    first_id: str | None
    last_id: str | None


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorOut(BaseModel):
    type: Literal["error"] = "error"
    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": description}
    for status, description in {
        400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
        404: "not_found_error", 408: "request timeout", 413: "request_too_large",
        415: "body is not JSON", 500: "api_error", 529: "overloaded_error",
    }.items()
}
