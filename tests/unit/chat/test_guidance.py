"""Lark grammars for llguidance: JSON output, tool calls framed by their markers."""

from __future__ import annotations

import json

from mlxjan.chat.guidance import closed_objects, lark_for
from mlxjan.chat.tool_calls import HERMES, JSON_ONLY
from mlxjan.engine.base import ForcedToolCall, JsonOutput

DECLARED = {"get_weather": {"type": "object", "properties": {"city": {"type": "string"}}}}


def _schema_of(lark: str) -> dict[str, object]:
    start = lark.index("%json ") + len("%json ")
    decoder = json.JSONDecoder()
    value, _ = decoder.raw_decode(lark[start:])
    assert isinstance(value, dict)
    return value


def test_json_output_is_one_compact_schema() -> None:
    lark = lark_for(JsonOutput({"type": "object", "properties": {"n": {"type": "integer"}}}),
                    HERMES, {}, lambda _: None)
    assert lark.startswith("start: %json ")
    schema = _schema_of(lark)
    assert schema["additionalProperties"] is False
    assert schema["x-guidance"] == {"whitespace_flexible": False, "key_separator": ": ",
                                    "item_separator": ", "}


def test_any_json_object_when_no_schema() -> None:
    assert _schema_of(lark_for(JsonOutput(), HERMES, {}, lambda _: None))["type"] == "object"


def test_single_token_markers_are_matched_as_tokens() -> None:
    ids = {"<tool_call>": 151657, "</tool_call>": 151658}
    lark = lark_for(ForcedToolCall(), HERMES, DECLARED, ids.get)
    assert lark.startswith('start: <[151657]> "\\n" %json ')
    assert lark.rstrip().endswith('"\\n" <[151658]>')
    call = _schema_of(lark)
    assert call["properties"]["name"] == {"const": "get_weather"}  # type: ignore[index]


def test_multi_token_markers_are_text() -> None:
    lark = lark_for(ForcedToolCall(), HERMES, DECLARED, lambda _: None)
    assert lark.startswith('start: "<tool_call>" "\\n" %json ')


def test_bare_json_format_has_no_frame() -> None:
    assert lark_for(ForcedToolCall("get_weather"), JSON_ONLY, DECLARED,
                    lambda _: None).startswith("start: %json ")


def test_closed_objects_keeps_explicit_choices_and_literals() -> None:
    schema = {"type": "object", "properties": {"a": {"properties": {}}},
              "anyOf": [{"properties": {"b": {}}}], "const": {"properties": 1},
              "additionalProperties": True}
    closed = closed_objects(schema)
    assert closed["additionalProperties"] is True
    assert closed["properties"]["a"]["additionalProperties"] is False
    assert closed["anyOf"][0]["additionalProperties"] is False
    assert closed["const"] == {"properties": 1}
