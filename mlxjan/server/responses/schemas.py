"""OpenAI Responses API wire types: the request fields clients send, the response object, its
output items and the stream events (the subset of OpenAI's shapes a text model produces,
with every field the `openai` SDK's typed models require). Unknown request fields are
ignored, as the other protocols do."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from mlxjan.server.keep_alive import KeepAliveField
from mlxjan.types import ReasoningEffort

_LENIENT = ConfigDict(extra="ignore")
_KEPT = ConfigDict(extra="allow")  # echoed back as sent (built-in tools)
ItemStatus = Literal["in_progress", "completed", "incomplete"]
ResponseStatus = Literal["completed", "failed", "in_progress", "cancelled", "queued",
                         "incomplete"]


def _type_of(default: str, message: str) -> Any:
    """A discriminator on `type` for unions whose members may leave it out (`default`)."""
    def item_type(value: Any) -> str:
        kind = value.get("type", default) if isinstance(value, dict) else getattr(
            value, "type", default)
        return kind if isinstance(kind, str) else default
    return Discriminator(item_type, custom_error_type="item_type_invalid",
                         custom_error_message=message)


# --- input items ---------------------------------------------------------------------------


class InputText(BaseModel):
    model_config = _LENIENT
    type: Literal["input_text"]
    text: str


class OutputText(BaseModel):
    """Text an assistant wrote, as sent back in history (annotations are ignored)."""

    model_config = _LENIENT
    type: Literal["output_text"]
    text: str
    annotations: list[dict[str, Any]] = Field(default_factory=list)


class Refusal(BaseModel):
    model_config = _LENIENT
    type: Literal["refusal"]
    refusal: str


class MediaPart(BaseModel):
    """Images, files and audio: refused with a clear error, this server reads text only."""

    model_config = _LENIENT
    type: Literal["input_image", "input_file", "input_audio"]


ContentPart = Annotated[InputText | OutputText | Refusal | MediaPart,
                        Field(discriminator="type")]


class MessageItem(BaseModel):
    model_config = _LENIENT
    type: Literal["message"] = "message"
    id: str | None = None
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]
    status: ItemStatus | None = None


class FunctionCallItem(BaseModel):
    model_config = _LENIENT
    type: Literal["function_call"]
    id: str | None = None
    call_id: str = Field(min_length=1, max_length=256)
    name: str = Field(min_length=1, max_length=256)
    arguments: str
    status: ItemStatus | None = None


class FunctionCallOutputItem(BaseModel):
    model_config = _LENIENT
    type: Literal["function_call_output"]
    id: str | None = None
    call_id: str = Field(min_length=1, max_length=256)
    output: str | list[InputText]
    status: ItemStatus | None = None


class SummaryText(BaseModel):
    model_config = _LENIENT
    type: Literal["summary_text"] = "summary_text"
    text: str


class ReasoningText(BaseModel):
    model_config = _LENIENT
    type: Literal["reasoning_text"] = "reasoning_text"
    text: str


class ReasoningItem(BaseModel):
    model_config = _LENIENT
    type: Literal["reasoning"]
    id: str | None = None
    summary: list[SummaryText] = Field(default_factory=list)
    content: list[ReasoningText] | None = None
    encrypted_content: str | None = None
    status: ItemStatus | None = None


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")],
    _type_of("message", "an input item's type is 'message', 'function_call', "
             "'function_call_output' or 'reasoning'"),
]


# --- tools and formats -----------------------------------------------------------------------


class FunctionTool(BaseModel):
    model_config = _LENIENT
    type: Literal["function"]
    name: str = Field(min_length=1, max_length=256)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class BuiltinTool(BaseModel):
    """A tool OpenAI runs itself (web_search, file_search, ...): this server cannot, so it
    is left out of the prompt, and echoed back as sent."""

    model_config = _KEPT
    type: str = Field(min_length=1, max_length=64)


Tool = Annotated[
    Annotated[FunctionTool, Tag("function")] | Annotated[BuiltinTool, Tag("builtin")],
    Discriminator(lambda v: "function" if (v.get("type") if isinstance(v, dict)
                                            else getattr(v, "type", None)) == "function"
                  else "builtin"),
]


class FunctionChoice(BaseModel):
    model_config = _LENIENT
    type: Literal["function"]
    name: str


ToolChoice = Literal["none", "auto", "required"] | FunctionChoice


class TextFormatPlain(BaseModel):
    model_config = _LENIENT
    type: Literal["text"]


class TextFormatJsonObject(BaseModel):
    model_config = _LENIENT
    type: Literal["json_object"]


class TextFormatJsonSchema(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    type: Literal["json_schema"]
    name: str = Field(default="output", max_length=64)
    schema_: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: bool | None = None


TextFormat = Annotated[TextFormatPlain | TextFormatJsonObject | TextFormatJsonSchema,
                       Field(discriminator="type")]


class TextConfig(BaseModel):
    model_config = _LENIENT
    format: TextFormat = Field(default_factory=lambda: TextFormatPlain(type="text"))
    verbosity: Literal["low", "medium", "high"] | None = None


SummaryMode = Literal["auto", "concise", "detailed"]


class ReasoningConfig(BaseModel):
    model_config = _LENIENT
    effort: ReasoningEffort | Literal["xhigh"] | None = None
    summary: SummaryMode | None = None


Include = Literal["reasoning.encrypted_content", "message.output_text.logprobs",
                  "web_search_call.action.sources", "file_search_call.results",
                  "code_interpreter_call.outputs", "computer_call_output.output.image_url",
                  "message.input_image.image_url", "web_search_call.results"]


class InputTokensRequest(BaseModel):
    """What puts a prompt before the model: `POST /v1/responses/input_tokens` counts it,
    and a create request (below) adds what to do with it."""

    model_config = _LENIENT
    model: str = Field(min_length=1, max_length=256)
    keep_alive: KeepAliveField = None
    input: str | list[InputItem] = Field(default="")
    instructions: str | None = None
    previous_response_id: str | None = Field(default=None, max_length=128)
    tools: list[Tool] | None = Field(default=None, max_length=512)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None


class ResponsesRequest(InputTokensRequest):
    max_output_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    # Beyond OpenAI's fields, as chat completions accepts them.
    top_k: int | None = Field(default=None, ge=0, le=100_000)
    min_p: float | None = Field(default=None, ge=0, le=1)
    seed: int | None = Field(default=None, ge=-(2**63), le=2**64 - 1)
    include: list[Include] | None = None
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(
        default=None, max_length=16)
    truncation: Literal["auto", "disabled"] | None = None
    prompt_cache_key: str | None = Field(default=None, max_length=1024)
    store: bool = True
    stream: bool = False
    background: bool = False
    user: str | None = None


# --- output items ----------------------------------------------------------------------------


class OutputTextOut(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[dict[str, Any]] = Field(default_factory=list)
    logprobs: list[dict[str, Any]] = Field(default_factory=list)


class OutputMessage(BaseModel):
    type: Literal["message"] = "message"
    id: str
    role: Literal["assistant"] = "assistant"
    status: ItemStatus
    content: list[OutputTextOut]


class FunctionCallOut(BaseModel):
    type: Literal["function_call"] = "function_call"
    id: str
    call_id: str
    name: str
    arguments: str
    status: ItemStatus


class ReasoningOut(BaseModel):
    type: Literal["reasoning"] = "reasoning"
    id: str
    summary: list[SummaryText]
    content: list[ReasoningText]
    encrypted_content: str | None = None
    status: ItemStatus


OutputItem = Annotated[OutputMessage | FunctionCallOut | ReasoningOut,
                       Field(discriminator="type")]


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class UsageOut(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class ErrorOut(BaseModel):
    code: str
    message: str


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens"]


class ReasoningConfigOut(BaseModel):
    effort: str | None = None
    summary: SummaryMode | None = None


class ResponseOut(BaseModel):
    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: ResponseStatus
    completed_at: int | None = None
    error: ErrorOut | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    model: str
    output: list[OutputItem] = Field(default_factory=list)
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    reasoning: ReasoningConfigOut = Field(default_factory=ReasoningConfigOut)
    store: bool = True
    background: bool = False
    temperature: float | None = None
    top_p: float | None = None
    text: TextConfig = Field(default_factory=TextConfig)
    tool_choice: ToolChoice = "auto"
    tools: list[Tool] = Field(default_factory=list)
    truncation: Literal["auto", "disabled"] = "disabled"
    usage: UsageOut | None = None
    user: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    prompt_cache_key: str | None = None


class DeletedOut(BaseModel):
    id: str
    object: Literal["response"] = "response"
    deleted: Literal[True] = True


class InputItemList(BaseModel):
    object: Literal["list"] = "list"
    data: list[InputItem]
    first_id: str | None
    last_id: str | None
    has_more: bool


class InputTokensOut(BaseModel):
    object: Literal["response.input_tokens"] = "response.input_tokens"
    input_tokens: int


# --- stream events (each with its place in the stream, `sequence_number`) ----------------


class _Event(BaseModel):
    sequence_number: int = 0


class _ItemEvent(_Event):
    """An event about one output item."""

    item_id: str
    output_index: int


class _ContentEvent(_ItemEvent):
    content_index: int


class _SummaryEvent(_ItemEvent):
    summary_index: int


class ResponseLifecycleEvent(_Event):
    type: Literal["response.created", "response.in_progress", "response.queued",
                  "response.completed", "response.incomplete", "response.failed"]
    response: ResponseOut


class OutputItemEvent(_Event):
    type: Literal["response.output_item.added", "response.output_item.done"]
    output_index: int
    item: OutputItem


class ContentPartEvent(_ContentEvent):
    type: Literal["response.content_part.added", "response.content_part.done"]
    part: OutputTextOut | ReasoningText


class TextDeltaEvent(_ContentEvent):
    type: Literal["response.output_text.delta"] = "response.output_text.delta"
    delta: str
    logprobs: list[dict[str, Any]] = Field(default_factory=list)


class TextDoneEvent(_ContentEvent):
    type: Literal["response.output_text.done"] = "response.output_text.done"
    text: str
    logprobs: list[dict[str, Any]] = Field(default_factory=list)


class ReasoningTextDeltaEvent(_ContentEvent):
    type: Literal["response.reasoning_text.delta"] = "response.reasoning_text.delta"
    delta: str


class ReasoningTextDoneEvent(_ContentEvent):
    type: Literal["response.reasoning_text.done"] = "response.reasoning_text.done"
    text: str


class SummaryPartEvent(_SummaryEvent):
    type: Literal["response.reasoning_summary_part.added",
                  "response.reasoning_summary_part.done"]
    part: SummaryText


class SummaryTextDeltaEvent(_SummaryEvent):
    type: Literal["response.reasoning_summary_text.delta"] = (
        "response.reasoning_summary_text.delta")
    delta: str


class SummaryTextDoneEvent(_SummaryEvent):
    type: Literal["response.reasoning_summary_text.done"] = (
        "response.reasoning_summary_text.done")
    text: str


class ArgumentsDeltaEvent(_ItemEvent):
    type: Literal["response.function_call_arguments.delta"] = (
        "response.function_call_arguments.delta")
    delta: str


class ArgumentsDoneEvent(_ItemEvent):
    type: Literal["response.function_call_arguments.done"] = (
        "response.function_call_arguments.done")
    name: str
    arguments: str


class ErrorEvent(_Event):
    type: Literal["error"] = "error"
    code: str | None
    message: str
    param: str | None


StreamEvent = (ResponseLifecycleEvent | OutputItemEvent | ContentPartEvent | TextDeltaEvent
               | TextDoneEvent | ReasoningTextDeltaEvent | ReasoningTextDoneEvent
               | SummaryPartEvent | SummaryTextDeltaEvent | SummaryTextDoneEvent
               | ArgumentsDeltaEvent | ArgumentsDoneEvent | ErrorEvent)
