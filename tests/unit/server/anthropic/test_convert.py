"""Anthropic Messages wire types <-> engine types."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mlxjan.errors import InvalidRequestError, ModelNotFoundError
from mlxjan.server.anthropic import schemas as s
from mlxjan.server.anthropic.convert import (
    message,
    resolve_model,
    stop_reason,
    system_text,
    to_generation_request,
    tool_use_id,
    usage_out,
)
from mlxjan.settings import Settings
from mlxjan.types import (
    ChatMessage,
    Finished,
    ForcedToolCall,
    SamplingParams,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)

BILLING = "x-anthropic-billing-header: cc_version=2.0.1; cch=abc123;"


def settings(**tiers: str | None) -> Settings:
    # Every field resolve_model reads is given, so no env var or config file can leak in.
    fields: dict[str, Any] = {"default_model": "local-default", "anthropic_opus_model": None,
                              "anthropic_sonnet_model": None, "anthropic_haiku_model": None}
    fields.update(tiers)
    return Settings(**fields)


def request(**fields: Any) -> s.MessagesRequest:
    body: dict[str, Any] = {"model": "claude-sonnet-4-5", "max_tokens": 64,
                            "messages": [{"role": "user", "content": "hi"}]}
    body.update(fields)
    return s.MessagesRequest.model_validate(body)


def converted(*messages: dict[str, Any], **fields: Any) -> tuple[ChatMessage, ...]:
    return to_generation_request(request(messages=list(messages), **fields), "tiny").messages


# --- resolve_model ---------------------------------------------------------------------------


def test_installed_model_passes_through() -> None:
    assert resolve_model("tiny", settings(), ["other", "tiny"]) == "tiny"


def test_installed_model_wins_over_claude_mapping() -> None:
    # A local model that happens to be named like a Claude model is used as is.
    chosen = resolve_model("claude-local", settings(anthropic_sonnet_model="mapped"),
                           iter(["claude-local"]))
    assert chosen == "claude-local"


@pytest.mark.parametrize(("name", "expected"), [
    ("claude-opus-4-1-20250805", "big"),
    ("claude-3-opus-20240229", "big"),
    ("claude-sonnet-4-5", "mid"),
    ("claude-3-5-sonnet-latest", "mid"),
    ("claude-haiku-4-5", "small"),
    ("claude-3-5-haiku-20241022", "small"),
])
def test_claude_tiers_map_to_their_configured_model(name: str, expected: str) -> None:
    conf = settings(anthropic_opus_model="big", anthropic_sonnet_model="mid",
                    anthropic_haiku_model="small")
    assert resolve_model(name, conf, []) == expected


@pytest.mark.parametrize("name", ["claude-opus-4", "claude-sonnet-4-5", "claude-3-5-haiku"])
def test_unconfigured_tier_falls_back_to_default_model(name: str) -> None:
    assert resolve_model(name, settings(), ["tiny"]) == "local-default"


def test_only_the_named_tier_is_used() -> None:
    conf = settings(anthropic_opus_model="big")
    assert resolve_model("claude-haiku-4-5", conf, []) == "local-default"
    assert resolve_model("claude-opus-4", conf, []) == "big"


def test_unknown_non_claude_model_is_not_found() -> None:
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("gpt-4o", settings(anthropic_sonnet_model="mid"), ["tiny"])
    assert info.value.model == "gpt-4o"
    assert info.value.param == "model"


# --- system_text -----------------------------------------------------------------------------


def text_blocks(*texts: str) -> list[s.TextBlock]:
    return [s.TextBlock(type="text", text=t) for t in texts]


def test_system_absent_is_empty() -> None:
    assert system_text(None) == ""


def test_system_string_is_kept() -> None:
    assert system_text("Be brief.") == "Be brief."


def test_system_text_blocks_are_joined_by_newlines() -> None:
    assert system_text(text_blocks("You are Claude Code.", "Be brief.")) == \
        "You are Claude Code.\nBe brief."


def test_billing_header_block_is_dropped_whole() -> None:
    assert system_text(text_blocks(BILLING, "You are Claude Code.", "Be brief.")) == \
        "You are Claude Code.\nBe brief."


def test_billing_header_line_inside_a_block_is_stripped() -> None:
    assert system_text(text_blocks(f"{BILLING}\nYou are Claude Code.\nBe brief.")) == \
        "You are Claude Code.\nBe brief."
    assert system_text(f"Intro.\n{BILLING}\nRest.") == "Intro.\nRest."


def test_billing_header_alone_leaves_no_system_text() -> None:
    assert system_text(BILLING) == ""
    assert system_text(text_blocks(BILLING)) == ""
    assert system_text(text_blocks(BILLING, "")) == ""


def test_billing_header_never_reaches_the_prompt() -> None:
    msgs = converted({"role": "user", "content": "hi"}, system=[
        {"type": "text", "text": BILLING},
        {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
    ])
    assert msgs[0] == ChatMessage("system", "You are Claude Code.")
    assert all("billing" not in m.content for m in msgs)


def test_system_of_only_the_billing_header_adds_no_system_message() -> None:
    assert converted({"role": "user", "content": "hi"}, system=BILLING) == (
        ChatMessage("user", "hi"),)


def test_only_lines_starting_with_the_header_are_stripped() -> None:
    text = f"Mention {BILLING} here."
    assert system_text(text) == text


# --- to_generation_request: messages -----------------------------------------------------------


def test_plain_conversation() -> None:
    gen = to_generation_request(request(
        system="Sys.",
        messages=[{"role": "user", "content": "Hello"},
                  {"role": "assistant", "content": "Hi!"},
                  {"role": "user", "content": [{"type": "text", "text": "How "},
                                               {"type": "text", "text": "are you?"}]}],
    ), "tiny")
    assert gen.model == "tiny"
    assert gen.messages == (
        ChatMessage("system", "Sys."),
        ChatMessage("user", "Hello"),
        ChatMessage("assistant", "Hi!"),
        ChatMessage("user", "How \nare you?"),
    )


def test_system_messages_inside_messages_stay_in_place() -> None:
    msgs = converted(
        {"role": "user", "content": "first"},
        {"role": "system", "content": "A reminder."},
        {"role": "assistant", "content": "ok"},
        {"role": "system", "content": [{"type": "text", "text": "Another."}]},
        {"role": "user", "content": "second"},
        system="Top.",
    )
    assert msgs == (
        ChatMessage("system", "Top."),
        ChatMessage("user", "first"),
        ChatMessage("system", "A reminder."),
        ChatMessage("assistant", "ok"),
        ChatMessage("system", "Another."),
        ChatMessage("user", "second"),
    )


def test_tool_use_becomes_assistant_tool_calls_with_json_arguments() -> None:
    msgs = converted(
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
             "input": {"city": "Paris", "days": [1, 2], "unit": "°C"}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}},
        ]},
    )
    assistant = msgs[-1]
    assert assistant.role == "assistant"
    assert assistant.content == "Let me check."
    assert [(c.id, c.name) for c in assistant.tool_calls] == [
        ("toolu_1", "get_weather"), ("toolu_2", "get_time")]
    assert json.loads(assistant.tool_calls[0].arguments) == {
        "city": "Paris", "days": [1, 2], "unit": "°C"}
    assert json.loads(assistant.tool_calls[1].arguments) == {}


def test_tool_use_without_text_still_makes_an_assistant_turn() -> None:
    msgs = converted(
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "run", "input": {"cmd": "ls"}}]},
    )
    assert msgs[-1] == ChatMessage(
        "assistant", "", tool_calls=(ToolCall("toolu_1", "run", '{"cmd": "ls"}'),))


def test_tool_results_come_right_after_the_call_before_user_text() -> None:
    msgs = converted(
        {"role": "user", "content": "list files"},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "ls", "input": {}},
            {"type": "tool_use", "id": "toolu_2", "name": "pwd", "input": {}}]},
        # Text first on the wire: the results still go first, next to their calls.
        {"role": "user", "content": [
            {"type": "text", "text": "Here you go."},
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a.txt\nb.txt"},
            {"type": "tool_result", "tool_use_id": "toolu_2",
             "content": [{"type": "text", "text": "/home"}, {"type": "text", "text": "/x"}]},
            {"type": "text", "text": "Now summarise."}]},
    )
    assert [m.role for m in msgs] == ["user", "assistant", "tool", "tool", "user"]
    assert msgs[2] == ChatMessage("tool", "a.txt\nb.txt", tool_call_id="toolu_1")
    assert msgs[3] == ChatMessage("tool", "/home\n/x", tool_call_id="toolu_2")
    assert msgs[4] == ChatMessage("user", "Here you go.\nNow summarise.")


def test_tool_results_alone_add_no_empty_user_turn() -> None:
    msgs = converted(
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "run", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "done"}]},
    )
    assert msgs[-1] == ChatMessage("tool", "done", tool_call_id="toolu_1")
    assert [m.role for m in msgs] == ["user", "assistant", "tool"]


def test_tool_result_without_content_is_empty_text() -> None:
    msgs = converted({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1"}]})
    assert msgs == (ChatMessage("tool", "", tool_call_id="toolu_1"),)


@pytest.mark.parametrize("content", [
    "command not found",
    [{"type": "text", "text": "command not found"}],
])
def test_error_tool_results_stay_visible_as_errors(content: Any) -> None:
    msgs = converted({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": content,
         "is_error": True}]})
    assert msgs == (ChatMessage("tool", "Error: command not found", tool_call_id="toolu_1"),)


def test_error_tool_result_already_saying_error_is_not_prefixed_twice() -> None:
    msgs = converted({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Error: exit code 1",
         "is_error": True}]})
    assert msgs[0].content == "Error: exit code 1"


def test_empty_error_tool_result_still_reads_as_an_error() -> None:
    msgs = converted({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": True}]})
    assert msgs[0].content.startswith("Error")


def test_assistant_text_blocks_are_joined_without_separator() -> None:
    msgs = converted(
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "text", "text": "Hel"},
                                          {"type": "text", "text": "lo"}]},
    )
    assert msgs[-1] == ChatMessage("assistant", "Hello")


@pytest.mark.parametrize("block_type", ["image", "document"])
def test_image_blocks_are_refused_with_param_at_the_block(block_type: str) -> None:
    req = request(messages=[
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": block_type, "source": {"type": "base64", "media_type": "image/png",
                                            "data": "AAAA"}}]},
    ])
    with pytest.raises(InvalidRequestError) as info:
        to_generation_request(req, "tiny")
    assert info.value.param == "messages.2.content.1"
    assert info.value.message.startswith("messages.2.content.1")
    assert block_type in info.value.message


def test_image_tool_results_are_refused_with_param_at_the_block() -> None:
    req = request(messages=[
        {"role": "user", "content": "screenshot"},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "shot", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": [
                {"type": "text", "text": "here"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": "AAAA"}}]}]},
    ])
    with pytest.raises(InvalidRequestError) as info:
        to_generation_request(req, "tiny")
    assert info.value.param == "messages.2.content.0"
    assert "image" in info.value.message


def test_billing_header_in_messages_is_left_alone() -> None:
    # Only the top-level system prompt is scrubbed; message text is the user's own.
    msgs = converted({"role": "user", "content": BILLING})
    assert msgs == (ChatMessage("user", BILLING),)


# --- to_generation_request: tools and sampling --------------------------------------------------

TOOLS = [
    {"name": "get_weather", "description": "Weather for a city.",
     "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                      "required": ["city"]},
     "cache_control": {"type": "ephemeral"}},
    {"name": "noop", "input_schema": {"type": "object"}},
]


def test_tools_become_tool_specs_rendered_in_openai_function_shape() -> None:
    gen = to_generation_request(request(tools=TOOLS), "tiny")
    assert [tool.template_dict() for tool in gen.tools] == [
        {"type": "function", "function": {
            "name": "get_weather", "description": "Weather for a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"]}}},
        {"type": "function", "function": {"name": "noop", "parameters": {"type": "object"}}},
    ]


@pytest.mark.parametrize("choice", [None, {"type": "auto"}, {"type": "any"},
                                    {"type": "tool", "name": "noop"}])
def test_tools_are_kept_unless_tool_choice_is_none(choice: dict[str, str] | None) -> None:
    gen = to_generation_request(request(tools=TOOLS, tool_choice=choice), "tiny")
    assert gen.tools == to_generation_request(request(tools=TOOLS), "tiny").tools
    assert len(gen.tools) == 2


def test_tool_choice_none_drops_tools() -> None:
    gen = to_generation_request(request(tools=TOOLS, tool_choice={"type": "none"}), "tiny")
    assert gen.tools == ()


@pytest.mark.parametrize(("choice", "constraint"), [
    (None, None),
    ({"type": "auto"}, None),
    ({"type": "none"}, None),
    ({"type": "any"}, ForcedToolCall(None)),
    ({"type": "tool", "name": "get_weather"}, ForcedToolCall("get_weather")),
    ({"type": "any", "disable_parallel_tool_use": True}, ForcedToolCall(None)),
])
def test_tool_choice_sets_the_constraint(choice: dict[str, Any] | None,
                                         constraint: ForcedToolCall | None) -> None:
    gen = to_generation_request(request(tools=TOOLS, tool_choice=choice), "tiny")
    assert gen.constraint == constraint


@pytest.mark.parametrize(("choice", "parallel"), [
    (None, True),
    ({"type": "auto"}, True),
    ({"type": "auto", "disable_parallel_tool_use": False}, True),
    ({"type": "auto", "disable_parallel_tool_use": True}, False),
    ({"type": "any", "disable_parallel_tool_use": True}, False),
    ({"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}, False),
])
def test_disable_parallel_tool_use(choice: dict[str, Any] | None, parallel: bool) -> None:
    gen = to_generation_request(request(tools=TOOLS, tool_choice=choice), "tiny")
    assert gen.parallel_tool_calls is parallel


@pytest.mark.parametrize(("choice", "param"), [
    ({"type": "tool"}, "tool_choice.name"),
    ({"type": "tool", "name": "get_stock"}, "tool_choice"),
])
def test_tool_choice_tool_needs_a_declared_name(choice: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        to_generation_request(request(tools=TOOLS, tool_choice=choice), "tiny")
    assert info.value.param == param


@pytest.mark.parametrize("choice", [{"type": "any"}, {"type": "tool", "name": "noop"}])
def test_forcing_a_tool_without_tools_is_refused(choice: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError) as info:
        to_generation_request(request(tool_choice=choice), "tiny")
    assert info.value.param == "tool_choice"


def test_count_tokens_takes_the_same_tool_choice() -> None:
    req = s.CountTokensRequest.model_validate({
        "model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}],
        "tools": TOOLS, "tool_choice": {"type": "none"}})
    assert to_generation_request(req, "tiny").tools == ()


def test_no_tools() -> None:
    assert to_generation_request(request(), "tiny").tools == ()


def test_sampling_is_mapped() -> None:
    gen = to_generation_request(request(
        max_tokens=128000, temperature=0.2, top_p=0.5, top_k=7,
        stop_sequences=["\n\nHuman:", "", "END"]), "tiny")
    assert gen.sampling.max_tokens == 128000
    assert gen.sampling.temperature == 0.2
    assert gen.sampling.top_p == 0.5
    assert gen.sampling.top_k == 7
    assert gen.sampling.stop == ("\n\nHuman:", "END")


def test_unset_sampling_fields_use_engine_defaults() -> None:
    defaults = SamplingParams()
    sampling = to_generation_request(request(max_tokens=10), "tiny").sampling
    assert sampling == SamplingParams(max_tokens=10)
    assert (sampling.temperature, sampling.top_p, sampling.top_k) == (
        defaults.temperature, defaults.top_p, defaults.top_k)


def test_zero_sampling_values_are_kept_not_defaulted() -> None:
    sampling = to_generation_request(request(temperature=0, top_p=0, top_k=0), "tiny").sampling
    assert (sampling.temperature, sampling.top_p, sampling.top_k) == (0, 0, 0)


def test_count_tokens_request_converts_with_default_sampling() -> None:
    req = s.CountTokensRequest.model_validate({
        "model": "claude-sonnet-4-5",
        "system": [{"type": "text", "text": BILLING}, {"type": "text", "text": "Sys."}],
        "messages": [{"role": "user", "content": "hi"},
                     {"role": "assistant", "content": [
                         {"type": "tool_use", "id": "t1", "name": "noop", "input": {}}]},
                     {"role": "user", "content": [
                         {"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]}],
        "tools": TOOLS,
    })
    gen = to_generation_request(req, "tiny")
    assert gen.model == "tiny"
    assert gen.sampling == SamplingParams()
    assert gen.messages == (
        ChatMessage("system", "Sys."),
        ChatMessage("user", "hi"),
        ChatMessage("assistant", "", tool_calls=(ToolCall("t1", "noop", "{}"),)),
        ChatMessage("tool", "ok", tool_call_id="t1"),
    )
    assert len(gen.tools) == 2


def test_count_tokens_and_messages_build_the_same_prompt() -> None:
    body: dict[str, Any] = {"model": "claude-sonnet-4-5", "system": "Sys.", "tools": TOOLS,
                            "messages": [{"role": "user", "content": "hi"}]}
    counted = to_generation_request(s.CountTokensRequest.model_validate(body), "tiny")
    sent = to_generation_request(s.MessagesRequest.model_validate({**body, "max_tokens": 5}),
                                 "tiny")
    assert (counted.messages, counted.tools) == (sent.messages, sent.tools)


# --- engine events -> responses --------------------------------------------------------------


@pytest.mark.parametrize(("finished", "expected"), [
    (Finished("stop", Usage(10, 3), stop_sequence="END"), "stop_sequence"),
    # A stop string found on the last allowed token is still a stop sequence.
    (Finished("length", Usage(10, 3), stop_sequence="END"), "stop_sequence"),
    (Finished("length", Usage(10, 3)), "max_tokens"),
    (Finished("stop", Usage(10, 3)), "end_turn"),
])
def test_stop_reason(finished: Finished, expected: str) -> None:
    assert stop_reason(finished) == expected


@pytest.mark.parametrize(("prompt", "cached", "output"), [
    (0, 0, 0), (10, 0, 3), (10, 4, 3), (10, 10, 0), (123_456, 120_000, 999)])
def test_usage_adds_up_to_the_prompt(prompt: int, cached: int, output: int) -> None:
    usage = usage_out(prompt, cached, output)
    assert usage.input_tokens + usage.cache_read_input_tokens + \
        usage.cache_creation_input_tokens == prompt
    assert usage.cache_read_input_tokens == cached
    assert usage.cache_creation_input_tokens == 0
    assert usage.output_tokens == output


def test_message_joins_deltas() -> None:
    finished = Finished("stop", Usage(prompt_tokens=20, completion_tokens=3, cached_tokens=8))
    out = message("msg_1", "claude-sonnet-4-5",
                  [TextDelta("Hel"), TextDelta(""), TextDelta("lo!")], finished)
    assert out.model_dump(mode="json") == {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "Hello!"}],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 3, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 8},
    }


@pytest.mark.parametrize("deltas", [[], [TextDelta("")], [TextDelta(""), TextDelta("")]])
def test_message_without_text_has_empty_content(deltas: list[TextDelta]) -> None:
    out = message("msg_1", "m", deltas, Finished("length", Usage(5, 0)))
    assert out.content == []
    assert out.stop_reason == "max_tokens"
    assert out.usage.output_tokens == 0


def test_message_reports_the_stop_sequence() -> None:
    out = message("msg_1", "m", [TextDelta("a")], Finished("stop", Usage(5, 1), "END"))
    assert (out.stop_reason, out.stop_sequence) == ("stop_sequence", "END")


# --- tool use in responses -------------------------------------------------------------------

CALL_DELTAS = [
    ToolCallDelta(0, "call_abc", "get_weather", ""),
    ToolCallDelta(0, None, None, '{"city": "Paris"}'),
    ToolCallDelta(1, "call_def", "noop", ""),
    ToolCallDelta(1, None, None, "{}"),
]


def test_stop_reason_for_tool_calls_is_tool_use() -> None:
    assert stop_reason(Finished("tool_calls", Usage(10, 3))) == "tool_use"


def test_tool_use_ids_take_anthropics_prefix() -> None:
    assert tool_use_id("call_abc123") == "toolu_abc123"


def test_message_with_text_and_tool_use_blocks() -> None:
    out = message("msg_1", "m", [TextDelta("Let me check."), *CALL_DELTAS],
                  Finished("tool_calls", Usage(20, 9)))
    dumped = out.model_dump(mode="json")
    assert dumped["content"] == [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_abc", "name": "get_weather",
         "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_def", "name": "noop", "input": {}},
    ]
    assert dumped["stop_reason"] == "tool_use"
    assert dumped["stop_sequence"] is None


def test_message_with_only_a_tool_use_block() -> None:
    out = message("msg_1", "m", CALL_DELTAS[:2], Finished("tool_calls", Usage(20, 9)))
    assert [b.type for b in out.content] == ["tool_use"]
    assert out.stop_reason == "tool_use"
