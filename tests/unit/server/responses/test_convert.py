"""Responses request (items, tools, text format, reasoning) -> the engine's GenerationRequest."""

from __future__ import annotations

from typing import Any

import pytest

from mlxjan.errors import InvalidRequestError
from mlxjan.server.responses import schemas as s
from mlxjan.server.responses.convert import (
    Prompt,
    input_items,
    messages,
    sampling,
    to_generation_request,
)
from mlxjan.types import (
    ChatMessage,
    ForcedToolCall,
    GenerationRequest,
    JsonOutput,
    SamplingParams,
    ToolCall,
    ToolSpec,
)

SEALS = {"sealed-1": "what the server thought"}
WEATHER: dict[str, Any] = {
    "type": "function", "name": "get_weather", "description": "Weather now",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
TIME: dict[str, Any] = {"type": "function", "name": "get_time"}


def decrypt(token: str) -> str | None:
    """This server's seals: the tokens it knows; None for any other."""
    return SEALS.get(token)


def never(token: str) -> str | None:
    raise AssertionError(f"decrypt called with {token!r}")


def request(**fields: Any) -> s.ResponsesRequest:
    body: dict[str, Any] = {"model": "tiny", "input": "hi"}
    body.update(fields)
    return s.ResponsesRequest.model_validate(body)


def chat(input: str | list[dict[str, Any]], instructions: str | None = None,
         decrypt_with: Any = decrypt) -> tuple[ChatMessage, ...]:
    """The messages of a request's input, as a client sends it."""
    req = request(input=input, instructions=instructions)
    return messages(req.instructions, input_items(req.input), decrypt_with)


def generation(**fields: Any) -> GenerationRequest:
    req = request(**fields)
    prompt = Prompt(instructions=req.instructions, items=input_items(req.input),
                    tools=req.tools or [], tool_choice=req.tool_choice,
                    parallel_tool_calls=req.parallel_tool_calls, text=req.text,
                    reasoning=req.reasoning)
    return to_generation_request(req.model, prompt, decrypt)


def call(call_id: str, name: str = "get_weather", arguments: str = '{"city": "Paris"}'
         ) -> dict[str, Any]:
    return {"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments}


def output(call_id: str, text: str = "18C") -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": text}


def reasoning(**fields: Any) -> dict[str, Any]:
    return {"type": "reasoning", **fields}


# --- input_items -------------------------------------------------------------------------


def test_a_string_input_is_one_user_message() -> None:
    items = input_items("hello")
    assert len(items) == 1
    item = items[0]
    assert isinstance(item, s.MessageItem)
    assert (item.role, item.content) == ("user", "hello")


def test_an_empty_string_input_is_no_items() -> None:
    assert input_items("") == []
    assert chat("") == ()


def test_a_list_input_is_its_items_in_order() -> None:
    req = request(input=[{"role": "user", "content": "a"}, call("c1"), output("c1")])
    items = input_items(req.input)
    assert [item.type for item in items] == ["message", "function_call", "function_call_output"]
    assert items == req.input and items is not req.input


# --- messages ----------------------------------------------------------------------------


def test_instructions_and_leading_system_messages_are_one_first_system_message() -> None:
    assert chat([
        {"role": "system", "content": "Sys."},
        {"role": "developer", "content": [{"type": "input_text", "text": "Dev "},
                                          {"type": "input_text", "text": "rules."}]},
        {"role": "user", "content": "hi"},
    ], instructions="Be brief.") == (
        ChatMessage("system", "Be brief.\n\nSys.\n\nDev rules."),
        ChatMessage("user", "hi"),
    )


def test_instructions_alone_are_the_system_message() -> None:
    assert chat("hi", instructions="Be brief.") == (
        ChatMessage("system", "Be brief."), ChatMessage("user", "hi"))
    assert chat("hi") == (ChatMessage("user", "hi"),)
    assert chat("hi", instructions="") == (ChatMessage("user", "hi"),)


def test_a_later_developer_message_is_a_system_message_in_place() -> None:
    assert chat([
        {"role": "developer", "content": "First."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "developer", "content": "Now answer in French."},
        {"role": "user", "content": "again"},
    ]) == (
        ChatMessage("system", "First."),
        ChatMessage("user", "hi"),
        ChatMessage("assistant", "hello"),
        ChatMessage("system", "Now answer in French."),
        ChatMessage("user", "again"),
    )


def test_a_function_call_joins_the_assistant_message_before_it() -> None:
    assert chat([
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Looking it up."}]},
        call("call_1"),
        output("call_1"),
    ]) == (
        ChatMessage("user", "weather?"),
        ChatMessage("assistant", "Looking it up.",
                    tool_calls=(ToolCall("call_1", "get_weather", '{"city": "Paris"}'),)),
        ChatMessage("tool", "18C", tool_call_id="call_1"),
    )


def test_a_function_call_alone_starts_an_assistant_message_with_empty_content() -> None:
    assert chat([{"role": "user", "content": "weather?"}, call("call_1")]) == (
        ChatMessage("user", "weather?"),
        ChatMessage("assistant", "",
                    tool_calls=(ToolCall("call_1", "get_weather", '{"city": "Paris"}'),)),
    )


def test_two_consecutive_function_calls_are_one_assistant_turn() -> None:
    got = chat([
        {"role": "user", "content": "weather and time?"},
        call("call_1"),
        call("call_2", "get_time", "{}"),
        output("call_1"),
        output("call_2", "noon"),
    ])
    assert got == (
        ChatMessage("user", "weather and time?"),
        ChatMessage("assistant", "", tool_calls=(
            ToolCall("call_1", "get_weather", '{"city": "Paris"}'),
            ToolCall("call_2", "get_time", "{}"))),
        ChatMessage("tool", "18C", tool_call_id="call_1"),
        ChatMessage("tool", "noon", tool_call_id="call_2"),
    )


def test_a_call_after_a_tool_result_is_a_new_assistant_turn() -> None:
    got = chat([{"role": "user", "content": "q"}, call("c1"), output("c1"), call("c2")])
    assert [m.role for m in got] == ["user", "assistant", "tool", "assistant"]
    assert [c.id for c in got[3].tool_calls] == ["c2"]


def test_a_function_call_output_is_a_tool_message() -> None:
    got = chat([{"role": "user", "content": "q"}, call("c1"),
                {"type": "function_call_output", "call_id": "c1",
                 "output": [{"type": "input_text", "text": "18"},
                            {"type": "input_text", "text": "C"}]}])
    assert got[-1] == ChatMessage("tool", "18C", tool_call_id="c1")


def test_assistant_output_text_and_refusal_parts_read_as_text() -> None:
    got = chat([
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [
            {"type": "output_text", "text": "Well, ", "annotations": []},
            {"type": "refusal", "refusal": "I cannot help with that."}]},
    ])
    assert got[-1] == ChatMessage("assistant", "Well, I cannot help with that.")


def test_reasoning_is_the_reasoning_of_the_next_assistant_message() -> None:
    got = chat([
        {"role": "user", "content": "2+2?"},
        reasoning(content=[{"type": "reasoning_text", "text": "two and "},
                           {"type": "reasoning_text", "text": "two is four"}],
                  summary=[{"type": "summary_text", "text": "the summary"}]),
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "and 3+3?"},
        {"role": "assistant", "content": "6"},
    ])
    assert got == (
        ChatMessage("user", "2+2?"),
        ChatMessage("assistant", "4", reasoning="two and two is four"),
        ChatMessage("user", "and 3+3?"),
        ChatMessage("assistant", "6"),  # the reasoning went with the first answer only
    )


def test_reasoning_is_the_reasoning_of_the_next_function_call() -> None:
    got = chat([
        {"role": "user", "content": "weather?"},
        reasoning(summary=[{"type": "summary_text", "text": "I should call the tool"}]),
        call("c1"),
        call("c2", "get_time", "{}"),
    ])
    assert got[1] == ChatMessage("assistant", "", reasoning="I should call the tool",
                                 tool_calls=(ToolCall("c1", "get_weather", '{"city": "Paris"}'),
                                             ToolCall("c2", "get_time", "{}")))
    assert len(got) == 2


def test_reasoning_after_an_assistant_message_starts_the_call_turn_it_belongs_to() -> None:
    got = chat([
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "Let me check."},
        reasoning(content=[{"type": "reasoning_text", "text": "need the tool"}]),
        call("c1"),
    ])
    assert got[1:] == (
        ChatMessage("assistant", "Let me check."),
        ChatMessage("assistant", "", reasoning="need the tool",
                    tool_calls=(ToolCall("c1", "get_weather", '{"city": "Paris"}'),)),
    )


def test_sealed_reasoning_is_decrypted() -> None:
    got = chat([
        {"role": "user", "content": "q"},
        reasoning(encrypted_content="sealed-1",
                  content=[{"type": "reasoning_text", "text": "the shown text"}],
                  summary=[{"type": "summary_text", "text": "the summary"}]),
        {"role": "assistant", "content": "a"},
    ])
    assert got[-1].reasoning == "what the server thought"


def test_a_seal_that_does_not_open_falls_back_to_the_content() -> None:
    got = chat([
        {"role": "user", "content": "q"},
        reasoning(encrypted_content="someone-elses",
                  content=[{"type": "reasoning_text", "text": "the shown text"}],
                  summary=[{"type": "summary_text", "text": "the summary"}]),
        {"role": "assistant", "content": "a"},
    ])
    assert got[-1].reasoning == "the shown text"


def test_reasoning_without_content_falls_back_to_the_summary() -> None:
    got = chat([
        {"role": "user", "content": "q"},
        reasoning(encrypted_content="someone-elses",
                  summary=[{"type": "summary_text", "text": "step one; "},
                           {"type": "summary_text", "text": "step two"}]),
        {"role": "assistant", "content": "a"},
    ])
    assert got[-1].reasoning == "step one; step two"


def test_reasoning_without_a_seal_is_not_decrypted() -> None:
    got = chat([
        {"role": "user", "content": "q"},
        reasoning(content=[{"type": "reasoning_text", "text": "plain"}]),
        {"role": "assistant", "content": "a"},
    ], decrypt_with=never)
    assert got[-1].reasoning == "plain"


@pytest.mark.parametrize("part", [
    {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
    {"type": "input_file", "file_id": "file_1"},
])
def test_media_parts_are_refused_with_param(part: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError) as info:
        chat([
            {"role": "developer", "content": "d"},
            {"role": "user", "content": "first"},
            {"role": "user", "content": [{"type": "input_text", "text": "what is this?"},
                                         part]},
        ])
    assert info.value.param == "input.2.content"
    assert part["type"] in info.value.message


def test_a_media_part_in_a_leading_system_message_is_refused_too() -> None:
    with pytest.raises(InvalidRequestError) as info:
        chat([{"role": "system", "content": [{"type": "input_image", "image_url": "x"}]}])
    assert info.value.param == "input.0.content"


# --- to_generation_request ---------------------------------------------------------------


def test_the_request_becomes_a_generation_request() -> None:
    gen = generation(instructions="Be brief.", input="hi")
    assert gen.model == "tiny"
    assert gen.messages == (ChatMessage("system", "Be brief."), ChatMessage("user", "hi"))
    assert gen.tools == () and gen.constraint is None
    assert gen.parallel_tool_calls is True
    assert not gen.reasoning.off and gen.reasoning.effort is None


def test_function_tools_are_offered() -> None:
    gen = generation(tools=[WEATHER, TIME])
    assert gen.tools == (
        ToolSpec("get_weather", "Weather now", WEATHER["parameters"]),
        ToolSpec("get_time", None, {}),
    )
    assert gen.constraint is None


def test_builtin_tools_are_left_out() -> None:
    gen = generation(tools=[{"type": "web_search"}, WEATHER,
                            {"type": "file_search", "vector_store_ids": ["vs_1"]}])
    assert [tool.name for tool in gen.tools] == ["get_weather"]
    assert generation(tools=[{"type": "web_search"}]).tools == ()


def test_tool_choice_none_offers_no_tools() -> None:
    gen = generation(tools=[WEATHER], tool_choice="none")
    assert gen.tools == () and gen.constraint is None


def test_tool_choice_required_forces_a_call() -> None:
    gen = generation(tools=[WEATHER, TIME], tool_choice="required")
    assert len(gen.tools) == 2
    assert gen.constraint == ForcedToolCall(None)


def test_a_function_choice_forces_that_tool() -> None:
    gen = generation(tools=[WEATHER, TIME],
                     tool_choice={"type": "function", "name": "get_time"})
    assert gen.constraint == ForcedToolCall("get_time")


@pytest.mark.parametrize("tools", [[WEATHER], [{"type": "web_search"}], None])
def test_a_function_choice_naming_an_undeclared_tool_is_refused(
        tools: list[dict[str, Any]] | None) -> None:
    with pytest.raises(InvalidRequestError) as info:
        generation(tools=tools, tool_choice={"type": "function", "name": "get_time"})
    assert info.value.param == "tool_choice"


def test_json_schema_format_is_a_json_constraint() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    gen = generation(text={"format": {"type": "json_schema", "name": "answer",
                                      "schema": schema, "strict": True}})
    assert gen.constraint == JsonOutput(schema)


def test_json_object_format_is_any_json() -> None:
    assert generation(text={"format": {"type": "json_object"}}).constraint == JsonOutput()


@pytest.mark.parametrize("text", [{"format": {"type": "text"}}, {"verbosity": "low"}, None])
def test_text_format_is_no_constraint(text: dict[str, Any] | None) -> None:
    assert generation(text=text).constraint is None


def test_a_forced_tool_call_wins_over_the_text_format() -> None:
    gen = generation(tools=[WEATHER], tool_choice="required",
                     text={"format": {"type": "json_object"}})
    assert gen.constraint == ForcedToolCall(None)


@pytest.mark.parametrize(("effort", "expected"), [
    ("xhigh", "high"), ("high", "high"), ("medium", "medium"), ("low", "low"),
    ("minimal", "minimal"), ("none", "none"), (None, None),
])
def test_reasoning_effort(effort: str | None, expected: str | None) -> None:
    gen = generation(reasoning={"effort": effort, "summary": "auto"})
    assert gen.reasoning.effort == expected
    assert gen.reasoning.off is (effort == "none")


def test_no_reasoning_config_is_the_models_default() -> None:
    gen = generation()
    assert gen.reasoning.effort is None and not gen.reasoning.off


def test_the_server_budget_is_the_reasoning_budget() -> None:
    req = request()
    prompt = Prompt(instructions=None, items=input_items(req.input), tools=[],
                    tool_choice=None, parallel_tool_calls=None, text=None, reasoning=None)
    assert to_generation_request("tiny", prompt, decrypt, default_budget=300
                                 ).reasoning.budget_tokens == 300
    assert to_generation_request("tiny", prompt, decrypt).reasoning.budget_tokens is None


@pytest.mark.parametrize(("value", "expected"), [(False, False), (True, True), (None, True)])
def test_parallel_tool_calls_is_passed_on(value: bool | None, expected: bool) -> None:
    assert generation(tools=[WEATHER], parallel_tool_calls=value
                      ).parallel_tool_calls is expected


def test_sealed_history_reasoning_is_decrypted_through_the_callable() -> None:
    gen = generation(input=[{"role": "user", "content": "q"},
                            reasoning(encrypted_content="sealed-1"),
                            {"role": "assistant", "content": "a"}])
    assert gen.messages[-1] == ChatMessage("assistant", "a", reasoning="what the server thought")


# --- sampling ----------------------------------------------------------------------------

DEFAULTS = SamplingParams(temperature=0.3, top_p=0.9, top_k=20, min_p=0.1)


def test_sampling_keeps_the_defaults_the_request_leaves_out() -> None:
    got = sampling(request(), DEFAULTS)
    assert got == DEFAULTS
    assert (got.temperature, got.top_p, got.top_k, got.min_p) == (0.3, 0.9, 20, 0.1)
    assert got.max_tokens is None and got.seed is None


def test_sampling_takes_the_request_values() -> None:
    got = sampling(request(temperature=0.0, top_p=0.5, top_k=0, min_p=0.0, seed=7,
                           max_output_tokens=64), DEFAULTS)
    assert (got.temperature, got.top_p, got.top_k, got.min_p) == (0.0, 0.5, 0, 0.0)
    assert got.seed == 7
    assert got.max_tokens == 64


def test_sampling_overrides_only_what_is_given() -> None:
    got = sampling(request(temperature=1.5), DEFAULTS)
    assert got.temperature == 1.5
    assert (got.top_p, got.top_k, got.min_p) == (0.9, 20, 0.1)
    # Fields the Responses API has no place for keep the defaults.
    assert (got.presence_penalty, got.repetition_penalty, got.stop) == (0.0, 1.0, ())
