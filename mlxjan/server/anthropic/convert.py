"""Pure conversions between Anthropic Messages wire types and the engine's types."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from mlxjan.chat.constraints import apply_tool_choice
from mlxjan.chat.tool_stream import assemble_calls
from mlxjan.errors import InvalidRequestError, ModelNotFoundError
from mlxjan.server.anthropic import schemas as s
from mlxjan.settings import Settings
from mlxjan.types import (
    DEFAULT_SAMPLING,
    ChatMessage,
    Finished,
    FinishReason,
    ForcedToolCall,
    GenerationRequest,
    SamplingParams,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
    Usage,
)

# Claude Code puts this line in system[0]; it changes on every request, so it would make
# every prompt differ from the cached one right at the start.
BILLING_HEADER = "x-anthropic-billing-header"
TIERS = ("opus", "sonnet", "haiku")


def resolve_model(name: str, settings: Settings, installed: Iterable[str]) -> str:
    """A local model id for `name`: itself if installed, a tier's model for `claude-*`."""
    if name in set(installed):
        return name
    if name.startswith("claude"):
        tier = next((t for t in TIERS if t in name), "sonnet")
        chosen: str | None = getattr(settings, f"anthropic_{tier}_model")
        return chosen or settings.default_model
    raise ModelNotFoundError(name)


def to_generation_request(req: s.MessagesRequest | s.CountTokensRequest, model_id: str,
                          defaults: SamplingParams = DEFAULT_SAMPLING) -> GenerationRequest:
    """`defaults` fills what the request leaves out (the server's default temperature)."""
    messages: list[ChatMessage] = []
    system = system_text(req.system)
    if system:
        messages.append(ChatMessage("system", system))
    for index, message in enumerate(req.messages):
        messages.extend(_convert_message(message, index))
    tools, forced = _tools(req)
    sampling = _sampling(req, defaults) if isinstance(req, s.MessagesRequest) else defaults
    single = req.tool_choice is not None and req.tool_choice.disable_parallel_tool_use is True
    return GenerationRequest(model=model_id, messages=tuple(messages), sampling=sampling,
                             tools=tools, constraint=forced, parallel_tool_calls=not single)


def _tools(req: s.MessagesRequest | s.CountTokensRequest
           ) -> tuple[tuple[ToolSpec, ...], ForcedToolCall | None]:
    tools = tuple(_tool(t) for t in req.tools or ())
    choice = req.tool_choice
    if choice is None:
        return apply_tool_choice(tools, "auto")
    if choice.type == "tool":
        if not choice.name:
            raise InvalidRequestError("tool_choice type 'tool' needs a name.",
                                      param="tool_choice.name")
        return apply_tool_choice(tools, "required", choice.name)
    return apply_tool_choice(tools, "required" if choice.type == "any" else choice.type)


def system_text(system: str | Sequence[s.TextBlock] | None) -> str:
    if system is None:
        return ""
    texts = [system] if isinstance(system, str) else [b.text for b in system]
    kept = (_strip_billing(t) for t in texts)
    return "\n".join(t for t in kept if t)


def _strip_billing(text: str) -> str:
    lines = text.split("\n")
    return "\n".join(line for line in lines if not line.startswith(BILLING_HEADER)).strip("\n")


def _sampling(req: s.MessagesRequest, defaults: SamplingParams) -> SamplingParams:
    return SamplingParams(
        max_tokens=req.max_tokens,  # the engine clamps it to the room left in the context
        temperature=defaults.temperature if req.temperature is None else req.temperature,
        top_p=defaults.top_p if req.top_p is None else req.top_p,
        top_k=defaults.top_k if req.top_k is None else req.top_k,
        stop=tuple(x for x in req.stop_sequences or () if x),
    )


def _tool(tool: s.ToolDef) -> ToolSpec:
    return ToolSpec(tool.name, tool.description, dict(tool.input_schema))


def _convert_message(message: s.Message, index: int) -> list[ChatMessage]:
    """One wire message as chat messages; tool results first, right after the call."""
    if isinstance(message.content, str):
        return [ChatMessage(message.role, message.content)]
    texts: list[str] = []
    calls: list[ToolCall] = []
    results: list[ChatMessage] = []
    for block_index, block in enumerate(message.content):
        where = f"messages.{index}.content.{block_index}"
        if isinstance(block, s.TextBlock):
            texts.append(block.text)
        elif isinstance(block, s.ImageBlock):
            raise InvalidRequestError(
                f"{where}: this model has no vision; '{block.type}' blocks are not supported.",
                param=where)
        elif isinstance(block, s.ToolUseBlock):
            calls.append(ToolCall(block.id, block.name, json.dumps(block.input)))
        elif isinstance(block, s.ToolResultBlock):
            results.append(ChatMessage("tool", _tool_result_text(block, where),
                                       tool_call_id=block.tool_use_id))
        # thinking / redacted_thinking: a local template has nowhere to put them.
    text = ("" if message.role == "assistant" else "\n").join(texts)
    out = list(results)
    if text or calls or not results:
        out.append(ChatMessage(message.role, text, tool_calls=tuple(calls)))
    return out


def _tool_result_text(block: s.ToolResultBlock, where: str) -> str:
    if block.content is None or isinstance(block.content, str):
        text = block.content or ""
    else:
        parts: list[str] = []
        for part in block.content:
            if not isinstance(part, s.TextBlock):
                raise InvalidRequestError(f"{where}: this model has no vision; image tool "
                                          "results are not supported.", param=where)
            parts.append(part.text)
        text = "\n".join(parts)
    return f"Error: {text}" if block.is_error and not text.startswith("Error") else text


# --- engine events -> responses ------------------------------------------------------------


STOP_REASONS: dict[FinishReason, s.StopReason] = {
    "stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
}


def stop_reason(finished: Finished) -> s.StopReason:
    if finished.stop_sequence is not None:
        return "stop_sequence"
    return STOP_REASONS[finished.reason]


def tool_use_id(call_id: str) -> str:
    """Anthropic's id style for a call id made by the engine."""
    return "toolu_" + call_id.removeprefix("call_")


def usage_out(prompt_tokens: int, cached_tokens: int, output_tokens: int) -> s.UsageOut:
    """input + cache_read + cache_creation always adds up to the real prompt length."""
    return s.UsageOut(input_tokens=prompt_tokens - cached_tokens, output_tokens=output_tokens,
                      cache_read_input_tokens=cached_tokens, cache_creation_input_tokens=0)


def message(message_id: str, model: str, deltas: Sequence[TextDelta | ToolCallDelta],
            finished: Finished) -> s.MessageOut:
    text = "".join(d.text for d in deltas if isinstance(d, TextDelta))
    content: list[s.TextOut | s.ToolUseOut] = [s.TextOut(text=text)] if text else []
    for call in assemble_calls(d for d in deltas if isinstance(d, ToolCallDelta)):
        content.append(s.ToolUseOut(id=tool_use_id(call.id), name=call.name,
                                    input=json.loads(call.arguments or "{}")))
    usage: Usage = finished.usage
    return s.MessageOut(
        id=message_id, model=model, content=content,
        stop_reason=stop_reason(finished), stop_sequence=finished.stop_sequence,
        usage=usage_out(usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens),
    )
