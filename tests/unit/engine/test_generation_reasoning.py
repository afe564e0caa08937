"""The Decoder with reasoning: split, counted, closed at its budget, and a redo that
starts again after it, not before."""

from __future__ import annotations

from mlxjan.chat.reasoning import THINK, ReasoningSplitter
from mlxjan.chat.tool_calls import HERMES, call_attempt, declared_tools
from mlxjan.chat.tool_stream import ToolCallSplitter
from mlxjan.engine.generation import Decoder, Reasoning, SampledToken
from mlxjan.types import (
    Event,
    Finished,
    ReasoningDelta,
    SamplingParams,
    TextDelta,
    ToolCallDelta,
    ToolSpec,
)


def decoder(events: list[Event], *, budget: int | None = None, opened: bool = True,
            tools: bool = False, max_new_tokens: int = 100) -> Decoder:
    splitter = None
    redo = None
    if tools:
        declared = declared_tools((ToolSpec("f", None, {"type": "object"}),))
        splitter = ToolCallSplitter(HERMES, declared)
        redo = lambda text: call_attempt(text, HERMES)  # noqa: E731
    return Decoder(SamplingParams(), prompt_tokens=10, cached_tokens=0,
                   max_new_tokens=max_new_tokens, emit=events.append, tool_calls=splitter,
                   reasoning=Reasoning(ReasoningSplitter(THINK, opened=opened), THINK.close,
                                       budget),
                   redo_check=redo)


def texts(events: list[Event]) -> tuple[str, str]:
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    answer = "".join(e.text for e in events if isinstance(e, TextDelta))
    return reasoning, answer


def finished(events: list[Event]) -> Finished:
    assert isinstance(events[-1], Finished)
    return events[-1]


def push_all(d: Decoder, *pieces: str, forced: bool = False) -> None:
    for piece in pieces:
        assert not d.push(SampledToken(piece.encode(), forced=forced))


def test_reasoning_is_split_and_counted_with_its_end_marker() -> None:
    events: list[Event] = []
    d = decoder(events)
    push_all(d, "Two", " and", " three", "</think>", "\n\n", "5")
    assert d.answer_start == 4  # the answer begins right after the marker
    d.push(SampledToken(b"", end_of_generation=True))
    d.finish()
    assert texts(events) == ("Two and three", "5")
    usage = finished(events).usage
    assert (usage.reasoning_tokens, usage.completion_tokens) == (4, 6)


def test_the_budget_asks_for_the_end_marker_once_and_the_answer_follows() -> None:
    events: list[Event] = []
    d = decoder(events, budget=3)
    push_all(d, "a", " b")
    assert d.take_forced() == ""
    push_all(d, " c")
    assert d.take_forced() == THINK.close
    assert d.take_forced() == ""  # asked once
    push_all(d, *THINK.close, forced=True)  # one token a character, as written
    assert not d.reasoning and d.answer_start is not None
    assert d.take_forced() == ""  # not asked again while the marker was being written
    push_all(d, "5")
    d.push(SampledToken(b"", end_of_generation=True))
    d.finish()
    assert texts(events) == ("a b c", "5")
    usage = finished(events).usage
    assert usage.reasoning_tokens == 3  # the forced marker is not the model's reasoning
    assert usage.completion_tokens == 3 + len(THINK.close) + 1


def test_a_budget_of_zero_closes_a_block_the_model_opens() -> None:
    events: list[Event] = []
    d = decoder(events, budget=0, opened=False)
    push_all(d, "<think>")
    assert d.take_forced() == THINK.close


def test_reasoning_that_ends_within_the_budget_is_not_forced() -> None:
    events: list[Event] = []
    d = decoder(events, budget=10)
    push_all(d, "ok", "</think>", "5")
    assert d.take_forced() == ""
    assert d.reasoning_tokens == 2


def test_an_unopened_think_block_that_never_comes_is_all_answer() -> None:
    events: list[Event] = []
    d = decoder(events, opened=False)
    push_all(d, "Hello", " there")
    assert d.answer_start == 1
    d.finish()
    assert texts(events) == ("", "Hello there")
    assert finished(events).usage.reasoning_tokens == 0


def test_a_redo_starts_again_after_the_reasoning() -> None:
    events: list[Event] = []
    d = decoder(events, tools=True)
    push_all(d, "plan", "</think>", "\n")
    push_all(d, '{"name"')
    assert not d.redo_wanted
    d.push(SampledToken(b":"))
    assert d.redo_wanted
    d.push(SampledToken(b"", restart=True))
    assert d.generated == d.answer_start == 2 and not d.redo_wanted
    push_all(d, '<tool_call>{"name": "f", "arguments": {}}</tool_call>')
    d.push(SampledToken(b"", end_of_generation=True))
    d.finish()
    reasoning, answer = texts(events)
    assert (reasoning, answer) == ("plan", "")  # nothing of the first try leaked
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert calls[0].name == "f"
    assert finished(events).reason == "tool_calls"
    assert finished(events).usage.reasoning_tokens == 2


def test_without_reasoning_the_answer_starts_at_once() -> None:
    events: list[Event] = []
    d = Decoder(SamplingParams(), prompt_tokens=1, cached_tokens=0, max_new_tokens=5,
                emit=events.append)
    assert d.answer_start == 0 and not d.reasoning


def test_an_end_inside_the_reasoning_asks_for_the_marker_so_an_answer_comes() -> None:
    events: list[Event] = []
    d = decoder(events)
    push_all(d, "It", " is", " 5")
    assert not d.push(SampledToken(b"", end_of_generation=True))  # not the end yet
    assert d.take_forced() == THINK.close
    push_all(d, THINK.close, forced=True)
    push_all(d, "5")
    assert d.push(SampledToken(b"", end_of_generation=True))  # now it is
    d.finish()
    assert texts(events) == ("It is 5", "5")
    assert finished(events).reason == "stop"


def test_an_end_inside_the_reasoning_ends_it_once_the_marker_was_written() -> None:
    events: list[Event] = []
    d = decoder(events, max_new_tokens=3)
    push_all(d, "a", " b")
    assert d.push(SampledToken(b" c"))  # no room left
    d.finish()
    assert texts(events) == ("a b c", "")
    events.clear()
    d = decoder(events, budget=1)
    push_all(d, "a")
    assert d.take_forced() == THINK.close
    assert d.push(SampledToken(b"", end_of_generation=True))  # asked for once already
