"""Pure conversions between the OpenAI wire types and the engine's types."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal, Protocol, TypeVar

from mlxjan.chat.constraints import apply_tool_choice, check_reasoning_room
from mlxjan.chat.tool_stream import assemble_calls
from mlxjan.errors import InvalidRequestError
from mlxjan.server.openai import schemas as s
from mlxjan.types import (
    DEFAULT_SAMPLING,
    ChatMessage,
    Constraint,
    Delta,
    Finished,
    ForcedToolCall,
    GenerationRequest,
    JsonOutput,
    ReasoningDelta,
    ReasoningOptions,
    SamplingParams,
    TextDelta,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
    Usage,
)

MAX_STOP_STRINGS = 16
N = TypeVar("N", int, float)
# Which message field carries reasoning (settings.reasoning_field).
ReasoningField = Literal["reasoning_content", "reasoning", "both"]


@dataclass(frozen=True)
class CompletionIds:
    """What every chunk and response of one completion repeats."""

    id: str
    created: int
    model: str


def to_generation_request(req: s.ChatCompletionRequest,
                          defaults: SamplingParams = DEFAULT_SAMPLING,
                          default_budget: int | None = None) -> GenerationRequest:
    """`defaults` fills what the request leaves out (the server's default temperature);
    `default_budget` caps reasoning where the request sets no budget."""
    if req.n != 1:
        raise InvalidRequestError("n > 1 is not supported: ask for one choice per request.",
                                  param="n")
    messages = tuple(_message(m, i) for i, m in enumerate(req.messages))
    tools, forced = _tools(req)
    constraint: Constraint | None = forced or _response_format(req.response_format)
    sampling = _sampling(req, defaults)
    return GenerationRequest(model=req.model, messages=messages, sampling=sampling,
                             tools=tools, constraint=constraint,
                             parallel_tool_calls=req.parallel_tool_calls is not False,
                             reasoning=_reasoning(req, sampling, default_budget),
                             template_kwargs=tuple((req.chat_template_kwargs or {}).items()))


def _reasoning(req: s.ChatCompletionRequest, sampling: SamplingParams,
               default_budget: int | None) -> ReasoningOptions:
    """reasoning_effort, or Ollama's `think`, and the budget; a budget must leave room for
    an answer within max_tokens."""
    effort = req.reasoning_effort
    if effort is None and isinstance(req.think, str):
        effort = req.think
    enabled = req.think if isinstance(req.think, bool) else None
    budget = req.reasoning_budget if req.reasoning_budget is not None else default_budget
    check_reasoning_room(req.reasoning_budget, sampling.max_tokens, param="reasoning_budget")
    return ReasoningOptions(enabled=enabled, effort=effort, budget_tokens=budget)


def _tools(req: s.ChatCompletionRequest
           ) -> tuple[tuple[ToolSpec, ...], ForcedToolCall | None]:
    tools = tuple(ToolSpec(t.function.name, t.function.description, t.function.parameters or {})
                  for t in req.tools or ())
    choice = req.tool_choice
    if isinstance(choice, s.NamedToolChoice):
        return apply_tool_choice(tools, "required", choice.function.name)
    return apply_tool_choice(tools, choice or "auto")


def _response_format(fmt: s.ResponseFormat | None) -> JsonOutput | None:
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return JsonOutput()
    if fmt.json_schema is None or fmt.json_schema.schema_ is None:
        raise InvalidRequestError("response_format json_schema needs json_schema.schema.",
                                  param="response_format.json_schema")
    return JsonOutput(fmt.json_schema.schema_)


def _sampling(req: s.ChatCompletionRequest, defaults: SamplingParams) -> SamplingParams:
    if req.top_logprobs and not req.logprobs:
        raise InvalidRequestError("top_logprobs requires logprobs to be true.",
                                  param="top_logprobs")
    return replace(sampling_params(req, defaults, stop_strings(req.stop)),
                   max_tokens=req.max_completion_tokens or req.max_tokens,
                   logprobs=req.logprobs, top_logprobs=req.top_logprobs or 0)


class SamplingFields(Protocol):
    """The sampling fields OpenAI's chat and legacy completions and /infill share."""

    @property
    def temperature(self) -> float | None: ...
    @property
    def top_p(self) -> float | None: ...
    @property
    def top_k(self) -> int | None: ...
    @property
    def min_p(self) -> float | None: ...
    @property
    def seed(self) -> int | None: ...
    @property
    def presence_penalty(self) -> float | None: ...
    @property
    def frequency_penalty(self) -> float | None: ...
    @property
    def repetition_penalty(self) -> float | None: ...


def sampling_params(req: SamplingFields, defaults: SamplingParams,
                    stop: tuple[str, ...]) -> SamplingParams:
    """The request's sampling, each field it leaves out from the server's defaults."""
    return SamplingParams(
        temperature=_pick(req.temperature, defaults.temperature),
        top_p=_pick(req.top_p, defaults.top_p),
        top_k=_pick(req.top_k, defaults.top_k),
        min_p=_pick(req.min_p, defaults.min_p),
        seed=req.seed,
        presence_penalty=_pick(req.presence_penalty, defaults.presence_penalty),
        frequency_penalty=_pick(req.frequency_penalty, defaults.frequency_penalty),
        repetition_penalty=_pick(req.repetition_penalty, defaults.repetition_penalty),
        stop=stop,
    )


def stop_strings(stop: str | Sequence[str] | None) -> tuple[str, ...]:
    stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
    if len(stops) > MAX_STOP_STRINGS or any(len(x) > 512 for x in stops):
        raise InvalidRequestError(
            f"stop: at most {MAX_STOP_STRINGS} strings of at most 512 characters.", param="stop")
    return tuple(x for x in stops if x)


def _pick(value: N | None, default: N) -> N:
    return default if value is None else value


def _message(m: s.SystemMessage | s.UserMessage | s.AssistantMessage | s.ToolMessage,
             index: int) -> ChatMessage:
    param = f"messages.{index}.content"
    if isinstance(m, s.SystemMessage):
        return ChatMessage("system", _text(m.content, param), name=m.name)
    if isinstance(m, s.UserMessage):
        return ChatMessage("user", _text(m.content, param), name=m.name)
    if isinstance(m, s.AssistantMessage):
        calls = tuple(ToolCall(c.id, c.function.name, c.function.arguments)
                      for c in m.tool_calls or ())
        return ChatMessage("assistant", _text(m.content, param), name=m.name, tool_calls=calls,
                           reasoning=m.reasoning_content or m.reasoning or "")
    return ChatMessage("tool", _text(m.content, param), tool_call_id=m.tool_call_id)


def _text(content: str | Sequence[s.TextPart | s.ImagePart] | None, param: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts: list[str] = []
    for part in content:
        if not isinstance(part, s.TextPart):
            raise InvalidRequestError(
                f"content parts of type '{part.type}' are not supported: this model reads "
                "text only.", param=param)
        parts.append(part.text)
    return "".join(parts)


# --- engine events -> responses ------------------------------------------------------------


def usage_out(usage: Usage) -> s.UsageOut:
    return s.UsageOut(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        prompt_tokens_details=s.PromptTokensDetails(cached_tokens=usage.cached_tokens),
        completion_tokens_details=s.CompletionTokensDetails(
            reasoning_tokens=usage.reasoning_tokens),
    )


def _reasoning_fields(text: str | None, field: ReasoningField) -> tuple[str | None, str | None]:
    """The reasoning as (`reasoning_content`, `reasoning`): under the name(s) the server is
    set to send."""
    return (text if field != "reasoning" else None,
            text if field != "reasoning_content" else None)


def logprobs_out(items: Sequence[TokenLogprob]) -> s.ChoiceLogprobs:
    return s.ChoiceLogprobs(content=[
        s.TokenLogprobOut(
            token=t.token, logprob=t.logprob, bytes=list(t.bytes),
            top_logprobs=[s.TopLogprob(token=tok, logprob=lp, bytes=list(raw))
                          for tok, lp, raw in t.top],
        )
        for t in items
    ])


def role_chunk(ids: CompletionIds) -> s.ChatCompletionChunk:
    return _chunk(ids, s.ChunkChoice(delta=s.DeltaMessage(role="assistant", content="")))


def delta_chunk(ids: CompletionIds, delta: Delta, with_logprobs: bool,
                field: ReasoningField = "both") -> s.ChatCompletionChunk:
    if isinstance(delta, ReasoningDelta):
        content, reasoning = _reasoning_fields(delta.text, field)
        return _chunk(ids, s.ChunkChoice(
            delta=s.DeltaMessage(reasoning_content=content, reasoning=reasoning)))
    if isinstance(delta, ToolCallDelta):
        call = s.ToolCallDeltaOut(
            index=delta.index, id=delta.id, type="function" if delta.id else None,
            function=s.FunctionDelta(name=delta.name, arguments=delta.arguments))
        return _chunk(ids, s.ChunkChoice(delta=s.DeltaMessage(tool_calls=[call])))
    logprobs = logprobs_out(delta.logprobs) if with_logprobs else None
    return _chunk(ids, s.ChunkChoice(delta=s.DeltaMessage(content=delta.text),
                                     logprobs=logprobs))


def finish_chunk(ids: CompletionIds, finished: Finished) -> s.ChatCompletionChunk:
    return _chunk(ids, s.ChunkChoice(delta=s.DeltaMessage(), finish_reason=finished.reason))


def usage_chunk(ids: CompletionIds, usage: Usage) -> s.ChatCompletionChunk:
    return s.ChatCompletionChunk(id=ids.id, created=ids.created, model=ids.model, choices=[],
                                 usage=usage_out(usage))


def completion(ids: CompletionIds, deltas: Sequence[Delta], finished: Finished,
               with_logprobs: bool, field: ReasoningField = "both") -> s.ChatCompletion:
    texts = [d for d in deltas if isinstance(d, TextDelta)]
    reasoning_content, reasoning = _reasoning_fields(
        "".join(d.text for d in deltas if isinstance(d, ReasoningDelta)) or None, field)
    logprobs = None
    if with_logprobs:
        logprobs = logprobs_out([lp for d in texts for lp in d.logprobs])
    calls = assemble_calls(d for d in deltas if isinstance(d, ToolCallDelta))
    content = "".join(d.text for d in texts)
    choice = s.Choice(
        message=s.ResponseMessage(
            content=content if content or not calls else None,
            tool_calls=[s.ToolCallOut(id=c.id, function=s.FunctionCallOut(
                name=c.name, arguments=c.arguments)) for c in calls] or None,
            reasoning_content=reasoning_content, reasoning=reasoning),
        logprobs=logprobs,
        finish_reason=finished.reason,
    )
    return s.ChatCompletion(id=ids.id, created=ids.created, model=ids.model, choices=[choice],
                            usage=usage_out(finished.usage))


def _chunk(ids: CompletionIds, choice: s.ChunkChoice) -> s.ChatCompletionChunk:
    return s.ChatCompletionChunk(id=ids.id, created=ids.created, model=ids.model,
                                 choices=[choice])
