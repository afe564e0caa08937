"""ResponseStream: the Responses API's event sequence over engine events, each event checked
against the openai SDK's own typed models."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest
from openai.types.responses import ResponseStreamEvent

from mlxjan.errors import (
    ContextLengthExceededError,
    EngineError,
    InvalidRequestError,
    MlxjanError,
    ModelNotFoundError,
    ModelsBusyError,
    OverloadedError,
)
from mlxjan.server.responses import schemas as s
from mlxjan.server.responses.stream import ResponseStream, error_code
from mlxjan.types import (
    Delta,
    Finished,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
)

SDK_EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseStreamEvent)
USAGE = Usage(prompt_tokens=30, completion_tokens=12, cached_tokens=8, reasoning_tokens=5)

Events = list[dict[str, Any]]


def machine(**options: Any) -> ResponseStream:
    return ResponseStream(s.ResponseOut(id="resp_1", created_at=0, status="in_progress",
                                        model="m"), **options)


def wire(event: s.StreamEvent) -> dict[str, Any]:
    """The event as sent, checked against the SDK's model of its type."""
    raw = event.model_dump(mode="json", by_alias=True)
    parsed = SDK_EVENTS.validate_python(raw)
    assert parsed.type == raw["type"]
    return raw


def run(deltas: list[Delta], finished: Finished | None = None, *,
        stream: ResponseStream | None = None, **options: Any) -> Events:
    """Drive a stream from start to finish; return every event as sent."""
    stream = stream or machine(**options)
    raw = stream.start()
    for delta in deltas:
        raw += stream.on_delta(delta)
    raw += stream.finish(finished or Finished("stop", USAGE))
    events = [wire(event) for event in raw]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


def types(events: Events) -> list[str]:
    return [e["type"] for e in events]


def of(events: Events, kind: str) -> Events:
    return [e for e in events if e["type"] == kind]


def call_delta(arguments: str, call_id: str | None = None, name: str | None = None,
               index: int = 0) -> ToolCallDelta:
    return ToolCallDelta(index=index, id=call_id, name=name, arguments=arguments)


# --- lifecycle ---------------------------------------------------------------------------


def test_start_is_created_then_in_progress() -> None:
    events = [wire(e) for e in machine().start()]
    assert types(events) == ["response.created", "response.in_progress"]
    assert [e["sequence_number"] for e in events] == [0, 1]
    for event in events:
        response = event["response"]
        assert (response["id"], response["status"], response["model"]) == (
            "resp_1", "in_progress", "m")
        assert response["output"] == [] and response["usage"] is None


def test_sequence_numbers_count_every_event_of_the_stream() -> None:
    stream = machine(summary=True, seal=lambda text: "sealed")
    batches = [stream.start(), stream.on_delta(ReasoningDelta("hmm")),
               stream.on_delta(TextDelta("")), stream.on_delta(TextDelta("Hi")),
               stream.on_delta(TextDelta("!")),
               stream.on_delta(call_delta("", "call_1", "f")),
               stream.on_delta(call_delta("{}")), stream.finish(Finished("stop", USAGE))]
    numbers = [event.sequence_number for batch in batches for event in batch]
    assert numbers == list(range(len(numbers)))
    assert len(numbers) > 20


# --- a text answer -----------------------------------------------------------------------


def test_a_text_answer_in_full() -> None:
    events = run([TextDelta("Hel"), TextDelta("lo")])
    assert types(events) == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed",
    ]
    added = events[2]
    item_id = added["item"]["id"]
    assert item_id.startswith("msg_")
    assert added["output_index"] == 0
    assert added["item"] == {"type": "message", "id": item_id, "role": "assistant",
                             "status": "in_progress", "content": []}
    assert events[3]["part"]["type"] == "output_text" and events[3]["part"]["text"] == ""
    assert [e["delta"] for e in of(events, "response.output_text.delta")] == ["Hel", "lo"]
    for event in events[3:8]:
        assert (event["item_id"], event["output_index"]) == (item_id, 0)
    assert events[8]["output_index"] == 0
    assert events[6]["text"] == "Hello"
    assert events[7]["part"]["text"] == "Hello"
    done = events[8]["item"]
    assert (done["id"], done["status"]) == (item_id, "completed")
    assert [part["text"] for part in done["content"]] == ["Hello"]
    response = events[9]["response"]
    assert response["status"] == "completed"
    assert response["output"] == [done]
    assert response["completed_at"] is not None


def test_completed_carries_the_usage() -> None:
    response = run([TextDelta("x")], Finished("stop", USAGE))[-1]["response"]
    assert response["usage"] == {
        "input_tokens": 30, "input_tokens_details": {"cached_tokens": 8,
                                                     "cache_write_tokens": 0},
        "output_tokens": 12, "output_tokens_details": {"reasoning_tokens": 5},
        "total_tokens": 42,
    }


def test_empty_deltas_produce_no_events() -> None:
    stream = machine(summary=True)
    stream.start()
    assert stream.on_delta(TextDelta("")) == []
    assert stream.on_delta(ReasoningDelta("")) == []
    assert [e.type for e in stream.on_delta(TextDelta("a"))] == [
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta"]
    assert stream.on_delta(TextDelta("")) == []
    assert stream.on_delta(ReasoningDelta("")) == []  # no reasoning item opened
    assert [e.type for e in stream.on_delta(TextDelta("b"))] == ["response.output_text.delta"]


def test_no_output_is_a_completed_response_without_items() -> None:
    events = run([TextDelta("")])
    assert types(events) == ["response.created", "response.in_progress",
                             "response.completed"]
    assert events[-1]["response"]["output"] == []


def test_the_response_after_finish_is_the_last_events() -> None:
    stream = machine(summary=True, seal=lambda text: "sealed")
    events = run([ReasoningDelta("r"), TextDelta("t"), call_delta("{}", "c1", "f")],
                 stream=stream)
    assert stream.ended
    assert stream.response.model_dump(mode="json", by_alias=True) == events[-1]["response"]
    assert len(stream.response.output) == 3


def test_events_sent_are_snapshots() -> None:
    stream = machine()
    created = stream.start()[0]
    added = stream.on_delta(TextDelta("a"))[0]
    stream.on_delta(TextDelta("b"))
    stream.finish(Finished("stop", USAGE))
    assert isinstance(created, s.ResponseLifecycleEvent)
    assert created.response.status == "in_progress" and created.response.output == []
    assert isinstance(added, s.OutputItemEvent)
    assert added.item.status == "in_progress"


# --- reasoning ---------------------------------------------------------------------------


def test_reasoning_then_text_are_two_items_in_order() -> None:
    events = run([ReasoningDelta("Two and "), ReasoningDelta("two."), TextDelta("4")])
    added = of(events, "response.output_item.added")
    assert [(e["output_index"], e["item"]["type"]) for e in added] == [
        (0, "reasoning"), (1, "message")]
    reasoning_id = added[0]["item"]["id"]
    assert reasoning_id.startswith("rs_")
    assert added[0]["item"]["status"] == "in_progress"
    assert added[0]["item"]["content"] == [] and added[0]["item"]["summary"] == []
    deltas = of(events, "response.reasoning_text.delta")
    assert [(e["delta"], e["item_id"], e["output_index"]) for e in deltas] == [
        ("Two and ", reasoning_id, 0), ("two.", reasoning_id, 0)]
    assert of(events, "response.reasoning_text.done")[0]["text"] == "Two and two."
    done = of(events, "response.output_item.done")
    assert [e["output_index"] for e in done] == [0, 1]
    assert done[0]["item"]["content"] == [{"type": "reasoning_text", "text": "Two and two."}]
    assert done[0]["item"]["status"] == "completed"
    # The reasoning item is done before the message starts.
    assert events.index(done[0]) < events.index(added[1])
    output = events[-1]["response"]["output"]
    assert [item["type"] for item in output] == ["reasoning", "message"]
    assert output[0]["encrypted_content"] is None


def test_no_summary_events_unless_asked() -> None:
    events = run([ReasoningDelta("hmm"), TextDelta("ok")])
    assert not [t for t in types(events) if "summary" in t]
    assert of(events, "response.output_item.done")[0]["item"]["summary"] == []


def test_summary_events_when_asked() -> None:
    events = run([ReasoningDelta("a"), ReasoningDelta("b"), TextDelta("ok")], summary=True)
    reasoning = [t for t in types(events)
                 if "reasoning" in t or t.endswith("content_part.added")
                 or t.endswith("content_part.done")][:9]
    assert reasoning == [
        "response.content_part.added", "response.reasoning_summary_part.added",
        "response.reasoning_text.delta", "response.reasoning_summary_text.delta",
        "response.reasoning_text.delta", "response.reasoning_summary_text.delta",
        "response.reasoning_text.done", "response.content_part.done",
        "response.reasoning_summary_text.done",
    ]
    assert [e["delta"] for e in of(events, "response.reasoning_summary_text.delta")] == [
        "a", "b"]
    assert of(events, "response.reasoning_summary_text.done")[0]["text"] == "ab"
    part_done = of(events, "response.reasoning_summary_part.done")
    assert len(part_done) == 1 and part_done[0]["part"] == {"type": "summary_text",
                                                            "text": "ab"}
    done = of(events, "response.output_item.done")[0]["item"]
    assert done["summary"] == [{"type": "summary_text", "text": "ab"}]
    for event in of(events, "response.reasoning_summary_text.delta"):
        assert (event["output_index"], event["summary_index"]) == (0, 0)


def test_the_seal_of_the_whole_reasoning_is_its_encrypted_content() -> None:
    sealed: list[str] = []

    def seal(text: str) -> str:
        sealed.append(text)
        return f"sealed:{len(sealed)}"

    stream = machine(seal=seal)
    stream.start()
    added = stream.on_delta(ReasoningDelta("think "))
    stream.on_delta(ReasoningDelta("hard"))
    assert sealed == []  # nothing sealed while the item is open
    item = added[0]
    assert isinstance(item, s.OutputItemEvent)
    assert item.item.model_dump(mode="json")["encrypted_content"] is None
    closing = stream.on_delta(TextDelta("answer"))
    assert sealed == ["think hard"]
    done = next(wire(e) for e in closing if e.type == "response.output_item.done")
    assert done["item"]["encrypted_content"] == "sealed:1"
    events = [wire(e) for e in stream.finish(Finished("stop", USAGE))]
    assert events[-1]["response"]["output"][0]["encrypted_content"] == "sealed:1"
    assert sealed == ["think hard"]


# --- function calls ----------------------------------------------------------------------


def test_a_function_call_item() -> None:
    events = run([call_delta("", "call_abc", "get_weather"), call_delta('{"city": '),
                  call_delta('"Paris"}')], Finished("tool_calls", USAGE))
    assert types(events) == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.function_call_arguments.delta", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.completed",
    ]
    added = events[2]["item"]
    assert added["type"] == "function_call" and added["id"].startswith("fc_")
    assert (added["call_id"], added["name"], added["arguments"], added["status"]) == (
        "call_abc", "get_weather", "", "in_progress")
    assert [e["delta"] for e in events[3:5]] == ['{"city": ', '"Paris"}']
    assert all(e["item_id"] == added["id"] for e in events[3:6])
    assert (events[5]["name"], events[5]["arguments"]) == ("get_weather", '{"city": "Paris"}')
    done = events[6]["item"]
    assert (done["call_id"], done["name"], done["arguments"], done["status"]) == (
        "call_abc", "get_weather", '{"city": "Paris"}', "completed")


def test_a_first_delta_with_arguments_sends_them() -> None:
    events = run([call_delta('{"a": 1}', "call_1", "f")])
    assert [e["delta"] for e in of(events, "response.function_call_arguments.delta")] == [
        '{"a": 1}']
    assert of(events, "response.function_call_arguments.done")[0]["arguments"] == '{"a": 1}'


def test_two_calls_are_two_items() -> None:
    events = run([TextDelta("Checking."),
                  call_delta("", "call_1", "get_weather", 0), call_delta('{"city": "A"}', index=0),
                  call_delta("", "call_2", "get_time", 1), call_delta("{}", index=1)],
                 Finished("tool_calls", USAGE))
    done = of(events, "response.function_call_arguments.done")
    assert [(e["output_index"], e["name"], e["arguments"]) for e in done] == [
        (1, "get_weather", '{"city": "A"}'), (2, "get_time", "{}")]
    output = events[-1]["response"]["output"]
    assert [item["type"] for item in output] == ["message", "function_call", "function_call"]
    assert [item.get("call_id") for item in output[1:]] == ["call_1", "call_2"]
    assert output[1]["id"] != output[2]["id"]
    assert all(item["status"] == "completed" for item in output)


# --- how a response ends -----------------------------------------------------------------


def test_max_tokens_is_incomplete() -> None:
    events = run([TextDelta("cut sh")], Finished("length", USAGE))
    assert types(events)[-2:] == ["response.output_item.done", "response.incomplete"]
    assert events[-2]["item"]["status"] == "incomplete"
    assert events[-2]["item"]["content"][0]["text"] == "cut sh"
    response = events[-1]["response"]
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["output"][0]["status"] == "incomplete"
    assert response["usage"]["output_tokens"] == 12


def test_max_tokens_while_reasoning_leaves_earlier_items_completed() -> None:
    events = run([ReasoningDelta("a"), TextDelta("b"), call_delta("{", "c1", "f")],
                 Finished("length", USAGE))
    assert [item["status"] for item in events[-1]["response"]["output"]] == [
        "completed", "completed", "incomplete"]


def test_a_completed_response_has_no_incomplete_details() -> None:
    response = run([TextDelta("x")])[-1]["response"]
    assert response["incomplete_details"] is None and response["error"] is None


@pytest.mark.parametrize(("err", "code"), [
    (ContextLengthExceededError(5000, 4096), "context_length_exceeded"),
    (OverloadedError("busy"), "rate_limit_exceeded"),
    (ModelsBusyError("all models busy"), "rate_limit_exceeded"),
    (InvalidRequestError("bad"), "invalid_prompt"),
    (ModelNotFoundError("nope"), "invalid_prompt"),
    (EngineError("boom"), "server_error"),
    (MlxjanError("boom"), "server_error"),
])
def test_error_code(err: MlxjanError, code: str) -> None:
    assert error_code(err) == code


@pytest.mark.parametrize(("err", "code"), [
    (ContextLengthExceededError(5000, 4096), "context_length_exceeded"),
    (OverloadedError("busy"), "rate_limit_exceeded"),
    (InvalidRequestError("bad"), "invalid_prompt"),
    (EngineError("boom"), "server_error"),
])
def test_fail_is_response_failed(err: MlxjanError, code: str) -> None:
    stream = machine()
    raw = stream.start() + stream.on_delta(TextDelta("partial")) + stream.fail(err)
    assert [e.sequence_number for e in raw] == list(range(len(raw)))
    last = raw[-1]
    assert last.type == "response.failed"
    payload = last.model_dump(mode="json", by_alias=True)
    if code != "context_length_exceeded":  # a code the SDK's Literal does not list
        wire(last)
    assert payload["response"]["status"] == "failed"
    assert payload["response"]["error"] == {"code": code, "message": err.message}
    assert stream.ended and stream.response.status == "failed"


def test_ended() -> None:
    stream = machine()
    stream.start()
    assert not stream.ended
    stream.on_delta(TextDelta("x"))
    assert not stream.ended
    stream.finish(Finished("stop", USAGE))
    assert stream.ended


def test_cancel_ends_the_response() -> None:
    stream = machine()
    stream.start()
    stream.cancel()
    assert stream.ended and stream.response.status == "cancelled"
