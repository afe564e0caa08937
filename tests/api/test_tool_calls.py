"""Tool calls end to end through both official SDKs, with the fake engine's Hermes parsing."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest

from mlxjan.types import ForcedToolCall, GenerationRequest, JsonOutput, TextAnswer
from tests.api.conftest import MODEL, Server

WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}},
                  "required": ["city"]}
TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather now",
                                      "parameters": WEATHER_SCHEMA}},
    {"type": "function", "function": {"name": "get_time", "description": "Time now",
                                      "parameters": {"type": "object", "properties": {}}}},
]
CLAUDE_TOOLS: list[Any] = [
    {"name": "get_weather", "description": "Weather now", "input_schema": WEATHER_SCHEMA},
    {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
]
ASK: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
WEATHER_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
TIME_CALL = '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'
ANSWER = "It is 18C and sunny in Paris."


def reply(text: str) -> Any:
    return lambda _req: text


def answer_after_tool_result(req: GenerationRequest) -> str:
    return ANSWER if req.messages[-1].role == "tool" else WEATHER_CALL


def stream_chat(server: Server, **fields: Any) -> list[Any]:
    return list(server.client.chat.completions.create(
        model=MODEL, messages=ASK, tools=TOOLS, stream=True, **fields))


def streamed_calls(chunks: list[Any]) -> dict[int, dict[str, Any]]:
    """index -> {id, name, arguments} from tool-call deltas, checking id and name come first."""
    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            if delta.index not in calls:
                assert delta.id and delta.type == "function" and delta.function.name
                assert delta.function.arguments == ""
                calls[delta.index] = {"id": delta.id, "name": delta.function.name,
                                      "arguments": ""}
            else:
                assert delta.id is None and delta.function.name is None
                calls[delta.index]["arguments"] += delta.function.arguments
    assert sorted(calls) == list(range(len(calls)))
    return calls


def streamed_content(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def finish_reasons(chunks: list[Any]) -> list[str]:
    return [c.choices[0].finish_reason for c in chunks
            if c.choices and c.choices[0].finish_reason]


# --- OpenAI ----------------------------------------------------------------------------------


def test_openai_tool_call(server: Server) -> None:
    server.engine.script = reply(WEATHER_CALL)
    result = server.client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS)
    choice = result.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    request = server.engine.requests[-1]
    assert [t.name for t in request.tools] == ["get_weather", "get_time"]
    assert request.constraint is None


@pytest.mark.parametrize("char_tokens", [False, True])
def test_openai_streamed_tool_call(server: Server, char_tokens: bool) -> None:
    server.engine.char_tokens = char_tokens
    server.engine.script = reply(WEATHER_CALL)
    chunks = stream_chat(server)
    calls = streamed_calls(chunks)
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [
        ("get_weather", {"city": "Paris"})]
    assert calls[0]["id"].startswith("call_")
    assert streamed_content(chunks) == ""  # nothing of the call leaks into the text
    assert finish_reasons(chunks) == ["tool_calls"]


@pytest.mark.parametrize("script", [
    pytest.param(WEATHER_CALL, id="one-call"),
    pytest.param(f"Let me check.\n{WEATHER_CALL}", id="text-then-call"),
    pytest.param(f"{WEATHER_CALL}\n{TIME_CALL}", id="parallel"),
    pytest.param("```json\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n```",
                 id="fenced-json"),
])
def test_openai_streaming_and_non_streaming_agree(server: Server, script: str) -> None:
    server.engine.script = reply(script)
    whole = server.client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS)
    chunks = stream_chat(server)
    message = whole.choices[0].message
    assert [(c.function.name, c.function.arguments)  # type: ignore[union-attr]
            for c in message.tool_calls or []] == [
        (c["name"], c["arguments"]) for c in streamed_calls(chunks).values()]
    assert (message.content or "") == streamed_content(chunks)
    assert finish_reasons(chunks) == [whole.choices[0].finish_reason] == ["tool_calls"]


def test_openai_parallel_calls_get_distinct_ids(server: Server) -> None:
    server.engine.script = reply(f"{WEATHER_CALL}\n{TIME_CALL}")
    result = server.client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS)
    calls = result.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]  # type: ignore[union-attr]
    assert len({c.id for c in calls}) == 2
    assert result.choices[0].message.content is None
    streamed = streamed_calls(stream_chat(server))
    assert [c["name"] for c in streamed.values()] == ["get_weather", "get_time"]
    assert len({c["id"] for c in streamed.values()}) == 2


def test_openai_undeclared_tool_stays_text(server: Server) -> None:
    text = '<tool_call>\n{"name": "get_stock", "arguments": {"symbol": "X"}}\n</tool_call>'
    server.engine.script = reply(text)
    result = server.client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS)
    assert result.choices[0].message.content == text
    assert result.choices[0].message.tool_calls is None
    assert result.choices[0].finish_reason == "stop"
    chunks = stream_chat(server)
    assert streamed_content(chunks) == text
    assert streamed_calls(chunks) == {}
    assert finish_reasons(chunks) == ["stop"]


def test_openai_tool_choice_none_sends_no_tools(server: Server) -> None:
    server.engine.script = reply(WEATHER_CALL)
    result = server.client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS,
                                                   tool_choice="none")
    request = server.engine.requests[-1]
    assert request.tools == ()
    assert request.constraint is None
    assert result.choices[0].message.content == WEATHER_CALL
    assert result.choices[0].message.tool_calls is None
    assert result.choices[0].finish_reason == "stop"


@pytest.mark.parametrize(("choice", "constraint"), [
    ("auto", None),
    ("required", ForcedToolCall(None)),
    ({"type": "function", "function": {"name": "get_weather"}}, ForcedToolCall("get_weather")),
])
def test_openai_tool_choice_reaches_the_engine(server: Server, choice: Any,
                                               constraint: ForcedToolCall | None) -> None:
    server.engine.script = reply(WEATHER_CALL)
    result = server.client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS,
                                                   tool_choice=choice)
    request = server.engine.requests[-1]
    assert request.constraint == constraint
    assert len(request.tools) == 2
    assert result.choices[0].finish_reason == "tool_calls"


def test_openai_response_format_sets_a_json_constraint(server: Server) -> None:
    server.engine.script = reply('{"city": "Paris", "temp": 18}')
    schema = {"type": "object", "properties": {"city": {"type": "string"},
                                               "temp": {"type": "integer"}}}
    result = server.client.chat.completions.create(model=MODEL, messages=ASK, response_format={
        "type": "json_schema", "json_schema": {"name": "weather", "schema": schema}})
    assert server.engine.requests[-1].constraint == JsonOutput(schema)
    assert json.loads(result.choices[0].message.content or "") == {"city": "Paris", "temp": 18}
    server.client.chat.completions.create(model=MODEL, messages=ASK,
                                          response_format={"type": "json_object"})
    assert server.engine.requests[-1].constraint == JsonOutput()


def test_openai_named_tool_choice_must_be_declared(server: Server) -> None:
    calls = len(server.engine.requests)
    with pytest.raises(openai.BadRequestError) as exc:
        server.client.chat.completions.create(
            model=MODEL, messages=ASK, tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "get_stock"}})
    assert exc.value.status_code == 400
    assert exc.value.param == "tool_choice"
    assert "get_stock" in exc.value.message
    with pytest.raises(openai.BadRequestError) as required:
        server.client.chat.completions.create(model=MODEL, messages=ASK,
                                              tool_choice="required")
    assert required.value.param == "tool_choice"
    assert len(server.engine.requests) == calls  # refused before reaching the engine


@pytest.mark.parametrize("stream", [False, True])
def test_openai_round_trip(server: Server, stream: bool) -> None:
    server.engine.script = answer_after_tool_result
    first = server.client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS)
    call = (first.choices[0].message.tool_calls or [])[0]
    messages: list[Any] = [
        *ASK,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18C, sunny"},
    ]
    if stream:
        chunks = list(server.client.chat.completions.create(
            model=MODEL, messages=messages, tools=TOOLS, stream=True))
        assert streamed_content(chunks) == ANSWER
        assert streamed_calls(chunks) == {}
        assert finish_reasons(chunks) == ["stop"]
    else:
        final = server.client.chat.completions.create(model=MODEL, messages=messages,
                                                      tools=TOOLS)
        assert final.choices[0].message.content == ANSWER
        assert final.choices[0].message.tool_calls is None
        assert final.choices[0].finish_reason == "stop"
    request = server.engine.requests[-1]
    assert [m.role for m in request.messages] == ["user", "assistant", "tool"]
    assistant, result = request.messages[1], request.messages[2]
    assert [(c.id, c.name) for c in assistant.tool_calls] == [
        (call.id, "get_weather")]
    assert json.loads(assistant.tool_calls[0].arguments) == {"city": "Paris"}
    assert (result.tool_call_id, result.content) == (call.id, "18C, sunny")


# --- Anthropic -------------------------------------------------------------------------------


def test_anthropic_tool_use_blocks(server: Server) -> None:
    server.engine.script = reply(f"Let me check.\n{WEATHER_CALL}\n{TIME_CALL}")
    message = server.claude.messages.create(model=MODEL, max_tokens=100, messages=ASK,
                                            tools=CLAUDE_TOOLS)
    assert message.stop_reason == "tool_use"
    assert [b.type for b in message.content] == ["text", "tool_use", "tool_use"]
    text, weather, time = message.content
    assert text.type == "text" and text.text == "Let me check.\n"
    assert weather.type == "tool_use" and time.type == "tool_use"
    assert (weather.name, weather.input) == ("get_weather", {"city": "Paris"})
    assert (time.name, time.input) == ("get_time", {})
    assert weather.id.startswith("toolu_") and time.id.startswith("toolu_")
    assert weather.id != time.id
    request = server.engine.requests[-1]
    assert [t.name for t in request.tools] == ["get_weather", "get_time"]


@pytest.mark.parametrize("char_tokens", [False, True])
def test_anthropic_streamed_tool_use_matches_non_streaming(server: Server,
                                                           char_tokens: bool) -> None:
    server.engine.char_tokens = char_tokens
    server.engine.script = reply(f"Let me check.\n{WEATHER_CALL}")
    whole = server.claude.messages.create(model=MODEL, max_tokens=100, messages=ASK,
                                          tools=CLAUDE_TOOLS)
    with server.claude.messages.stream(model=MODEL, max_tokens=100, messages=ASK,
                                       tools=CLAUDE_TOOLS) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert final.stop_reason == whole.stop_reason == "tool_use"
    assert [b.type for b in final.content] == [b.type for b in whole.content] == [
        "text", "tool_use"]
    streamed_use, whole_use = final.content[1], whole.content[1]
    assert streamed_use.type == whole_use.type == "tool_use"
    assert (streamed_use.name, streamed_use.input) == (whole_use.name, whole_use.input) == (
        "get_weather", {"city": "Paris"})
    assert streamed_use.id.startswith("toolu_")
    json_deltas = [e.delta.partial_json for e in events
                   if e.type == "content_block_delta" and e.delta.type == "input_json_delta"]
    assert json.loads("".join(json_deltas)) == {"city": "Paris"}
    starts = [e for e in events if e.type == "content_block_start"]
    stops = [e for e in events if e.type == "content_block_stop"]
    assert [e.index for e in starts] == [e.index for e in stops] == [0, 1]


def test_anthropic_raw_stream_carries_input_json_delta(server: Server) -> None:
    server.engine.script = reply(WEATHER_CALL)
    response = server.http.post("/v1/messages", json={
        "model": MODEL, "max_tokens": 100, "messages": ASK, "tools": CLAUDE_TOOLS,
        "stream": True})
    assert response.status_code == 200
    payloads = [json.loads(line[6:]) for line in response.text.splitlines()
                if line.startswith("data: ")]
    start = next(p for p in payloads if p["type"] == "content_block_start")
    assert start["content_block"]["type"] == "tool_use"
    assert start["content_block"]["input"] == {}
    deltas = [p["delta"] for p in payloads if p["type"] == "content_block_delta"]
    assert {d["type"] for d in deltas} == {"input_json_delta"}
    assert json.loads("".join(d["partial_json"] for d in deltas)) == {"city": "Paris"}
    message_delta = next(p for p in payloads if p["type"] == "message_delta")
    assert message_delta["delta"]["stop_reason"] == "tool_use"


def test_anthropic_undeclared_tool_stays_text(server: Server) -> None:
    text = '<tool_call>\n{"name": "get_stock", "arguments": {}}\n</tool_call>'
    server.engine.script = reply(text)
    message = server.claude.messages.create(model=MODEL, max_tokens=100, messages=ASK,
                                            tools=CLAUDE_TOOLS)
    assert message.stop_reason == "end_turn"
    assert [(b.type, getattr(b, "text", None)) for b in message.content] == [("text", text)]


@pytest.mark.parametrize(("choice", "tools", "constraint"), [
    ({"type": "auto"}, 2, None),
    ({"type": "any"}, 2, ForcedToolCall(None)),
    ({"type": "tool", "name": "get_time"}, 2, ForcedToolCall("get_time")),
    ({"type": "none"}, 0, None),
])
def test_anthropic_tool_choice_reaches_the_engine(server: Server, choice: Any, tools: int,
                                                  constraint: ForcedToolCall | None) -> None:
    server.engine.script = reply(WEATHER_CALL)
    message = server.claude.messages.create(model=MODEL, max_tokens=100, messages=ASK,
                                            tools=CLAUDE_TOOLS, tool_choice=choice)
    request = server.engine.requests[-1]
    assert len(request.tools) == tools
    assert request.constraint == constraint
    assert message.stop_reason == ("end_turn" if choice["type"] == "none" else "tool_use")


def test_anthropic_tool_choice_naming_an_undeclared_tool_is_400(server: Server) -> None:
    with pytest.raises(anthropic.BadRequestError) as exc:
        server.claude.messages.create(model=MODEL, max_tokens=100, messages=ASK,
                                      tools=CLAUDE_TOOLS,
                                      tool_choice={"type": "tool", "name": "get_stock"})
    assert exc.value.status_code == 400
    assert "get_stock" in exc.value.message


def _claude_after_tool_result(server: Server, first: Any, stream: bool) -> tuple[Any, Any]:
    """Send back the first answer's tool_use with a result; its block and the next answer."""
    use = first.content[0]
    assert use.type == "tool_use"
    messages: list[Any] = [
        *ASK, {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                      "content": "18C, sunny"}]}]
    if not stream:
        return use, server.claude.messages.create(model=MODEL, max_tokens=100,
                                                  messages=messages, tools=CLAUDE_TOOLS)
    with server.claude.messages.stream(model=MODEL, max_tokens=100, messages=messages,
                                       tools=CLAUDE_TOOLS) as events:
        return use, events.get_final_message()


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_round_trip(server: Server, stream: bool) -> None:
    server.engine.script = answer_after_tool_result
    first = server.claude.messages.create(model=MODEL, max_tokens=100, messages=ASK,
                                          tools=CLAUDE_TOOLS)
    assert first.stop_reason == "tool_use"
    use, final = _claude_after_tool_result(server, first, stream)
    assert final.stop_reason == "end_turn"
    assert [(b.type, getattr(b, "text", None)) for b in final.content] == [("text", ANSWER)]
    request = server.engine.requests[-1]
    assert [m.role for m in request.messages] == ["user", "assistant", "tool"]
    assistant, result = request.messages[1], request.messages[2]
    assert [(c.id, c.name) for c in assistant.tool_calls] == [(use.id, "get_weather")]
    assert json.loads(assistant.tool_calls[0].arguments) == {"city": "Paris"}
    assert (result.tool_call_id, result.content) == (use.id, "18C, sunny")


# --- at most one call ------------------------------------------------------------------------


@pytest.mark.parametrize("char_tokens", [False, True])
def test_openai_parallel_tool_calls_false_gives_one_call(server: Server,
                                                         char_tokens: bool) -> None:
    server.engine.char_tokens = char_tokens
    server.engine.script = reply(f"{WEATHER_CALL}\n{TIME_CALL}")
    whole = server.client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS,
                                                  parallel_tool_calls=False)
    calls = whole.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather"]  # type: ignore[union-attr]
    assert whole.choices[0].finish_reason == "tool_calls"
    assert whole.choices[0].message.content is None
    chunks = stream_chat(server, parallel_tool_calls=False)
    assert [c["name"] for c in streamed_calls(chunks).values()] == ["get_weather"]
    assert finish_reasons(chunks) == ["tool_calls"]
    assert server.engine.requests[-1].parallel_tool_calls is False
    # Generation stopped at the end of the first call, before the second was read.
    assert whole.usage is not None
    assert whole.usage.completion_tokens < len(
        WEATHER_CALL if char_tokens else WEATHER_CALL.split()) + 2


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_disable_parallel_tool_use_gives_one_tool_use(server: Server,
                                                                stream: bool) -> None:
    server.engine.script = reply(f"{WEATHER_CALL}\n{TIME_CALL}")
    fields: Any = {"model": MODEL, "max_tokens": 100, "messages": ASK, "tools": CLAUDE_TOOLS,
                   "tool_choice": {"type": "auto", "disable_parallel_tool_use": True}}
    message: Any
    if stream:
        with server.claude.messages.stream(**fields) as events:
            message = events.get_final_message()
    else:
        message = server.claude.messages.create(**fields)
    assert [b.name for b in message.content if b.type == "tool_use"] == ["get_weather"]
    assert message.stop_reason == "tool_use"
    assert server.engine.requests[-1].parallel_tool_calls is False


def test_parallel_calls_stay_allowed_by_default(server: Server) -> None:
    server.engine.script = reply(f"{WEATHER_CALL}\n{TIME_CALL}")
    message = server.claude.messages.create(model=MODEL, max_tokens=100, messages=ASK,
                                            tools=CLAUDE_TOOLS,
                                            tool_choice={"type": "auto"})
    assert [b.name for b in message.content if b.type == "tool_use"] == [
        "get_weather", "get_time"]


# --- a repeated answered call is answered in words ---------------------------------------------


def repeat_while_tools_offered(req: GenerationRequest) -> str:
    """What the default model does: the same call again after its result, unless no tools."""
    return WEATHER_CALL if req.tools else ANSWER


@pytest.mark.parametrize("stream", [False, True])
def test_openai_repeated_call_becomes_an_answer(server: Server, stream: bool) -> None:
    server.engine.script = repeat_while_tools_offered
    first = server.client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS)
    call = (first.choices[0].message.tool_calls or [])[0]
    messages: list[Any] = [
        *ASK, first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18C, sunny"}]
    before = len(server.engine.requests)
    if stream:
        chunks = list(server.client.chat.completions.create(
            model=MODEL, messages=messages, tools=TOOLS, stream=True,
            stream_options={"include_usage": True}))
        assert (streamed_content(chunks), streamed_calls(chunks)) == (ANSWER, {})
        assert finish_reasons(chunks) == ["stop"]
    else:
        final = server.client.chat.completions.create(model=MODEL, messages=messages,
                                                      tools=TOOLS)
        assert final.choices[0].message.content == ANSWER
        assert final.choices[0].message.tool_calls is None
        assert final.choices[0].finish_reason == "stop"
    offered, in_words = server.engine.requests[before:]
    assert (len(offered.tools), offered.constraint) == (2, None)
    assert (in_words.tools, in_words.constraint) == ((), TextAnswer())


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_repeated_tool_use_becomes_an_answer(server: Server, stream: bool) -> None:
    server.engine.script = repeat_while_tools_offered
    first = server.claude.messages.create(model=MODEL, max_tokens=100, messages=ASK,
                                          tools=CLAUDE_TOOLS)
    _, final = _claude_after_tool_result(server, first, stream)
    assert final.stop_reason == "end_turn"
    assert [(b.type, getattr(b, "text", None)) for b in final.content] == [("text", ANSWER)]
    assert server.engine.requests[-1].constraint == TextAnswer()


def test_a_repeat_under_tool_choice_required_stays_a_call(server: Server) -> None:
    server.engine.script = repeat_while_tools_offered
    messages: list[Any] = [
        *ASK, {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
               "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C, sunny"}]
    final = server.client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS,
                                                  tool_choice="required")
    assert final.choices[0].finish_reason == "tool_calls"
