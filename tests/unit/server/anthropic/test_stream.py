"""MessageStream: Anthropic's streaming event grammar over engine events."""

from __future__ import annotations

from typing import Any

import pytest

from mlxjan.server.anthropic.stream import MessageStream
from mlxjan.types import Finished, Started, TextDelta, ToolCallDelta, Usage

Events = list[tuple[str, dict[str, Any]]]


def run(started: Started, deltas: list[str], finished: Finished) -> Events:
    """Drive a stream and return (event name, payload as sent on the wire)."""
    stream = MessageStream("msg_1", "claude-sonnet-4-5")
    raw = list(stream.start(started))
    for text in deltas:
        raw.extend(stream.on_delta(TextDelta(text)))
    assert not stream.finished
    raw.extend(stream.finish(finished))
    assert stream.finished
    return [(name, payload.model_dump(mode="json")) for name, payload in raw]


def check_grammar(events: Events) -> list[str]:
    """Assert Anthropic's event grammar; return the text of each content block."""
    names = [name for name, _ in events]
    for name, payload in events:
        assert payload["type"] == name
    assert names[0] == "message_start"
    assert names[-2:] == ["message_delta", "message_stop"]
    assert names.count("message_start") == names.count("message_delta") == 1
    assert names.count("message_stop") == 1

    blocks: list[str] = []
    open_index: int | None = None
    for name, payload in events[1:-2]:
        if name == "content_block_start":
            assert open_index is None, "a block opened while another is open"
            assert payload["index"] == len(blocks), "indices start at 0 and go up by one"
            assert payload["content_block"] == {"type": "text", "text": ""}
            open_index = payload["index"]
            blocks.append("")
        elif name == "content_block_delta":
            assert open_index is not None, "a delta outside an open block"
            assert payload["index"] == open_index
            assert payload["delta"]["type"] == "text_delta"
            assert payload["delta"]["text"], "no empty deltas on the wire"
            blocks[open_index] += payload["delta"]["text"]
        elif name == "content_block_stop":
            assert open_index is not None, "a block closed twice or never opened"
            assert payload["index"] == open_index
            open_index = None
        else:
            pytest.fail(f"unexpected event {name} inside the message")
    assert open_index is None, "a block left open at message_delta"
    assert all(blocks), "every opened block is filled"
    return blocks


SEQUENCES = [
    pytest.param([], id="no-text"),
    pytest.param([""], id="only-empty-delta"),
    pytest.param(["", "", ""], id="only-empty-deltas"),
    pytest.param(["Hello"], id="one-delta"),
    pytest.param(["Hel", "lo", ",", " wor", "ld", "!"], id="many-deltas"),
    pytest.param(["", "Hi", "", "", " there", ""], id="empty-deltas-between"),
    pytest.param(["ünï", "cødé ✓", "\n\n", "🙂"], id="unicode-and-newlines"),
]


@pytest.mark.parametrize("deltas", SEQUENCES)
@pytest.mark.parametrize("finished", [
    Finished("stop", Usage(30, 5, 12)),
    Finished("length", Usage(30, 5, 12)),
    Finished("stop", Usage(30, 5, 12), stop_sequence="END"),
])
def test_stream_invariants(deltas: list[str], finished: Finished) -> None:
    events = run(Started(prompt_tokens=30, cached_tokens=12), deltas, finished)
    blocks = check_grammar(events)
    text = "".join(deltas)
    assert blocks == ([text] if text else [])
    deltas_sent = [p for n, p in events if n == "content_block_delta"]
    assert len(deltas_sent) == sum(1 for d in deltas if d)


def test_message_start() -> None:
    events = run(Started(prompt_tokens=30, cached_tokens=12), ["hi"],
                 Finished("stop", Usage(30, 1, 12)))
    name, payload = events[0]
    assert name == "message_start"
    assert payload == {"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 18, "output_tokens": 0, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 12}}}


def test_message_start_without_cache() -> None:
    events = run(Started(prompt_tokens=7), [], Finished("stop", Usage(7, 0)))
    usage = events[0][1]["message"]["usage"]
    assert (usage["input_tokens"], usage["cache_read_input_tokens"]) == (7, 0)


def test_exact_event_sequence_for_one_block() -> None:
    events = run(Started(10, 4), ["Hel", "", "lo"], Finished("stop", Usage(10, 2, 4)))
    assert events[1:] == [
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "Hel"}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "lo"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta",
                           "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"input_tokens": 6, "output_tokens": 2,
                                     "cache_creation_input_tokens": 0,
                                     "cache_read_input_tokens": 4}}),
        ("message_stop", {"type": "message_stop"}),
    ]


def test_no_text_sends_no_content_block() -> None:
    events = run(Started(10), ["", ""], Finished("length", Usage(10, 0)))
    assert [name for name, _ in events] == ["message_start", "message_delta", "message_stop"]


@pytest.mark.parametrize(("finished", "reason", "sequence"), [
    (Finished("stop", Usage(9, 4, 3)), "end_turn", None),
    (Finished("length", Usage(9, 4, 3)), "max_tokens", None),
    (Finished("stop", Usage(9, 4, 3), stop_sequence="\n\nHuman:"), "stop_sequence",
     "\n\nHuman:"),
])
def test_message_delta_carries_stop_and_cumulative_usage(
        finished: Finished, reason: str, sequence: str | None) -> None:
    events = run(Started(prompt_tokens=9, cached_tokens=3), ["a", "b", "c", "d"], finished)
    name, payload = events[-2]
    assert name == "message_delta"
    assert payload["delta"] == {"stop_reason": reason, "stop_sequence": sequence}
    usage = payload["usage"]
    assert usage["output_tokens"] == 4  # the whole message's, not the last delta's
    assert usage["input_tokens"] + usage["cache_read_input_tokens"] + \
        usage["cache_creation_input_tokens"] == 9
    assert usage["cache_read_input_tokens"] == 3
    assert events[-1] == ("message_stop", {"type": "message_stop"})


def test_message_start_and_delta_usage_agree_on_input() -> None:
    events = run(Started(100, 60), ["x"], Finished("stop", Usage(100, 1, 60)))
    start = events[0][1]["message"]["usage"]
    end = events[-2][1]["usage"]
    for key in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"):
        assert start[key] == end[key]


def test_on_delta_returns_nothing_for_empty_text() -> None:
    stream = MessageStream("msg_1", "m")
    stream.start(Started(3))
    assert stream.on_delta(TextDelta("")) == []
    first = stream.on_delta(TextDelta("a"))
    assert [name for name, _ in first] == ["content_block_start", "content_block_delta"]
    assert [name for name, _ in stream.on_delta(TextDelta("b"))] == ["content_block_delta"]
    assert stream.on_delta(TextDelta("")) == []


def test_ping() -> None:
    name, payload = MessageStream.ping()
    assert name == "ping"
    assert payload.model_dump(mode="json") == {"type": "ping"}
    assert payload.model_dump_json() == '{"type":"ping"}'


def test_pings_between_deltas_keep_the_grammar() -> None:
    stream = MessageStream("msg_1", "m")
    raw = list(stream.start(Started(5)))
    raw.append(stream.ping())
    raw.extend(stream.on_delta(TextDelta("a")))
    raw.append(stream.ping())
    raw.extend(stream.on_delta(TextDelta("b")))
    raw.extend(stream.finish(Finished("stop", Usage(5, 2))))
    events = [(n, p.model_dump(mode="json")) for n, p in raw if n != "ping"]
    assert check_grammar(events) == ["ab"]


# --- tool use blocks -------------------------------------------------------------------------


def run_deltas(deltas: list[TextDelta | ToolCallDelta], finished: Finished) -> Events:
    stream = MessageStream("msg_1", "m")
    raw = list(stream.start(Started(20)))
    for delta in deltas:
        raw.extend(stream.on_delta(delta))
    raw.extend(stream.finish(finished))
    return [(name, payload.model_dump(mode="json")) for name, payload in raw]


def blocks_of(events: Events) -> list[dict[str, Any]]:
    """Each block as opened, with its text or its input JSON joined; checks open/close."""
    blocks: list[dict[str, Any]] = []
    open_index: int | None = None
    for name, payload in events[1:-2]:
        if name == "content_block_start":
            assert open_index is None and payload["index"] == len(blocks)
            open_index = payload["index"]
            blocks.append({**payload["content_block"], "partial_json": ""})
        elif name == "content_block_delta":
            assert payload["index"] == open_index
            block, delta = blocks[payload["index"]], payload["delta"]
            if delta["type"] == "text_delta":
                assert block["type"] == "text"
                block["text"] += delta["text"]
            else:
                assert block["type"] == "tool_use" and delta["type"] == "input_json_delta"
                block["partial_json"] += delta["partial_json"]
        elif name == "content_block_stop":
            assert payload["index"] == open_index
            open_index = None
        else:
            pytest.fail(f"unexpected event {name} inside the message")
    assert open_index is None
    return blocks


TOOL_TURN: list[TextDelta | ToolCallDelta] = [
    TextDelta("Let me "),
    TextDelta("check."),
    ToolCallDelta(0, "call_a", "get_weather", ""),
    ToolCallDelta(0, None, None, '{"city": "Paris"}'),
    ToolCallDelta(1, "call_b", "get_time", ""),
    ToolCallDelta(1, None, None, "{}"),
]


def test_text_then_two_tool_calls_make_three_blocks() -> None:
    events = run_deltas(TOOL_TURN, Finished("tool_calls", Usage(20, 12)))
    assert blocks_of(events) == [
        {"type": "text", "text": "Let me check.", "partial_json": ""},
        {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {},
         "partial_json": '{"city": "Paris"}'},
        {"type": "tool_use", "id": "toolu_b", "name": "get_time", "input": {},
         "partial_json": "{}"},
    ]
    names = [name for name, _ in events]
    assert names.count("content_block_start") == names.count("content_block_stop") == 3
    assert events[-2][1]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}


def test_exact_events_for_one_tool_call() -> None:
    events = run_deltas(TOOL_TURN[2:4], Finished("tool_calls", Usage(20, 5)))
    assert events[1:-2] == [
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {
            "type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
            "type": "input_json_delta", "partial_json": '{"city": "Paris"}'}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ]


def test_argument_fragments_stay_in_their_block() -> None:
    deltas: list[TextDelta | ToolCallDelta] = [
        ToolCallDelta(0, "call_a", "get_weather", '{"ci'),
        ToolCallDelta(0, None, None, 'ty": '),
        ToolCallDelta(0, None, None, ""),
        ToolCallDelta(0, None, None, '"Paris"}'),
    ]
    events = run_deltas(deltas, Finished("tool_calls", Usage(20, 5)))
    assert [b["partial_json"] for b in blocks_of(events)] == ['{"city": "Paris"}']
    json_deltas = [p for n, p in events if n == "content_block_delta"]
    assert len(json_deltas) == 3  # no empty input_json_delta


def test_text_after_a_tool_call_opens_a_new_text_block() -> None:
    events = run_deltas([*TOOL_TURN[2:4], TextDelta("Done.")], Finished("stop", Usage(20, 6)))
    assert [(b["type"], b.get("text")) for b in blocks_of(events)] == [
        ("tool_use", None), ("text", "Done.")]
