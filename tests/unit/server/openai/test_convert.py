"""OpenAI wire types <-> engine types."""

from __future__ import annotations

from typing import Any

import pytest

from mlxjan.errors import InvalidRequestError
from mlxjan.server.openai import schemas as s
from mlxjan.server.openai.convert import (
    CompletionIds,
    completion,
    delta_chunk,
    finish_chunk,
    role_chunk,
    to_generation_request,
    usage_chunk,
)
from mlxjan.types import (
    ChatMessage,
    Finished,
    ForcedToolCall,
    JsonOutput,
    SamplingParams,
    TextDelta,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
    Usage,
)

IDS = CompletionIds(id="chatcmpl-abc", created=1_700_000_000, model="tiny")


def request(**fields: Any) -> s.ChatCompletionRequest:
    body: dict[str, Any] = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
    body.update(fields)
    return s.ChatCompletionRequest.model_validate(body)


# --- request -> GenerationRequest ------------------------------------------------------------


def test_messages_map_to_engine_messages() -> None:
    req = request(messages=[
        {"role": "developer", "content": "Be brief."},
        {"role": "system", "content": "Sys.", "name": "policy"},
        {"role": "user", "content": [{"type": "text", "text": "Hello "},
                                     {"type": "text", "text": "there"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "lookup", "arguments": "{\"q\": \"x\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "42"}]},
    ])
    gen = to_generation_request(req)
    assert gen.model == "tiny"
    assert gen.messages == (
        ChatMessage("system", "Be brief."),
        ChatMessage("system", "Sys.", name="policy"),
        ChatMessage("user", "Hello there"),
        ChatMessage("assistant", "", tool_calls=(ToolCall("call_1", "lookup", '{"q": "x"}'),)),
        ChatMessage("tool", "42", tool_call_id="call_1"),
    )


@pytest.mark.parametrize("part_type", ["image_url", "input_audio", "file"])
def test_non_text_parts_are_refused_with_param(part_type: str) -> None:
    req = request(messages=[
        {"role": "system", "content": "s"},
        {"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                     {"type": part_type, part_type: {"url": "data:,"}}]},
    ])
    with pytest.raises(InvalidRequestError) as info:
        to_generation_request(req)
    assert info.value.param == "messages.1.content"
    assert part_type in info.value.message


def test_n_other_than_one_is_refused() -> None:
    with pytest.raises(InvalidRequestError) as info:
        to_generation_request(request(n=2))
    assert info.value.param == "n"


def test_response_format_becomes_a_json_constraint() -> None:
    assert to_generation_request(request(response_format={"type": "json_object"})
                                 ).constraint == JsonOutput()
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    gen = to_generation_request(request(response_format={
        "type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}))
    assert gen.constraint == JsonOutput(schema)
    with pytest.raises(InvalidRequestError) as info:
        to_generation_request(request(response_format={"type": "json_schema"}))
    assert info.value.param == "response_format.json_schema"
    gen = to_generation_request(request(response_format={"type": "text"}))
    assert gen.constraint is None and gen.messages == (ChatMessage("user", "hi"),)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, None),
        ({"max_tokens": 50}, 50),
        ({"max_completion_tokens": 20}, 20),
        ({"max_tokens": 50, "max_completion_tokens": 20}, 20),
    ],
)
def test_max_completion_tokens_is_preferred(fields: dict[str, int], expected: int | None) -> None:
    assert to_generation_request(request(**fields)).sampling.max_tokens == expected


@pytest.mark.parametrize(
    ("stop", "expected"),
    [
        (None, ()),
        ("END", ("END",)),
        (["a", "b"], ("a", "b")),
        (["", "x"], ("x",)),
        ([], ()),
    ],
)
def test_stop_string_or_list(stop: str | list[str] | None, expected: tuple[str, ...]) -> None:
    assert to_generation_request(request(stop=stop)).sampling.stop == expected


def test_too_many_or_too_long_stops_are_refused() -> None:
    with pytest.raises(InvalidRequestError) as info:
        to_generation_request(request(stop=[str(i) for i in range(17)]))
    assert info.value.param == "stop"
    with pytest.raises(InvalidRequestError):
        to_generation_request(request(stop="x" * 513))


def test_sampling_defaults_and_overrides() -> None:
    assert to_generation_request(request()).sampling == SamplingParams()
    sampling = to_generation_request(request(
        temperature=0, top_p=0.5, top_k=7, min_p=0.1, seed=42, presence_penalty=0.5,
        frequency_penalty=-0.5, repetition_penalty=1.1, logprobs=True, top_logprobs=3,
    )).sampling
    assert sampling.temperature == 0  # zero is a value, not "unset"
    assert (sampling.top_p, sampling.top_k, sampling.min_p, sampling.seed) == (0.5, 7, 0.1, 42)
    assert (sampling.presence_penalty, sampling.frequency_penalty) == (0.5, -0.5)
    assert sampling.repetition_penalty == 1.1
    assert (sampling.logprobs, sampling.top_logprobs) == (True, 3)


def test_top_logprobs_requires_logprobs() -> None:
    with pytest.raises(InvalidRequestError) as info:
        to_generation_request(request(top_logprobs=2))
    assert info.value.param == "top_logprobs"


def test_tools_become_tool_specs() -> None:
    tool = {"type": "function", "function": {
        "name": "get_weather", "description": "Weather now",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
    gen = to_generation_request(request(tools=[tool]))
    assert gen.tools == (ToolSpec("get_weather", "Weather now", {
        "type": "object", "properties": {"city": {"type": "string"}}}),)
    assert gen.tools[0].template_dict() == tool
    assert to_generation_request(request()).tools == ()


# --- engine events -> responses --------------------------------------------------------------


LOGPROB = TokenLogprob("Hi", -0.1, (72, 105),
                       top=(("Hi", -0.1, (72, 105)), ("Hey", -2.5, (72, 101, 121))))


def test_completion_shape() -> None:
    deltas = [TextDelta("Hello", (LOGPROB,)), TextDelta(", world")]
    finished = Finished("length", Usage(prompt_tokens=10, completion_tokens=2, cached_tokens=4))
    out = completion(IDS, deltas, finished, with_logprobs=False).model_dump()
    assert out == {
        "id": "chatcmpl-abc", "object": "chat.completion", "created": 1_700_000_000,
        "model": "tiny", "system_fingerprint": None,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello, world"},
                     "logprobs": None, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12,
                  "prompt_tokens_details": {"cached_tokens": 4},
                  "completion_tokens_details": {"reasoning_tokens": 0}},
    }


def test_completion_with_logprobs() -> None:
    deltas = [TextDelta("Hi", (LOGPROB,)), TextDelta("!", (TokenLogprob("!", -0.5, (33,)),))]
    out = completion(IDS, deltas, Finished("stop", Usage(1, 2)), with_logprobs=True)
    logprobs = out.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    assert [(t.token, t.logprob, t.bytes) for t in logprobs.content] == [
        ("Hi", -0.1, [72, 105]), ("!", -0.5, [33])]
    assert [(t.token, t.bytes) for t in logprobs.content[0].top_logprobs] == [
        ("Hi", [72, 105]), ("Hey", [72, 101, 121])]
    assert logprobs.content[1].top_logprobs == []
    assert out.choices[0].finish_reason == "stop"


def test_stream_chunk_shapes() -> None:
    role = role_chunk(IDS).model_dump(exclude_none=True)
    assert role == {"id": "chatcmpl-abc", "object": "chat.completion.chunk",
                    "created": 1_700_000_000, "model": "tiny",
                    "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}

    delta = delta_chunk(IDS, TextDelta("Hi", (LOGPROB,)), with_logprobs=False)
    assert delta.choices[0].delta.content == "Hi"
    assert delta.choices[0].delta.role is None
    assert delta.choices[0].logprobs is None
    assert delta.choices[0].finish_reason is None
    with_lp = delta_chunk(IDS, TextDelta("Hi", (LOGPROB,)), with_logprobs=True)
    assert with_lp.choices[0].logprobs is not None
    assert with_lp.choices[0].logprobs.content is not None
    assert with_lp.choices[0].logprobs.content[0].token == "Hi"

    finish = finish_chunk(IDS, Finished("stop", Usage(3, 4), stop_sequence="END"))
    assert finish.choices[0].finish_reason == "stop"
    assert finish.choices[0].delta.model_dump(exclude_none=True) == {}
    assert finish.usage is None

    usage = usage_chunk(IDS, Usage(3, 4, 1))
    assert usage.choices == []
    assert usage.usage is not None
    assert usage.usage.model_dump() == {"prompt_tokens": 3, "completion_tokens": 4,
                                        "total_tokens": 7,
                                        "prompt_tokens_details": {"cached_tokens": 1},
                                        "completion_tokens_details": {"reasoning_tokens": 0}}
    assert {c.id for c in (delta, finish, usage)} == {"chatcmpl-abc"}


# --- tools -----------------------------------------------------------------------------------

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
TIME_TOOL = {"type": "function", "function": {"name": "get_time"}}


@pytest.mark.parametrize(("choice", "tools", "constraint"), [
    (None, 2, None),
    ("auto", 2, None),
    ("none", 0, None),
    ("required", 2, ForcedToolCall(None)),
    ({"type": "function", "function": {"name": "get_time"}}, 2, ForcedToolCall("get_time")),
])
def test_tool_choice(choice: Any, tools: int, constraint: ForcedToolCall | None) -> None:
    gen = to_generation_request(request(tools=[WEATHER_TOOL, TIME_TOOL], tool_choice=choice))
    assert len(gen.tools) == tools
    assert gen.constraint == constraint


@pytest.mark.parametrize(("parallel", "expected"), [(None, True), (True, True),
                                                   (False, False)])
def test_parallel_tool_calls(parallel: bool | None, expected: bool) -> None:
    gen = to_generation_request(request(tools=[WEATHER_TOOL], parallel_tool_calls=parallel))
    assert gen.parallel_tool_calls is expected


def test_named_tool_choice_must_name_a_given_tool() -> None:
    with pytest.raises(InvalidRequestError) as info:
        to_generation_request(request(tools=[WEATHER_TOOL], tool_choice={
            "type": "function", "function": {"name": "get_stock"}}))
    assert info.value.param == "tool_choice"


@pytest.mark.parametrize("choice", ["required", {"type": "function",
                                                 "function": {"name": "get_time"}}])
def test_forcing_a_call_without_tools_is_refused(choice: Any) -> None:
    with pytest.raises(InvalidRequestError) as info:
        to_generation_request(request(tool_choice=choice))
    assert info.value.param == "tool_choice"


def test_tool_choice_none_without_tools_is_fine() -> None:
    gen = to_generation_request(request(tool_choice="none"))
    assert (gen.tools, gen.constraint) == ((), None)


def test_a_forced_call_takes_precedence_over_response_format() -> None:
    fmt = {"type": "json_object"}
    forced = to_generation_request(request(tools=[WEATHER_TOOL], tool_choice="required",
                                           response_format=fmt))
    assert forced.constraint == ForcedToolCall(None)
    auto = to_generation_request(request(tools=[WEATHER_TOOL], response_format=fmt))
    assert auto.constraint == JsonOutput()


CALL_DELTAS = [
    ToolCallDelta(0, "call_a", "get_weather", ""),
    ToolCallDelta(0, None, None, '{"city": "Paris"}'),
    ToolCallDelta(1, "call_b", "get_time", ""),
    ToolCallDelta(1, None, None, "{}"),
]


def test_completion_with_only_tool_calls_has_null_content() -> None:
    out = completion(IDS, CALL_DELTAS, Finished("tool_calls", Usage(10, 8)),
                     with_logprobs=False).model_dump(mode="json")
    assert out["choices"] == [{
        "index": 0,
        "message": {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_a", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "call_b", "type": "function",
             "function": {"name": "get_time", "arguments": "{}"}}]},
        "logprobs": None, "finish_reason": "tool_calls"}]


def test_completion_with_text_and_a_tool_call() -> None:
    out = completion(IDS, [TextDelta("Let me check."), *CALL_DELTAS[:2]],
                     Finished("tool_calls", Usage(10, 8)), with_logprobs=False)
    message = out.choices[0].message
    assert message.content == "Let me check."
    assert message.tool_calls is not None
    assert [(c.id, c.function.name) for c in message.tool_calls] == [("call_a", "get_weather")]


def test_completion_without_calls_omits_tool_calls_and_keeps_empty_content() -> None:
    out = completion(IDS, [], Finished("length", Usage(10, 0)), with_logprobs=False)
    assert out.model_dump(mode="json")["choices"][0]["message"] == {
        "role": "assistant", "content": ""}


def test_tool_call_delta_chunks() -> None:
    head = delta_chunk(IDS, CALL_DELTAS[0], with_logprobs=True).model_dump(exclude_none=True)
    assert head["choices"] == [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "call_a", "type": "function",
         "function": {"name": "get_weather", "arguments": ""}}]}}]
    body = delta_chunk(IDS, CALL_DELTAS[1], with_logprobs=True).model_dump(exclude_none=True)
    assert body["choices"] == [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "function": {"arguments": '{"city": "Paris"}'}}]}}]
    second = delta_chunk(IDS, CALL_DELTAS[2], with_logprobs=False)
    assert second.choices[0].delta.tool_calls is not None
    assert second.choices[0].delta.tool_calls[0].index == 1
    assert second.choices[0].delta.content is None
    assert finish_chunk(IDS, Finished("tool_calls", Usage(1, 2))).choices[0].finish_reason == \
        "tool_calls"
