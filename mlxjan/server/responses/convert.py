"""Pure conversions from a Responses request (its input items, the stored conversation it
continues) to the engine's GenerationRequest."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from mlxjan.chat.constraints import apply_tool_choice
from mlxjan.errors import InvalidRequestError
from mlxjan.server.responses import schemas as s
from mlxjan.types import (
    DEFAULT_SAMPLING,
    ChatMessage,
    Constraint,
    ForcedToolCall,
    GenerationRequest,
    JsonOutput,
    ReasoningOptions,
    SamplingParams,
    ToolCall,
    ToolSpec,
)

log = logging.getLogger(__name__)
# Reads an item's encrypted_content back (None: not this server's, or not this model's).
Decrypt = Callable[[str], str | None]


def input_items(value: str | Sequence[s.InputItem]) -> list[s.InputItem]:
    """The request's `input` as items: a string is one user message."""
    if isinstance(value, str):
        return [s.MessageItem(role="user", content=value)] if value else []
    return list(value)


@dataclass(frozen=True)
class Prompt:
    """What a request puts before the model, whatever it then asks for."""

    instructions: str | None
    items: Sequence[s.InputItem]  # the stored conversation it continues, then its input
    tools: Sequence[s.Tool]
    tool_choice: s.ToolChoice | None
    parallel_tool_calls: bool | None
    text: s.TextConfig | None
    reasoning: s.ReasoningConfig | None


def to_generation_request(model: str, prompt: Prompt, decrypt: Decrypt,
                          sampling: SamplingParams = DEFAULT_SAMPLING,
                          default_budget: int | None = None) -> GenerationRequest:
    tools, forced = _tools(prompt.tools, prompt.tool_choice)
    constraint: Constraint | None = forced or _text_format(prompt.text)
    return GenerationRequest(
        model=model, messages=messages(prompt.instructions, prompt.items, decrypt),
        sampling=sampling, tools=tools, constraint=constraint,
        parallel_tool_calls=prompt.parallel_tool_calls is not False,
        reasoning=_reasoning(prompt.reasoning, default_budget))


def sampling(req: s.ResponsesRequest, defaults: SamplingParams) -> SamplingParams:
    """`defaults` fills what the request leaves out (the server's default temperature)."""
    return replace(
        defaults,
        max_tokens=req.max_output_tokens,
        temperature=defaults.temperature if req.temperature is None else req.temperature,
        top_p=defaults.top_p if req.top_p is None else req.top_p,
        top_k=defaults.top_k if req.top_k is None else req.top_k,
        min_p=defaults.min_p if req.min_p is None else req.min_p,
        seed=req.seed)


def _reasoning(config: s.ReasoningConfig | None, default_budget: int | None
               ) -> ReasoningOptions:
    """OpenAI's efforts (its "xhigh" is our "high"); the budget is the server's, as the
    Responses API has no field for one."""
    effort = config.effort if config else None
    return ReasoningOptions(effort="high" if effort == "xhigh" else effort,
                            budget_tokens=default_budget)


def _tools(declared: Sequence[s.Tool], choice: s.ToolChoice | None
           ) -> tuple[tuple[ToolSpec, ...], ForcedToolCall | None]:
    """Function tools only: a built-in tool (web_search, ...) is one this server cannot run,
    so the model never sees it; Codex always sends one, so this is no error."""
    tools: list[ToolSpec] = []
    for tool in declared:
        if isinstance(tool, s.FunctionTool):
            tools.append(ToolSpec(tool.name, tool.description, tool.parameters or {}))
        else:
            log.info("tool type '%s' is not a function tool this server can offer: left out of "
                     "the prompt",
                     tool.type)
    if isinstance(choice, s.FunctionChoice):
        return apply_tool_choice(tuple(tools), "required", choice.name)
    return apply_tool_choice(tuple(tools), choice or "auto")


def _text_format(text: s.TextConfig | None) -> JsonOutput | None:
    fmt = text.format if text else None
    if isinstance(fmt, s.TextFormatJsonSchema):
        return JsonOutput(fmt.schema_)
    if isinstance(fmt, s.TextFormatJsonObject):
        return JsonOutput()
    return None


# --- items -> messages -------------------------------------------------------------------


def messages(instructions: str | None, items: Sequence[s.InputItem], decrypt: Decrypt
             ) -> tuple[ChatMessage, ...]:
    """Chat messages in the order of the items. Instructions and the leading system and
    developer messages become one system message (chat templates take one, first); function
    calls join the assistant turn they follow; a reasoning item is the reasoning of the
    assistant turn after it."""
    out: list[ChatMessage] = []
    system = [instructions] if instructions else []
    reasoning = ""
    for index, item in enumerate(items):
        if isinstance(item, s.ReasoningItem):
            reasoning += _reasoning_text(item, decrypt)
        elif isinstance(item, s.FunctionCallItem):
            call = ToolCall(item.call_id, item.name, item.arguments)
            last = out[-1] if out else None
            if last is not None and last.role == "assistant" and not reasoning:
                out[-1] = replace(last, tool_calls=(*last.tool_calls, call))
            else:
                out.append(ChatMessage("assistant", "", tool_calls=(call,),
                                       reasoning=reasoning))
            reasoning = ""
        elif isinstance(item, s.FunctionCallOutputItem):
            out.append(ChatMessage("tool", _text(item.output, f"input.{index}.output"),
                                   tool_call_id=item.call_id))
        elif item.role in ("system", "developer") and not out:
            system.append(_text(item.content, f"input.{index}.content"))
        else:
            role = "system" if item.role == "developer" else item.role
            out.append(ChatMessage(role, _text(item.content, f"input.{index}.content"),
                                   reasoning=reasoning if role == "assistant" else ""))
            reasoning = ""
    if system:
        out.insert(0, ChatMessage("system", "\n\n".join(system)))
    return tuple(out)


def _reasoning_text(item: s.ReasoningItem, decrypt: Decrypt) -> str:
    """The reasoning this server sealed (encrypted_content), else the text the item shows."""
    if item.encrypted_content:
        opened = decrypt(item.encrypted_content)
        if opened is not None:
            return opened
    if item.content:
        return "".join(part.text for part in item.content)
    return "".join(part.text for part in item.summary)


def _text(content: str | Sequence[s.ContentPart | s.InputText], param: str) -> str:
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for part in content:
        if isinstance(part, s.MediaPart):
            raise InvalidRequestError(
                f"content parts of type '{part.type}' are not supported: this model reads "
                "text only.", param=param)
        parts.append(part.refusal if isinstance(part, s.Refusal) else part.text)
    return "".join(parts)
