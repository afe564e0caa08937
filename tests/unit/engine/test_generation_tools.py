"""The decode loop with tool-call splitting, and an answer restarted under a grammar."""

from __future__ import annotations

import json
import threading

from mlxjan.chat.tool_calls import HERMES, call_attempt, declared_tools
from mlxjan.chat.tool_stream import ToolCallSplitter, assemble_calls
from mlxjan.engine.generation import SampledToken, decode_loop
from mlxjan.types import Event, Finished, SamplingParams, TextDelta, ToolCallDelta, ToolSpec

TOOLS = (ToolSpec("get_weather", parameters={
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),)


def run(pieces: list[SampledToken]) -> list[Event]:
    events: list[Event] = []
    decode_loop(iter(pieces), SamplingParams(), prompt_tokens=5, cached_tokens=0,
                max_new_tokens=100, emit=events.append, cancelled=threading.Event(),
                tool_calls=ToolCallSplitter(HERMES, declared_tools(TOOLS)))
    return events


def test_a_restart_discards_the_held_attempt_and_counts_only_the_new_answer() -> None:
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    pieces = [SampledToken(b"```json\n"), SampledToken(b'{"name": "nope"'),
              SampledToken(b"", restart=True),
              *(SampledToken(c.encode()) for c in call),
              SampledToken(b"", end_of_generation=True)]
    events = run(pieces)
    assert not [e for e in events if isinstance(e, TextDelta)]
    calls = assemble_calls(e for e in events if isinstance(e, ToolCallDelta))
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"})]
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.reason == "tool_calls"
    assert finished.usage.completion_tokens == len(call)


def test_plain_text_with_tools_declared_streams_as_text() -> None:
    events = run([SampledToken(b"It is "), SampledToken(b"sunny."),
                  SampledToken(b"", end_of_generation=True)])
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "It is sunny."
    assert isinstance(events[-1], Finished) and events[-1].reason == "stop"


def test_call_attempt_recognises_the_starts_the_splitter_holds() -> None:
    assert call_attempt('```json\n{\n  "name": "hello.txt"', HERMES) is True
    assert call_attempt('<tool_call>\n{"name":', HERMES) is True
    assert call_attempt(' {"name": "x"', HERMES) is True
    assert call_attempt("<tool", HERMES) is None
    assert call_attempt("", HERMES) is None
    assert call_attempt("Sure, here you go", HERMES) is False
    assert call_attempt("{" + " " * 200, HERMES) is False  # past the window: give up


def test_splitter_reset_only_before_any_call() -> None:
    splitter = ToolCallSplitter(HERMES, declared_tools(TOOLS))
    assert splitter.feed('```json\n{"name": "x"') == []
    splitter.reset()
    out = splitter.feed("Hello") + splitter.finish()
    assert out == [TextDelta("Hello")]


def test_with_one_call_allowed_generation_stops_right_after_it() -> None:
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    pieces = [*(SampledToken(c.encode()) for c in call), SampledToken(b"\n"),
              *(SampledToken(c.encode()) for c in call.replace("Paris", "Rome"))]
    events: list[Event] = []
    decode_loop(iter(pieces), SamplingParams(stop=("\n\n",)), prompt_tokens=5, cached_tokens=0,
                max_new_tokens=1000, emit=events.append, cancelled=threading.Event(),
                tool_calls=ToolCallSplitter(HERMES, declared_tools(TOOLS), max_calls=1))
    calls = assemble_calls(e for e in events if isinstance(e, ToolCallDelta))
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"})]
    finished = events[-1]
    assert isinstance(finished, Finished)
    assert (finished.reason, finished.stop_sequence) == ("tool_calls", None)
    assert finished.usage.completion_tokens == len(call)  # nothing was read after the call
