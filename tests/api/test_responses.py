"""The Responses API through the real openai SDK against the app and the fake engine; every
event and response is also validated against the SDK's own typed models."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pydantic
import pytest
from openai.types.responses import Response, ResponseStreamEvent

from mlxjan.settings import Settings
from mlxjan.testing.fake_engine import FakeEngine
from mlxjan.types import ChatMessage, GenerationRequest, JsonOutput, ToolCall
from tests.api.conftest import MODEL, Server, _serve

EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseStreamEvent)
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather now",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}}
WEATHER_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def strict(response: Any) -> Response:
    """The SDK's Response model, validated (the SDK itself parses leniently)."""
    raw = response if isinstance(response, dict) else response.model_dump(mode="json")
    return Response.model_validate(raw)


def raw_events(server: Server, **body: Any) -> list[dict[str, Any]]:
    response = server.http.post("/v1/responses", json={"model": MODEL, "stream": True, **body})
    assert response.status_code == 200, response.text
    events = []
    for block in response.text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line
                     and not line.startswith(":"))
        if "data" in lines:
            event = json.loads(lines["data"])
            assert lines["event"] == event["type"]
            EVENTS.validate_python(event)
            events.append(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


def test_text_answer_with_usage(server: Server) -> None:
    response = server.client.responses.create(model=MODEL, input="hi there",
                                              instructions="Be brief.")
    assert strict(response).output_text == "You said: hi there"
    assert response.status == "completed" and response.id.startswith("resp_")
    assert response.usage is not None
    assert response.usage.output_tokens == 4
    assert response.usage.input_tokens_details.cached_tokens == 0
    assert response.usage.output_tokens_details.reasoning_tokens == 0
    assert response.instructions == "Be brief."
    assert server.engine.requests[-1].messages == (ChatMessage("system", "Be brief."),
                                                  ChatMessage("user", "hi there"))


def test_stream_has_the_whole_event_sequence(server: Server) -> None:
    events = raw_events(server, input="hi there")
    kinds = [e["type"] for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == "You said: hi there"
    final = strict(events[-1]["response"])
    assert final.output_text == deltas and final.usage is not None


def test_sdk_stream_helper_and_non_streaming_agree(server: Server) -> None:
    with server.client.responses.stream(model=MODEL, input="same words") as stream:
        texts = [e.delta for e in stream if e.type == "response.output_text.delta"]
        streamed = stream.get_final_response()
    drained = server.client.responses.create(model=MODEL, input="same words")
    assert "".join(texts) == streamed.output_text == drained.output_text
    assert [o.type for o in streamed.output] == [o.type for o in drained.output] == ["message"]


def test_function_call_round_trip(server: Server) -> None:
    server.engine.script = lambda req: (f"It is sunny, {req.messages[-1].content}."
                                        if req.messages[-1].role == "tool" else WEATHER_CALL)
    first = server.client.responses.create(model=MODEL, input="Weather in Paris?",
                                           tools=[WEATHER])  # type: ignore[list-item]
    call = strict(first).output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"} and call.call_id
    second = server.client.responses.create(
        model=MODEL, tools=[WEATHER],  # type: ignore[list-item]
        input=[{"role": "user", "content": "Weather in Paris?"},
               {"type": "function_call", "call_id": call.call_id, "name": call.name,
                "arguments": call.arguments},
               {"type": "function_call_output", "call_id": call.call_id, "output": "18C"}])
    assert second.output_text == "It is sunny, 18C."
    sent = server.engine.requests[-1]
    assert sent.messages[1] == ChatMessage(
        "assistant", "", tool_calls=(ToolCall(call.call_id, "get_weather", call.arguments),))
    assert sent.messages[2] == ChatMessage("tool", "18C", tool_call_id=call.call_id)


def test_streamed_function_call_events(server: Server) -> None:
    server.engine.script = lambda _req: WEATHER_CALL
    events = raw_events(server, input="Weather?", tools=[WEATHER])
    added = next(e for e in events if e["type"] == "response.output_item.added")
    assert added["item"]["type"] == "function_call" and added["item"]["arguments"] == ""
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert json.loads(done["arguments"]) == {"city": "Paris"}
    args = "".join(e["delta"] for e in events
                   if e["type"] == "response.function_call_arguments.delta")
    assert args == done["arguments"]


def test_builtin_tools_are_left_out_without_an_error(server: Server) -> None:
    response = server.client.responses.create(
        model=MODEL, input="hi", tools=[WEATHER, {"type": "web_search"}])  # type: ignore[list-item]
    assert [t.name for t in server.engine.requests[-1].tools] == ["get_weather"]
    assert [t.type for t in strict(response).tools] == ["function", "web_search"]


def test_json_schema_output_through_parse(server: Server) -> None:
    class City(pydantic.BaseModel):
        name: str
        population: int

    server.engine.script = lambda _req: '{"name": "Paris", "population": 2100000}'
    parsed = server.client.responses.parse(model=MODEL, input="A city?", text_format=City)
    assert parsed.output_parsed == City(name="Paris", population=2100000)
    constraint = server.engine.requests[-1].constraint
    assert isinstance(constraint, JsonOutput) and constraint.schema is not None
    assert constraint.schema["required"] == ["name", "population"]


def test_previous_response_id_continues_the_stored_conversation(server: Server) -> None:
    first = server.client.responses.create(model=MODEL, input="one")
    second = server.client.responses.create(model=MODEL, input="two",
                                            previous_response_id=first.id)
    assert second.previous_response_id == first.id
    assert [(m.role, m.content) for m in server.engine.requests[-1].messages] == [
        ("user", "one"), ("assistant", "You said: one"), ("user", "two")]
    third = server.client.responses.create(model=MODEL, input="three",
                                           previous_response_id=second.id)
    assert len(server.engine.requests[-1].messages) == 5 and third.output_text


def test_stored_response_get_delete_and_input_items(server: Server) -> None:
    created = server.client.responses.create(
        model=MODEL, input=[{"role": "user", "content": "a"},
                            {"role": "user", "content": "b"},
                            {"role": "user", "content": "c"}], metadata={"k": "v"})
    got = server.client.responses.retrieve(created.id)
    assert strict(got).output_text == created.output_text and got.metadata == {"k": "v"}
    items = server.client.responses.input_items.list(created.id, order="asc")
    texts = [item.content[0].text for item in items.data]  # type: ignore[union-attr]
    assert texts == ["a", "b", "c"] and all(item.id for item in items.data)
    page = server.http.get(f"/v1/responses/{created.id}/input_items",
                           params={"limit": 1, "after": items.data[0].id, "order": "asc"})
    assert page.json()["has_more"] is True
    assert page.json()["data"][0]["content"][0]["text"] == "b"
    deleted = server.client.responses.delete(created.id)
    assert deleted is None  # the SDK returns nothing for a 200 delete
    with pytest.raises(openai.NotFoundError):
        server.client.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        server.client.responses.delete(created.id)


def test_store_false_keeps_nothing(server: Server) -> None:
    created = server.client.responses.create(model=MODEL, input="x", store=False)
    with pytest.raises(openai.NotFoundError) as caught:
        server.client.responses.retrieve(created.id)
    assert caught.value.code == "not_found"
    with pytest.raises(openai.NotFoundError) as unknown:
        server.client.responses.create(model=MODEL, input="y", previous_response_id=created.id)
    assert unknown.value.body["param"] == "previous_response_id"  # type: ignore[index]


def test_stored_responses_survive_a_restart(settings: Settings) -> None:
    first = _serve(settings, FakeEngine(MODEL))
    server = next(first)
    created = server.client.responses.create(model=MODEL, input="remember me")
    first.close()
    second = _serve(settings, FakeEngine(MODEL))
    again = next(second)
    try:
        again.client.responses.create(model=MODEL, input="and now",
                                      previous_response_id=created.id)
        assert [m.content for m in again.engine.requests[-1].messages] == [
            "remember me", "You said: remember me", "and now"]
    finally:
        second.close()


def test_input_tokens_counts_the_prompt(server: Server) -> None:
    response = server.http.post("/v1/responses/input_tokens",
                                json={"model": MODEL, "input": "three words here"})
    assert response.json() == {"object": "response.input_tokens", "input_tokens": 7}
    assert server.engine.counted[-1].messages == (ChatMessage("user", "three words here"),)


def test_max_output_tokens_is_incomplete(server: Server) -> None:
    events = raw_events(server, input="one two three four", max_output_tokens=2)
    assert events[-1]["type"] == "response.incomplete"
    final = strict(events[-1]["response"])
    assert final.status == "incomplete" and final.incomplete_details is not None
    assert final.incomplete_details.reason == "max_output_tokens"
    assert final.output[0].status == "incomplete"  # type: ignore[union-attr]


def test_error_after_the_stream_began_is_response_failed(server: Server) -> None:
    def explode(_req: GenerationRequest) -> str:
        raise RuntimeError("never reached")

    server.engine.script = explode
    events = raw_events(server, input="x")
    assert events[-1]["type"] == "response.failed"
    assert strict(events[-1]["response"]).status == "failed"
    assert events[-1]["response"]["error"]["message"]


@pytest.mark.parametrize(("body", "param"), [
    ({"input": [{"type": "nonsense"}]}, "input.0"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
     "input.0.content"),
    ({"input": "x", "tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}},
     "tool_choice"),
    ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ({"input": "x", "background": True, "store": False}, "background"),
])
def test_bad_input_is_400_with_param(server: Server, body: dict[str, Any], param: str) -> None:
    response = server.http.post("/v1/responses", json={"model": MODEL, **body})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] is not None and error["param"].startswith(param), error


def test_prompt_too_long_and_truncation_auto(server: Server) -> None:
    long = [{"role": "user", "content": "word " * 60} for _ in range(4)]
    with pytest.raises(openai.BadRequestError) as caught:
        server.client.responses.create(model=MODEL, input=long)  # type: ignore[arg-type]
    assert caught.value.code == "context_length_exceeded"
    response = server.client.responses.create(
        model=MODEL, input=[*long, {"role": "user", "content": "last"}],  # type: ignore[list-item]
        truncation="auto")
    assert response.output_text == "You said: last"
    assert len(server.engine.requests[-1].messages) < 5


def test_the_routes_need_the_api_key(keyed_server: Server) -> None:
    http = keyed_server.http
    assert http.post("/v1/responses", json={"model": MODEL, "input": "x"}).status_code == 401
    assert http.get("/v1/responses/resp_x").status_code == 401
    assert http.delete("/v1/responses/resp_x").status_code == 401


# --- reasoning -------------------------------------------------------------------------------

THOUGHT = "Let me think about it."


@pytest.fixture
def thinking_server(tmp_path: Path) -> Iterator[Server]:
    yield from _serve(Settings(data_dir=tmp_path), FakeEngine(MODEL, reasoning=THOUGHT))


def test_reasoning_is_an_item_with_text_summary_and_sealed_content(
        thinking_server: Server) -> None:
    events = raw_events(thinking_server, input="hi", reasoning={"summary": "auto"},
                        include=["reasoning.encrypted_content"], store=False)
    kinds = [e["type"] for e in events]
    assert "response.reasoning_text.delta" in kinds
    assert "response.reasoning_summary_text.delta" in kinds
    final = strict(events[-1]["response"])
    reasoning, message = final.output
    assert reasoning.type == "reasoning" and message.type == "message"
    assert reasoning.content is not None and reasoning.content[0].text == THOUGHT
    assert reasoning.summary[0].text == THOUGHT
    assert reasoning.encrypted_content and THOUGHT not in reasoning.encrypted_content
    # Codex sends the item back with only its seal: the model sees its reasoning again.
    item = {"type": "reasoning", "id": reasoning.id, "summary": [],
            "encrypted_content": reasoning.encrypted_content}
    thinking_server.client.responses.create(
        model=MODEL, store=False,
        input=[{"role": "user", "content": "hi"}, item,  # type: ignore[list-item]
               {"role": "assistant", "content": message.content[0].text},  # type: ignore[union-attr]
               {"role": "user", "content": "again"}])
    assert thinking_server.engine.requests[-1].messages[1].reasoning == THOUGHT


def test_a_tampered_seal_is_not_read(thinking_server: Server) -> None:
    response = thinking_server.client.responses.create(
        model=MODEL, input="hi", include=["reasoning.encrypted_content"])
    sealed = response.output[0].encrypted_content  # type: ignore[union-attr]
    assert sealed is not None
    forged = sealed[:-6] + ("AAAAAA" if not sealed.endswith("AAAAAA") else "BBBBBB")
    thinking_server.client.responses.create(
        model=MODEL,
        input=[{"role": "user", "content": "hi"},
               {"type": "reasoning", "id": "rs_1", "summary": [],  # type: ignore[list-item]
                "encrypted_content": forged},
               {"role": "assistant", "content": "ok"}, {"role": "user", "content": "again"}])
    assert thinking_server.engine.requests[-1].messages[1].reasoning == ""


def test_no_summary_unless_asked(thinking_server: Server) -> None:
    response = thinking_server.client.responses.create(model=MODEL, input="hi")
    reasoning = strict(response).output[0]
    assert reasoning.type == "reasoning" and reasoning.summary == []
    assert reasoning.encrypted_content is None
    assert response.usage is not None


# --- background ------------------------------------------------------------------------------


@pytest.fixture
def slow_server(tmp_path: Path) -> Iterator[Server]:
    yield from _serve(Settings(data_dir=tmp_path), FakeEngine(MODEL, token_delay=0.2))


def test_background_response_runs_and_can_be_polled(slow_server: Server) -> None:
    created = slow_server.client.responses.create(model=MODEL, input="a b", background=True)
    assert created.status in ("queued", "in_progress") and created.background
    deadline = time.monotonic() + 20
    while (got := slow_server.client.responses.retrieve(created.id)).status != "completed":
        assert time.monotonic() < deadline, got
        time.sleep(0.1)
    assert got.output_text == "You said: a b"


def test_background_response_can_be_cancelled(slow_server: Server) -> None:
    created = slow_server.client.responses.create(
        model=MODEL, input="many " * 40, background=True)
    cancelled = slow_server.client.responses.cancel(created.id)
    assert cancelled.status == "cancelled"
    assert slow_server.client.responses.retrieve(created.id).status == "cancelled"
    plain = slow_server.client.responses.create(model=MODEL, input="x", max_output_tokens=1)
    with pytest.raises(openai.BadRequestError):
        slow_server.client.responses.cancel(plain.id)
