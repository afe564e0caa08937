"""Constrained decoding: GBNF for JSON answers and forced tool calls, and tool_choice."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest

from mlxjan.chat.constraints import ANY_OBJECT, apply_tool_choice, tool_call_schema
from mlxjan.chat.tool_calls import HERMES, JSON_ONLY, LLAMA3, MISTRAL, declared_tools
from mlxjan.chat.tool_formats import FORMATS, ToolFormat
from mlxjan.engine.llamacpp.grammar import gbnf_for
from mlxjan.errors import InvalidRequestError
from mlxjan.types import ForcedToolCall, JsonOutput, TextAnswer, ToolSpec

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = (ToolSpec("get_weather", parameters=WEATHER), ToolSpec("get_time"))
DECLARED = declared_tools(TOOLS)


def rules(grammar: str) -> dict[str, str]:
    """Rule name -> body; every line of the grammar is one `name ::= body` rule."""
    out: dict[str, str] = {}
    for line in grammar.strip().splitlines():
        match = re.fullmatch(r"([A-Za-z0-9-]+) ::= (.+)", line)
        assert match, f"not a rule: {line!r}"
        assert match.group(1) not in out, f"rule {match.group(1)} defined twice"
        out[match.group(1)] = match.group(2)
    return out


# --- gbnf_for: answers in words ------------------------------------------------------------


@pytest.mark.parametrize("fmt", [HERMES, MISTRAL, LLAMA3, JSON_ONLY])
def test_text_answer_may_not_open_a_call_or_json(fmt: Any) -> None:
    grammar = gbnf_for(TextAnswer(), fmt, DECLARED)
    assert grammar is not None
    first = re.fullmatch(r"(\[\^.+?\]) \.\*", rules(grammar)["root"])
    assert first, grammar
    # This GBNF class reads the same as a regex class: openers are out, words are in.
    opener = re.compile(first.group(1))
    assert [c for c in "{[`< \n" if opener.fullmatch(c)] == []
    assert all(opener.fullmatch(c) for c in "TIé1\"")


# --- gbnf_for: JSON answers ------------------------------------------------------------------


def test_any_json_object() -> None:
    grammar = gbnf_for(JsonOutput(None), HERMES, {})
    assert grammar is not None
    defined = rules(grammar)
    assert defined["root"] == "object"
    assert defined["object"].startswith('"{"')


def test_json_object_matching_a_schema() -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}},
              "required": ["answer"]}
    grammar = gbnf_for(JsonOutput(schema), HERMES, {})
    assert grammar is not None
    defined = rules(grammar)
    assert "root" in defined
    assert '"\\"answer\\""' in grammar  # the property name is spelled out
    assert "integer" in defined
    assert "<tool_call>" not in grammar  # a JSON answer is never wrapped in call markers


def test_json_grammar_does_not_depend_on_the_tool_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    grammars = {gbnf_for(JsonOutput(schema), fmt, DECLARED)
                for fmt in (HERMES, JSON_ONLY, LLAMA3, MISTRAL)}
    assert len(grammars) == 1


# --- gbnf_for: forced tool calls -------------------------------------------------------------


@pytest.mark.parametrize("name", [None, "get_weather"])
def test_forced_call_in_hermes_tags(name: str | None) -> None:
    grammar = gbnf_for(ForcedToolCall(name), HERMES, DECLARED)
    assert grammar is not None
    defined = rules(grammar)
    assert defined["root"] == '"<tool_call>\\n" call "\\n</tool_call>"'
    assert "call" in defined
    assert '"\\"get_weather\\""' in grammar
    assert ('"\\"get_time\\""' in grammar) == (name is None)
    assert '"\\"arguments\\""' in grammar


def test_forced_call_without_markers_for_json_only() -> None:
    grammar = gbnf_for(ForcedToolCall("get_weather"), JSON_ONLY, DECLARED)
    assert grammar is not None
    defined = rules(grammar)
    assert defined["root"] == '"" call ""'
    assert "tool_call" not in grammar
    assert '"\\"city\\""' in grammar


def test_forced_call_for_llama3_uses_parameters() -> None:
    grammar = gbnf_for(ForcedToolCall("get_weather"), LLAMA3, DECLARED)
    assert grammar is not None
    assert rules(grammar)["root"] == '"<|python_tag|>" call ""'
    assert '"\\"parameters\\""' in grammar
    assert '"\\"arguments\\""' not in grammar


def test_forced_call_for_mistral_starts_with_its_marker() -> None:
    grammar = gbnf_for(ForcedToolCall(None), MISTRAL, DECLARED)
    assert grammar is not None
    assert rules(grammar)["root"] == '"[TOOL_CALLS]" call ""'


NOT_JSON = [fmt for fmt in FORMATS.values() if not fmt.json_body]


@pytest.mark.parametrize("fmt", NOT_JSON, ids=[fmt.name for fmt in NOT_JSON])
def test_no_json_grammar_for_calls_that_are_not_json(
        fmt: ToolFormat, caplog: pytest.LogCaptureFixture) -> None:
    # A JSON call inside `<tool_call>` would not parse as Qwen3-Coder's XML (nor GLM's, ...).
    with caplog.at_level(logging.INFO, logger="mlxjan.chat.constraints"):
        for name in (None, "get_weather"):
            assert gbnf_for(ForcedToolCall(name), fmt, DECLARED) is None
    assert "decoding unconstrained" in caplog.text
    # Answers in words and JSON answers do not depend on the call syntax.
    assert gbnf_for(TextAnswer(), fmt, DECLARED) == gbnf_for(TextAnswer(), HERMES, DECLARED)
    assert gbnf_for(JsonOutput(None), fmt, {}) == gbnf_for(JsonOutput(None), HERMES, {})


# --- tool_call_schema ------------------------------------------------------------------------


def test_tool_call_schema_for_one_named_tool() -> None:
    assert tool_call_schema(ForcedToolCall("get_weather"), HERMES, DECLARED) == {
        "type": "object",
        "properties": {"name": {"const": "get_weather"}, "arguments": WEATHER},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def test_tool_call_schema_for_any_tool_is_any_of_them() -> None:
    schema = tool_call_schema(ForcedToolCall(None), HERMES, DECLARED)
    variants = schema["anyOf"]
    assert [v["properties"]["name"] for v in variants] == [
        {"const": "get_weather"}, {"const": "get_time"}]
    assert variants[0]["properties"]["arguments"] == WEATHER
    assert variants[1]["properties"]["arguments"] == ANY_OBJECT  # no parameters: any object
    assert all(v["required"] == ["name", "arguments"] for v in variants)


def test_tool_call_schema_with_a_single_declared_tool_needs_no_any_of() -> None:
    schema = tool_call_schema(ForcedToolCall(None), HERMES, {"get_weather": WEATHER})
    assert "anyOf" not in schema
    assert schema["properties"]["name"] == {"const": "get_weather"}


def test_tool_call_schema_uses_the_family_argument_key() -> None:
    schema = tool_call_schema(ForcedToolCall("get_weather"), LLAMA3, DECLARED)
    assert schema["required"] == ["name", "parameters"]
    assert schema["properties"]["parameters"] == WEATHER
    assert "arguments" not in schema["properties"]


# --- schemas the converter cannot take ---------------------------------------------------------

UNSUPPORTED = [
    pytest.param({"$ref": "https://example.com/x.json"}, id="remote-ref"),
    pytest.param({"$ref": "#/$defs/missing"}, id="missing-local-ref"),
    pytest.param({"type": "tuple"}, id="unknown-type"),
    pytest.param({"type": "string", "pattern": "^[a$"}, id="unbalanced-pattern"),
    pytest.param({"type": "object", "properties": {"a": 5}}, id="property-not-a-schema"),
    pytest.param({"type": "array", "items": 5}, id="items-not-a-schema"),
]


@pytest.mark.parametrize("schema", UNSUPPORTED)
def test_unsupported_schema_gives_no_grammar(schema: dict[str, Any],
                                             caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="mlxjan.engine.llamacpp.grammar"):
        assert gbnf_for(JsonOutput(schema), HERMES, {}) is None
    assert "decoding unconstrained" in caplog.text


@pytest.mark.parametrize("schema", UNSUPPORTED)
def test_unsupported_tool_parameters_give_no_grammar(schema: dict[str, Any]) -> None:
    assert gbnf_for(ForcedToolCall("odd"), HERMES, {"odd": schema}) is None
    assert gbnf_for(ForcedToolCall(None), HERMES, {**DECLARED, "odd": schema}) is None


# --- apply_tool_choice -----------------------------------------------------------------------


def test_none_offers_no_tools() -> None:
    assert apply_tool_choice(TOOLS, "none") == ((), None)
    assert apply_tool_choice((), "none") == ((), None)


def test_auto_keeps_tools_unconstrained() -> None:
    assert apply_tool_choice(TOOLS, "auto") == (TOOLS, None)
    assert apply_tool_choice((), "auto") == ((), None)


def test_required_forces_a_call_to_any_tool() -> None:
    assert apply_tool_choice(TOOLS, "required") == (TOOLS, ForcedToolCall(None))


def test_a_name_forces_that_tool() -> None:
    assert apply_tool_choice(TOOLS, "required", "get_time") == (
        TOOLS, ForcedToolCall("get_time"))


def test_an_undeclared_name_is_refused() -> None:
    with pytest.raises(InvalidRequestError) as info:
        apply_tool_choice(TOOLS, "required", "get_stock")
    assert info.value.param == "tool_choice"
    assert "get_stock" in info.value.message


@pytest.mark.parametrize("name", [None, "get_weather"])
def test_a_forced_call_without_tools_is_refused(name: str | None) -> None:
    with pytest.raises(InvalidRequestError) as info:
        apply_tool_choice((), "required", name, param="tool_choice.name")
    assert info.value.param == "tool_choice.name"


def test_any_value_subschemas_are_spelled_out_for_the_converter() -> None:
    from mlxjan.engine.llamacpp.grammar import ANY_TYPE, grammar_friendly

    schema = {"type": "object", "properties": {
        "args": {"description": "anything, verbatim"},
        "list": {"type": "array", "items": {"title": "item"}},
        "either": {"anyOf": [{"type": "string"}, {"description": "other"}]}}}
    out = grammar_friendly(schema)
    assert out["properties"]["args"] == {"description": "anything, verbatim", "type": ANY_TYPE}
    assert out["properties"]["list"]["items"]["type"] == ANY_TYPE
    assert out["properties"]["either"]["anyOf"][1]["type"] == ANY_TYPE
    assert out["properties"]["either"]["anyOf"][0] == {"type": "string"}
    assert gbnf_for(JsonOutput(schema), HERMES, {}) is not None


def test_huge_bounds_are_dropped_and_huge_grammars_refused() -> None:
    from mlxjan.engine.llamacpp.grammar import grammar_friendly

    schema = {"type": "string", "maxLength": 524288, "minLength": 2}
    assert grammar_friendly(schema) == {"type": "string", "minLength": 2}
    big = {"type": "object", "properties": {
        f"p{i}": {"type": "string", "maxLength": 200} for i in range(200)}}
    assert gbnf_for(JsonOutput(big), HERMES, {}) is None


def test_remote_refs_are_never_followed() -> None:
    remote = {"type": "object", "properties": {"a": {"$ref": "https://example.com/x.json"}}}
    assert gbnf_for(JsonOutput(remote), HERMES, {}) is None
    assert gbnf_for(ForcedToolCall(), HERMES, {"t": remote}) is None
