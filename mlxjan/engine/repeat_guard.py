"""A tool call that repeats one just answered is not a call: the model answers in words.

Small models answer a tool result by writing the same call again. The default model
(Qwen2.5-Coder 0.5B), given `call -> tool result` rendered exactly as its template renders it,
puts about 99% of its first token on `{"` and repeats the call, whatever the question, the
result's shape or the system prompt, and with tools left out of the prompt too. An agent then
loops: same call, same result, same call. The same name with the same arguments cannot bring
anything new, so under `tool_choice: auto` an answer made only of calls that repeat the last
assistant turn's answered calls is dropped and generated again in words: with the tools left
out of the prompt (as for `tool_choice: none`) and the TextAnswer constraint, since without it
the model still writes the JSON. Other calls, and answers that start with text, pass as they are.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import replace
from typing import Any

from mlxjan.chat.tool_stream import assemble_calls
from mlxjan.engine.base import Engine, EngineStatus
from mlxjan.types import (
    ChatMessage,
    Event,
    Finished,
    GenerationRequest,
    Started,
    TextAnswer,
    ToolCall,
    ToolCallDelta,
)

log = logging.getLogger(__name__)
Signature = tuple[str, Any]  # a call's name and its parsed arguments
# What an answer in words may spend: enough to say what the tool results say.
WORDS_MAX_TOKENS = 1024


def answered_calls(messages: Sequence[ChatMessage]) -> list[Signature]:
    """The calls of the last assistant turn whose results follow it in the conversation."""
    turns = [i for i, m in enumerate(messages) if m.role == "assistant"]
    if not turns:
        return []
    last = turns[-1]
    results = {m.tool_call_id for m in messages[last + 1:] if m.role == "tool"}
    return [_signature(c) for c in messages[last].tool_calls if c.id in results]


def only_repeats(calls: Sequence[ToolCall], answered: Sequence[Signature]) -> bool:
    return bool(calls) and all(_signature(c) in answered for c in calls)


def _signature(call: ToolCall) -> Signature:
    # Compared as data: the client may send back the arguments spaced or ordered otherwise.
    try:
        return call.name, json.loads(call.arguments or "{}")
    except json.JSONDecodeError:
        return call.name, call.arguments


def in_words(request: GenerationRequest) -> GenerationRequest:
    """The request again, to be answered without tools and not opening with a call, in at
    most WORDS_MAX_TOKENS: a model pushed off its loop may ramble instead (seen with Codex,
    which sets no limit: the words ran on toward the end of a 32k context)."""
    limit = min(request.sampling.max_tokens or WORDS_MAX_TOKENS, WORDS_MAX_TOKENS)
    return replace(request, tools=(), constraint=TextAnswer(),
                   sampling=replace(request.sampling, max_tokens=limit))


class RepeatGuard:
    """An Engine that answers in words where the wrapped one would repeat answered calls."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.model_id = engine.model_id

    def stream(self, request: GenerationRequest) -> AsyncIterator[Event]:
        answered = answered_calls(request.messages)
        if not answered or not request.tools or request.constraint is not None:
            return self._engine.stream(request)  # forced or constrained answers are kept
        return self._guarded(request, answered)

    async def _guarded(self, request: GenerationRequest, answered: list[Signature]
                       ) -> AsyncGenerator[Event, None]:
        started: Started | None = None
        held: list[ToolCallDelta] | None = []  # calls so far; None once anything else came
        first = self._engine.stream(request)
        try:
            async for event in first:
                if isinstance(event, ToolCallDelta) and held is not None:
                    held.append(event)
                    continue
                if (isinstance(event, Finished) and held
                        and only_repeats(assemble_calls(held), answered)):
                    break
                if isinstance(event, Started):
                    started = event
                else:
                    for call in held or ():
                        yield call
                    held = None
                yield event
            else:
                return
        finally:
            await _close(first)
        log.info("%s: the answer only repeated answered tool calls; answering in words",
                 request.model)
        async for event in self._in_words(request, started):
            yield event

    async def _in_words(self, request: GenerationRequest, started: Started | None
                        ) -> AsyncGenerator[Event, None]:
        second = self._engine.stream(in_words(request))
        try:
            async for event in second:
                if isinstance(event, Started):
                    continue  # the client has had the first one
                if isinstance(event, Finished) and started is not None:
                    # Usage counts the prompt the client sent (as count_tokens does), not
                    # the shorter one without tools, and only the tokens of this answer.
                    event = replace(event, usage=replace(
                        event.usage, prompt_tokens=started.prompt_tokens,
                        cached_tokens=started.cached_tokens))
                yield event
        finally:
            await _close(second)

    async def count_tokens(self, request: GenerationRequest) -> int:
        return await self._engine.count_tokens(request)

    async def load(self) -> None:
        await self._engine.load()

    async def unload(self) -> None:
        await self._engine.unload()

    def health(self) -> EngineStatus:
        return self._engine.health()

    async def aclose(self) -> None:
        await self._engine.aclose()


async def _close(events: AsyncIterator[Event]) -> None:
    # Closing an engine's stream cancels its job, so the engine is free for the next one.
    if isinstance(events, AsyncGenerator):
        await events.aclose()
