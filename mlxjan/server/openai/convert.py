"""Pure conversions between the OpenAI wire types and the engine's types."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from mlxjan.engine.base import (
    ChatMessage,
    Finished,
    GenerationRequest,
    SamplingParams,
    TextDelta,
    TokenLogprob,
    ToolCall,
    Usage,
)
from mlxjan.errors import InvalidRequestError
from mlxjan.server.openai import schemas as s

MAX_STOP_STRINGS = 16
N = TypeVar("N", int, float)


@dataclass(frozen=True)
class CompletionIds:
    """What every chunk and response of one completion repeats."""

    id: str
    created: int
    model: str


def to_generation_request(req: s.ChatCompletionRequest) -> GenerationRequest:
    if req.n != 1:
        raise InvalidRequestError("n > 1 is not supported: ask for one choice per request.",
                                  param="n")
    if req.response_format is not None and req.response_format.type != "text":
        raise InvalidRequestError(
            f"response_format type '{req.response_format.type}' is not supported yet.",
            param="response_format")
    messages = tuple(_message(m, i) for i, m in enumerate(req.messages))
    tools = tuple(t.model_dump(exclude_none=True) for t in req.tools or ())
    return GenerationRequest(model=req.model, messages=messages, sampling=_sampling(req),
                             tools=tools)


def _sampling(req: s.ChatCompletionRequest) -> SamplingParams:
    defaults = SamplingParams()
    stops = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    if len(stops) > MAX_STOP_STRINGS or any(len(x) > 512 for x in stops):
        raise InvalidRequestError(
            f"stop: at most {MAX_STOP_STRINGS} strings of at most 512 characters.", param="stop")
    if req.top_logprobs and not req.logprobs:
        raise InvalidRequestError("top_logprobs requires logprobs to be true.",
                                  param="top_logprobs")
    return SamplingParams(
        max_tokens=req.max_completion_tokens or req.max_tokens,
        temperature=_pick(req.temperature, defaults.temperature),
        top_p=_pick(req.top_p, defaults.top_p),
        top_k=_pick(req.top_k, defaults.top_k),
        min_p=_pick(req.min_p, defaults.min_p),
        seed=req.seed,
        presence_penalty=_pick(req.presence_penalty, defaults.presence_penalty),
        frequency_penalty=_pick(req.frequency_penalty, defaults.frequency_penalty),
        repetition_penalty=_pick(req.repetition_penalty, defaults.repetition_penalty),
        stop=tuple(x for x in stops if x),
        logprobs=req.logprobs,
        top_logprobs=req.top_logprobs or 0,
    )


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
        return ChatMessage("assistant", _text(m.content, param), name=m.name, tool_calls=calls)
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
    )


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


def delta_chunk(ids: CompletionIds, delta: TextDelta, with_logprobs: bool
                ) -> s.ChatCompletionChunk:
    logprobs = logprobs_out(delta.logprobs) if with_logprobs else None
    return _chunk(ids, s.ChunkChoice(delta=s.DeltaMessage(content=delta.text),
                                     logprobs=logprobs))


def finish_chunk(ids: CompletionIds, finished: Finished) -> s.ChatCompletionChunk:
    return _chunk(ids, s.ChunkChoice(delta=s.DeltaMessage(), finish_reason=finished.reason))


def usage_chunk(ids: CompletionIds, usage: Usage) -> s.ChatCompletionChunk:
    return s.ChatCompletionChunk(id=ids.id, created=ids.created, model=ids.model, choices=[],
                                 usage=usage_out(usage))


def completion(ids: CompletionIds, deltas: Sequence[TextDelta], finished: Finished,
               with_logprobs: bool) -> s.ChatCompletion:
    logprobs = None
    if with_logprobs:
        logprobs = logprobs_out([lp for d in deltas for lp in d.logprobs])
    choice = s.Choice(
        message=s.ResponseMessage(content="".join(d.text for d in deltas)),
        logprobs=logprobs,
        finish_reason=finished.reason,
    )
    return s.ChatCompletion(id=ids.id, created=ids.created, model=ids.model, choices=[choice],
                            usage=usage_out(finished.usage))


def _chunk(ids: CompletionIds, choice: s.ChunkChoice) -> s.ChatCompletionChunk:
    return s.ChatCompletionChunk(id=ids.id, created=ids.created, model=ids.model,
                                 choices=[choice])
