"""RepeatGuard: an answer that only repeats answered tool calls is given again in words."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from mlxjan.chat.tool_stream import assemble_calls
from mlxjan.engine.repeat_guard import (
    WORDS_MAX_TOKENS,
    RepeatGuard,
    answered_calls,
    in_words,
    only_repeats,
)
from mlxjan.testing.fake_engine import FakeEngine
from mlxjan.types import (
    ChatMessage,
    Event,
    Finished,
    ForcedToolCall,
    GenerationRequest,
    SamplingParams,
    Started,
    TextAnswer,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
)

TOOLS = (ToolSpec("get_weather", parameters={
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),)
ASK = ChatMessage("user", "What is the weather in Paris?")
PARIS = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
CALLED = ChatMessage("assistant", "", tool_calls=(PARIS,))
RESULT = ChatMessage("tool", '{"temperature": 18}', tool_call_id="call_1")
ROUND_TRIP = (ASK, CALLED, RESULT)
ANSWER = "It is 18 degrees in Paris."


def call_text(city: str) -> str:
    call = {"name": "get_weather", "arguments": {"city": city}}
    return f"<tool_call>\n{json.dumps(call)}\n</tool_call>"


@pytest.fixture
def engine() -> Iterator[FakeEngine]:
    fake = FakeEngine("m")
    yield fake
    asyncio.run(fake.aclose())


def run(engine: FakeEngine, request: GenerationRequest) -> list[Event]:
    async def collect() -> list[Event]:
        return [event async for event in RepeatGuard(engine).stream(request)]

    return asyncio.run(collect())


def outcome(events: list[Event]) -> tuple[str, list[tuple[str, Any]], str]:
    assert isinstance(events[0], Started) and isinstance(events[-1], Finished)
    assert sum(isinstance(e, Started) for e in events) == 1
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    calls = assemble_calls(e for e in events if isinstance(e, ToolCallDelta))
    return text, [(c.name, json.loads(c.arguments)) for c in calls], events[-1].reason


def repeat_with_tools(request: GenerationRequest) -> str:
    return call_text("Paris") if request.tools else ANSWER


def test_a_repeated_answered_call_is_answered_in_words(engine: FakeEngine) -> None:
    engine.script = repeat_with_tools
    events = run(engine, GenerationRequest("m", ROUND_TRIP, tools=TOOLS))
    assert outcome(events) == (ANSWER, [], "stop")
    first, second = engine.requests
    assert second == in_words(first)
    assert (second.tools, second.constraint) == ((), TextAnswer())
    # Usage: the prompt the client sent, the tokens of the answer it got.
    started, finished = events[0], events[-1]
    assert isinstance(started, Started) and isinstance(finished, Finished)
    assert finished.usage.prompt_tokens == started.prompt_tokens
    assert finished.usage.completion_tokens == len(ANSWER.split())


@pytest.mark.parametrize(("messages", "script", "calls"), [
    pytest.param(ROUND_TRIP, call_text("Rome"), [("get_weather", {"city": "Rome"})],
                 id="other-arguments"),
    pytest.param(ROUND_TRIP, call_text("Paris") + call_text("Rome"),
                 [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"})],
                 id="a-repeat-and-a-new-call"),
    pytest.param((ASK, CALLED), call_text("Paris"), [("get_weather", {"city": "Paris"})],
                 id="call-not-answered"),
    pytest.param((ASK, CALLED, ChatMessage("tool", "18", tool_call_id="call_other")),
                 call_text("Paris"), [("get_weather", {"city": "Paris"})],
                 id="result-for-another-call"),
    pytest.param((ASK,), call_text("Paris"), [("get_weather", {"city": "Paris"})],
                 id="first-turn"),
])
def test_other_calls_pass(engine: FakeEngine, messages: tuple[ChatMessage, ...], script: str,
                          calls: list[tuple[str, Any]]) -> None:
    engine.script = lambda _request: script
    events = run(engine, GenerationRequest("m", messages, tools=TOOLS))
    assert outcome(events) == ("", calls, "tool_calls")
    assert len(engine.requests) == 1


def test_text_before_a_repeat_passes(engine: FakeEngine) -> None:
    engine.script = lambda _request: "Once more: " + call_text("Paris")
    text, calls, reason = outcome(run(engine, GenerationRequest("m", ROUND_TRIP, tools=TOOLS)))
    assert (text.strip(), calls, reason) == ("Once more:", [("get_weather", {"city": "Paris"})],
                                             "tool_calls")
    assert len(engine.requests) == 1


def test_a_forced_call_is_never_replaced(engine: FakeEngine) -> None:
    engine.script = repeat_with_tools
    request = GenerationRequest("m", ROUND_TRIP, tools=TOOLS, constraint=ForcedToolCall())
    assert outcome(run(engine, request))[1] == [("get_weather", {"city": "Paris"})]
    assert len(engine.requests) == 1


def test_a_plain_answer_passes(engine: FakeEngine) -> None:
    engine.script = lambda _request: ANSWER
    assert outcome(run(engine, GenerationRequest("m", ROUND_TRIP, tools=TOOLS))) == (
        ANSWER, [], "stop")
    assert len(engine.requests) == 1


def test_answered_calls_are_the_last_assistant_turns_with_results() -> None:
    rome = ToolCall("call_2", "get_weather", '{"city":"Rome"}')
    both = ChatMessage("assistant", "", tool_calls=(PARIS, rome))
    assert answered_calls((ASK, both, RESULT)) == [("get_weather", {"city": "Paris"})]
    older = (ASK, CALLED, RESULT, ChatMessage("assistant", "It is 18."), ASK)
    assert answered_calls(older) == []
    assert answered_calls((ASK,)) == []


def test_arguments_compare_as_data() -> None:
    answered = [("get_weather", {"city": "Paris", "unit": "C"})]
    spaced = ToolCall("x", "get_weather", '{ "unit":"C",  "city": "Paris" }')
    assert only_repeats([spaced], answered)
    assert not only_repeats([], answered)
    assert not only_repeats([ToolCall("x", "get_weather", "not json")], answered)


@pytest.mark.parametrize(("asked", "limit"), [(None, WORDS_MAX_TOKENS), (50, 50),
                                              (10 * WORDS_MAX_TOKENS, WORDS_MAX_TOKENS)])
def test_the_answer_in_words_has_a_bound(engine: FakeEngine, asked: int | None,
                                         limit: int) -> None:
    """Codex sets no max tokens: a words answer that rambles must still end."""
    engine.script = repeat_with_tools
    request = GenerationRequest("m", ROUND_TRIP, tools=TOOLS,
                                sampling=SamplingParams(max_tokens=asked))
    run(engine, request)
    assert engine.requests[-1].sampling.max_tokens == limit
