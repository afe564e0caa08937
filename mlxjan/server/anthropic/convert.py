"""Pure conversions between Anthropic Messages wire types and the engine's types."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from mlxjan.chat.constraints import apply_tool_choice, check_reasoning_room
from mlxjan.chat.tool_stream import assemble_calls
from mlxjan.errors import InvalidRequestError, ModelNotFoundError
from mlxjan.server.anthropic import schemas as s
from mlxjan.server.signing import Signer
from mlxjan.settings import Settings
from mlxjan.types import (
    DEFAULT_SAMPLING,
    ChatMessage,
    Delta,
    Finished,
    FinishReason,
    ForcedToolCall,
    GenerationRequest,
    ReasoningDelta,
    ReasoningEffort,
    ReasoningOptions,
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
# Which thinking types ask for thinking (Anthropic: none unless asked; between_tools is off).
THINKING_ON: dict[s.ThinkingType, bool] = {
    "enabled": True, "adaptive": True, "disabled": False, "between_tools": False,
}
# output_config.effort -> the engine's effort; values not listed are ignored.
EFFORTS: dict[str, ReasoningEffort] = {
    "low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high",
}
# Whether a history thinking block's (text, signature) is this server's, for this model.
Trusts = Callable[[str, str], bool]


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
                          defaults: SamplingParams = DEFAULT_SAMPLING, *,
                          signer: Signer | None = None,
                          reasoning_budget: int | None = None) -> GenerationRequest:
    """`defaults` fills what the request leaves out (the server's default temperature);
    `reasoning_budget` is the server's budget for adaptive thinking. History thinking blocks
    whose signature `signer` verifies for `model_id` are the turn's reasoning; any other is
    plain text of that turn (no signer: none is trusted)."""
    messages: list[ChatMessage] = []
    system = system_text(req.system)
    if system:
        messages.append(ChatMessage("system", system))
    trusts = _trusts(signer, model_id)
    for index, message in enumerate(req.messages):
        messages.extend(_convert_message(message, index, trusts))
    tools, forced = _tools(req)
    sampling = _sampling(req, defaults) if isinstance(req, s.MessagesRequest) else defaults
    reasoning = reasoning_options(req.thinking, req.output_config, sampling.max_tokens,
                                  reasoning_budget)
    single = req.tool_choice is not None and req.tool_choice.disable_parallel_tool_use is True
    return GenerationRequest(model=model_id, messages=tuple(messages), sampling=sampling,
                             tools=tools, constraint=forced, parallel_tool_calls=not single,
                             reasoning=reasoning)


def reasoning_options(thinking: s.ThinkingConfig | None, output: s.OutputConfig | None,
                      max_tokens: int | None, server_budget: int | None) -> ReasoningOptions:
    """No thinking unless asked. `enabled` brings its own budget, which must leave room to
    answer within max_tokens; `adaptive` (and `enabled` without one) gets the server's."""
    if thinking is None or not THINKING_ON[thinking.type]:
        return ReasoningOptions(enabled=False)
    effort = EFFORTS.get(output.effort or "") if output is not None else None
    budget = thinking.budget_tokens if thinking.type == "enabled" else None
    if budget is None:
        return ReasoningOptions(enabled=True, effort=effort, budget_tokens=server_budget)
    check_reasoning_room(budget, max_tokens, param="thinking.budget_tokens")
    return ReasoningOptions(enabled=True, effort=effort, budget_tokens=budget)


def _trusts(signer: Signer | None, model_id: str) -> Trusts:
    if signer is None:
        return lambda _text, _signature: False
    return lambda text, signature: signer.verify(text, signature, context=model_id)


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


def _convert_message(message: s.Message, index: int, trusts: Trusts) -> list[ChatMessage]:
    """One wire message as chat messages; tool results first, right after the call.

    An assistant's thinking blocks that `trusts` are its reasoning; any other thinking text
    (unsigned, forged, another server's or model's) goes first in its text, as plain words.
    redacted_thinking is dropped: a local template has nowhere to put it."""
    if isinstance(message.content, str):
        return [ChatMessage(message.role, message.content)]
    texts: list[str] = []
    reasoning: list[str] = []
    untrusted: list[str] = []
    calls: list[ToolCall] = []
    results: list[ChatMessage] = []
    for block_index, block in enumerate(message.content):
        if isinstance(block, s.ThinkingBlock):
            own = message.role == "assistant" and block.signature is not None \
                and trusts(block.thinking, block.signature)
            (reasoning if own else untrusted).append(block.thinking)
            continue
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
    text = ("" if message.role == "assistant" else "\n").join(texts)
    text = "\n\n".join(part for part in (*untrusted, text) if part)
    thought = "\n".join(part for part in reasoning if part)
    out = list(results)
    if text or calls or thought or not results:
        out.append(ChatMessage(message.role, text, tool_calls=tuple(calls), reasoning=thought))
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


@dataclass(frozen=True)
class ThinkingOutput:
    """How an answer's reasoning goes out: as thinking blocks sealed for this model."""

    signer: Signer
    model_id: str  # the local model the seals are bound to
    shown: bool = True  # False (display "omitted"): the blocks' text is left out

    def text(self, reasoning: str) -> str:
        return reasoning if self.shown else ""

    def block(self, reasoning: str) -> s.ThinkingOut:
        """The block for this reasoning, its seal over the text the client receives."""
        text = self.text(reasoning)
        return s.ThinkingOut(thinking=text, signature=self.seal(text))

    def seal(self, text: str) -> str:
        return self.signer.sign(text, context=self.model_id)


def thinking_output(thinking: s.ThinkingConfig | None, signer: Signer, model_id: str
                    ) -> ThinkingOutput | None:
    """None when thinking is off: any reasoning the model writes is then dropped."""
    if thinking is None or not THINKING_ON[thinking.type]:
        return None
    return ThinkingOutput(signer, model_id, shown=thinking.display != "omitted")


def message(message_id: str, model: str, deltas: Sequence[Delta], finished: Finished,
            thinking: ThinkingOutput | None = None) -> s.MessageOut:
    """The whole answer: its thinking first (one block, when asked for and written), then
    its text, then its tool calls."""
    content: list[s.ThinkingOut | s.TextOut | s.ToolUseOut] = []
    reasoning = "".join(d.text for d in deltas if isinstance(d, ReasoningDelta))
    if thinking is not None and reasoning:
        content.append(thinking.block(reasoning))
    text = "".join(d.text for d in deltas if isinstance(d, TextDelta))
    if text:
        content.append(s.TextOut(text=text))
    for call in assemble_calls(d for d in deltas if isinstance(d, ToolCallDelta)):
        content.append(s.ToolUseOut(id=tool_use_id(call.id), name=call.name,
                                    input=json.loads(call.arguments or "{}")))
    usage: Usage = finished.usage
    return s.MessageOut(
        id=message_id, model=model, content=content,
        stop_reason=stop_reason(finished), stop_sequence=finished.stop_sequence,
        usage=usage_out(usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens),
    )
