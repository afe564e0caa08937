"""Lark grammars for llguidance: JSON output, tool calls framed by their markers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mlxjan.chat.tool_calls import HERMES, JSON_ONLY
from mlxjan.chat.tool_formats import FORMATS, ToolFormat
from mlxjan.engine.mlx.lark import ANY_TOKENS_LARK, TEXT_ANSWER_LARK, closed_objects, lark_for
from mlxjan.types import ForcedToolCall, JsonOutput, TextAnswer

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


NOT_JSON = [fmt for fmt in FORMATS.values() if not fmt.json_body]


@pytest.mark.parametrize("fmt", NOT_JSON, ids=[fmt.name for fmt in NOT_JSON])
def test_calls_that_are_not_json_are_not_framed_as_json(fmt: ToolFormat) -> None:
    for name in (None, "get_weather"):
        assert lark_for(ForcedToolCall(name), fmt, DECLARED, lambda _: 7) == ANY_TOKENS_LARK
    assert lark_for(TextAnswer(), fmt, DECLARED, lambda _: 7) == TEXT_ANSWER_LARK
    assert lark_for(JsonOutput(), fmt, {}, lambda _: 7).startswith("start: %json ")


def _byte_tokenizer() -> Any:
    """A 259-token byte-level tokenizer with a special tool-call token and an EOS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE({c: i for i, c in enumerate(alphabet)} | {"<unk>": 256}, [],
                               unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")
    hf.add_special_tokens({"eos_token": "</s>",
                           "additional_special_tokens": ["<|tool_call_start|>"]})
    return hf


def test_any_tokens_grammar_is_unconstrained() -> None:
    """Special tokens (a family's call markers) and EOS included, at every step."""
    import llguidance.hf
    import numpy as np
    from llguidance import LLMatcher

    hf = _byte_tokenizer()
    size = len(hf)
    matcher = LLMatcher(llguidance.hf.from_tokenizer(hf, n_vocab=size,
                                                     eos_token=hf.eos_token_id),
                        LLMatcher.grammar_from_lark(ANY_TOKENS_LARK), log_level=0)
    for token in (hf.convert_tokens_to_ids("<|tool_call_start|>"), 65, 66):
        mask = np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8)
        assert np.unpackbits(mask, bitorder="little")[:size].all()
        assert matcher.consume_token(token)
    assert not matcher.get_error()
