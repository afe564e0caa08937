"""Tool-call families mlx-lm has parsers for: detection, parsing, streaming, no mlx-lm.

The outputs below are written the way each family's model writes calls (as its chat template
renders them in history, and as mlx-lm's parser for it reads them).
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlxjan.chat import mlx_parsers
from mlxjan.chat.tool_calls import ParsedCall, call_attempt, parse_body
from mlxjan.chat.tool_formats import (
    FORMATS,
    FUNCTION_GEMMA,
    GEMMA4,
    GLM47,
    HERMES,
    JSON_ONLY,
    KIMI_K2,
    KIMI_K3,
    LAGUNA,
    LLAMA3,
    LONGCAT,
    MINICPM5,
    MINIMAX_M2,
    MISTRAL,
    MUSE_SPARK,
    PYTHONIC,
    QWEN3_CODER,
    ToolFormat,
    detect_format,
    format_named,
)
from mlxjan.chat.tool_stream import Out, ToolCallSplitter, assemble_calls
from mlxjan.types import TextDelta, ToolCallDelta

DECLARED: dict[str, Any] = {
    "get_weather": {"type": "object", "properties": {"city": {"type": "string"},
                                                      "days": {"type": "integer"}},
                    "required": ["city"]},
    "get_time": {"type": "object", "properties": {}},
}
PARIS = ("get_weather", {"city": "Paris"})
NOW = ("get_time", {})
Calls = list[tuple[str, dict[str, Any]]]

# (format, one call to get_weather(city="Paris"), two calls: that and get_time(),
#  a call to the undeclared get_stock)
OUTPUTS: list[tuple[ToolFormat, str, str, str]] = [
    (QWEN3_CODER,
     "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
     "</function>\n</tool_call>",
     "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
     "</function>\n</tool_call>\n<tool_call>\n<function=get_time>\n</function>\n</tool_call>",
     "<tool_call>\n<function=get_stock>\n<parameter=sym>\nX\n</parameter>\n</function>\n"
     "</tool_call>"),
    (GLM47,
     "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n"
     "</tool_call>",
     "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value></tool_call>"
     "<tool_call>get_time\n</tool_call>",
     "<tool_call>get_stock<arg_key>sym</arg_key><arg_value>X</arg_value></tool_call>"),
    (LAGUNA,
     "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value></tool_call>",
     "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value></tool_call>\n"
     "<tool_call>get_time</tool_call>",
     "<tool_call>get_stock<arg_key>sym</arg_key><arg_value>X</arg_value></tool_call>"),
    (PYTHONIC,
     '<|tool_call_start|>[get_weather(city="Paris")]<|tool_call_end|>',
     '<|tool_call_start|>[get_weather(city="Paris"), get_time()]<|tool_call_end|>',
     '<|tool_call_start|>[get_stock(sym="X")]<|tool_call_end|>'),
    (FUNCTION_GEMMA,
     "<start_function_call>call:get_weather{city:<escape>Paris<escape>}<end_function_call>",
     "<start_function_call>call:get_weather{city:<escape>Paris<escape>}<end_function_call>"
     "<start_function_call>call:get_time{}<end_function_call>",
     "<start_function_call>call:get_stock{sym:<escape>X<escape>}<end_function_call>"),
    (GEMMA4,
     '<|tool_call>call:get_weather{city:<|"|>Paris<|"|>}<tool_call|>',
     '<|tool_call>call:get_weather{city:<|"|>Paris<|"|>}call:get_time{}<tool_call|>',
     '<|tool_call>call:get_stock{sym:<|"|>X<|"|>}<tool_call|>'),
    (KIMI_K2,
     "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
     '<|tool_call_argument_begin|>{"city": "Paris"}<|tool_call_end|>'
     "<|tool_calls_section_end|>",
     "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
     '<|tool_call_argument_begin|>{"city": "Paris"}<|tool_call_end|>'
     "<|tool_call_begin|>functions.get_time:1<|tool_call_argument_begin|>{}"
     "<|tool_call_end|><|tool_calls_section_end|>",
     "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_stock:0"
     '<|tool_call_argument_begin|>{"sym": "X"}<|tool_call_end|><|tool_calls_section_end|>'),
    (KIMI_K3,
     '<|open|>tools<|sep|><|open|>call tool="get_weather" index="1"<|sep|>'
     '<|open|>argument key="city" type="string"<|sep|>Paris<|close|>argument<|sep|>'
     "<|close|>call<|sep|><|close|>tools<|sep|>",
     '<|open|>tools<|sep|><|open|>call tool="get_weather" index="1"<|sep|>'
     '<|open|>json type="object"<|sep|>{"city": "Paris"}<|close|>json<|sep|>'
     '<|close|>call<|sep|><|open|>call tool="get_time" index="2"<|sep|><|close|>call<|sep|>'
     "<|close|>tools<|sep|>",
     '<|open|>tools<|sep|><|open|>call tool="get_stock" index="1"<|sep|>'
     "<|close|>call<|sep|><|close|>tools<|sep|>"),
    (MINIMAX_M2,
     '<minimax:tool_call>\n<invoke name="get_weather">\n<parameter name="city">Paris'
     "</parameter>\n</invoke>\n</minimax:tool_call>",
     '<minimax:tool_call>\n<invoke name="get_weather">\n<parameter name="city">Paris'
     '</parameter>\n</invoke>\n<invoke name="get_time">\n</invoke>\n</minimax:tool_call>',
     '<minimax:tool_call>\n<invoke name="get_stock">\n<parameter name="sym">X</parameter>\n'
     "</invoke>\n</minimax:tool_call>"),
    (LONGCAT,
     "<longcat_tool_call>get_weather\n<longcat_arg_key>city</longcat_arg_key>\n"
     "<longcat_arg_value>Paris</longcat_arg_value>\n</longcat_tool_call>",
     "<longcat_tool_call>get_weather<longcat_arg_key>city</longcat_arg_key>"
     "<longcat_arg_value>Paris</longcat_arg_value></longcat_tool_call>\n"
     '<longcat_tool_call>{"name": "get_time", "arguments": {}}</longcat_tool_call>',
     "<longcat_tool_call>get_stock<longcat_arg_key>sym</longcat_arg_key>"
     "<longcat_arg_value>X</longcat_arg_value></longcat_tool_call>"),
    (MINICPM5,
     '<function name="get_weather"><param name="city">Paris</param></function>',
     '<function name="get_weather"><param name="city">Paris</param></function>\n'
     '<function name="get_time"></function>',
     '<function name="get_stock"><param name="sym">X</param></function>'),
    (MUSE_SPARK,
     '<atem:function_calls>\n<atem:invoke name="get_weather">\n'
     '<atem:parameter name="city">Paris</atem:parameter>\n</atem:invoke>\n'
     "</atem:function_calls>",
     '<atem:function_calls>\n<atem:invoke name="get_weather">\n'
     '<atem:parameter name="city">Paris</atem:parameter>\n</atem:invoke>\n'
     '<atem:invoke name="get_time">\n</atem:invoke>\n</atem:function_calls>',
     '<atem:function_calls>\n<atem:invoke name="get_stock">\n'
     '<atem:parameter name="sym">X</atem:parameter>\n</atem:invoke>\n</atem:function_calls>'),
]
IDS = [fmt.name for fmt, *_ in OUTPUTS]


def body_of(fmt: ToolFormat, output: str) -> str:
    """The text between the first start marker and the last end marker."""
    assert fmt.start is not None and fmt.end is not None
    return output[output.index(fmt.start) + len(fmt.start):output.rindex(fmt.end)]


def stream(fmt: ToolFormat, chunks: list[str]) -> tuple[str, Calls]:
    splitter = ToolCallSplitter(fmt, DECLARED)
    events: list[Out] = []
    for chunk in chunks:
        events.extend(splitter.feed(chunk))
    events.extend(splitter.finish())
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    calls = assemble_calls([e for e in events if isinstance(e, ToolCallDelta)])
    assert len({c.id for c in calls}) == len(calls), "call ids are distinct"
    return text, [(c.name, json.loads(c.arguments)) for c in calls]


def splits(text: str) -> Iterator[list[str]]:
    """Every split point, and one character at a time."""
    for i in range(len(text) + 1):
        yield [text[:i], text[i:]]
    yield list(text)


# --- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "one", "two", "undeclared"), OUTPUTS, ids=IDS)
def test_one_call_parses(fmt: ToolFormat, one: str, two: str, undeclared: str) -> None:
    assert parse_body(body_of(fmt, one), fmt, DECLARED) == [
        ParsedCall("get_weather", '{"city": "Paris"}')]


@pytest.mark.parametrize(("fmt", "one", "two", "undeclared"), OUTPUTS, ids=IDS)
def test_an_undeclared_tool_is_not_a_call(fmt: ToolFormat, one: str, two: str,
                                          undeclared: str) -> None:
    assert parse_body(body_of(fmt, undeclared), fmt, DECLARED) is None
    assert stream(fmt, [undeclared]) == (undeclared, [])


@pytest.mark.parametrize(("fmt", "one", "two", "undeclared"), OUTPUTS, ids=IDS)
def test_every_split_of_one_call(fmt: ToolFormat, one: str, two: str,
                                 undeclared: str) -> None:
    for chunks in splits(one):
        assert stream(fmt, chunks) == ("", [PARIS]), chunks


@pytest.mark.parametrize(("fmt", "one", "two", "undeclared"), OUTPUTS, ids=IDS)
def test_every_split_of_two_calls(fmt: ToolFormat, one: str, two: str,
                                  undeclared: str) -> None:
    for chunks in splits(two):
        assert stream(fmt, chunks) == ("", [PARIS, NOW]), chunks


@pytest.mark.parametrize(("fmt", "one", "two", "undeclared"), OUTPUTS, ids=IDS)
def test_text_around_a_call_stays_text(fmt: ToolFormat, one: str, two: str,
                                       undeclared: str) -> None:
    output = f"Let me check.\n{one}\nDone."
    for chunks in splits(output):
        assert stream(fmt, chunks) == ("Let me check.\n\nDone.", [PARIS]), chunks


@pytest.mark.parametrize(("fmt", "one", "two", "undeclared"), OUTPUTS, ids=IDS)
def test_a_broken_call_is_text(fmt: ToolFormat, one: str, two: str, undeclared: str) -> None:
    assert fmt.start is not None and fmt.end is not None
    broken = f"{fmt.start}no call here{fmt.end}"
    assert stream(fmt, [broken]) == (broken, [])


def test_schema_types_the_values() -> None:
    """Parsers that read values as text convert them by the tool's schema."""
    body = ("\n<function=get_weather>\n<parameter=city>\n42\n</parameter>\n"
            "<parameter=days>\n3\n</parameter>\n</function>\n")
    assert parse_body(body, QWEN3_CODER, DECLARED) == [
        ParsedCall("get_weather", '{"city": "42", "days": 3}')]


def test_a_required_argument_missing_is_not_a_call() -> None:
    body = '[get_weather(days=2)]'
    assert parse_body(body, PYTHONIC, DECLARED) is None


def test_arguments_given_as_a_json_string_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mlx_parsers, "load_parser", lambda _name: lambda _body, _tools: {
        "name": "get_weather", "arguments": '{"city": "Paris"}'})
    assert parse_body("x", GLM47, DECLARED) == [ParsedCall("get_weather", '{"city": "Paris"}')]


@pytest.mark.parametrize("fmt", [fmt for fmt, *_ in OUTPUTS], ids=IDS)
def test_markers_are_mlx_lms_own(fmt: ToolFormat) -> None:
    assert fmt.parser is not None
    module = importlib.import_module(f"mlx_lm.tool_parsers.{fmt.parser}")
    assert (fmt.start, fmt.end) == (module.tool_call_start, module.tool_call_end)


def test_mistral_and_hermes_match_mlx_lms_markers() -> None:
    mistral = importlib.import_module("mlx_lm.tool_parsers.mistral")
    hermes = importlib.import_module("mlx_lm.tool_parsers.json_tools")
    assert (MISTRAL.start, MISTRAL.end or "") == (mistral.tool_call_start,
                                                  mistral.tool_call_end)
    assert (HERMES.start, HERMES.end) == (hermes.tool_call_start, hermes.tool_call_end)


def test_every_mlx_lm_parser_has_a_format() -> None:
    import mlx_lm.tool_parsers

    folder = mlx_lm.tool_parsers.__path__[0]
    shipped = {p.stem for p in Path(folder).glob("*.py")} - {"__init__"}
    assert shipped <= set(FORMATS)
    assert all(format_named(name) is FORMATS[name] for name in shipped)
    assert format_named("no_such_parser") is None


# --- without mlx-lm --------------------------------------------------------------------------


@pytest.fixture
def no_mlx_lm(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def fail(name: str) -> Any:
        raise ModuleNotFoundError(f"No module named {name!r}")

    mlx_parsers.load_parser.cache_clear()
    monkeypatch.setattr(mlx_parsers.importlib, "import_module", fail)
    yield
    mlx_parsers.load_parser.cache_clear()


@pytest.mark.usefixtures("no_mlx_lm")
def test_without_mlx_lm_calls_stay_text_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    fmt, one, *_ = OUTPUTS[0]
    with caplog.at_level(logging.WARNING, logger="mlxjan.chat.mlx_parsers"):
        assert stream(fmt, [one]) == (one, [])
        assert stream(fmt, [one]) == (one, [])
    assert len(caplog.records) == 1
    assert "qwen3_coder" in caplog.text


@pytest.mark.usefixtures("no_mlx_lm")
def test_without_mlx_lm_json_families_still_parse() -> None:
    call = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
    assert stream(HERMES, [f"<tool_call>\n{call}\n</tool_call>"]) == ("", [PARIS])
    assert stream(MISTRAL, ['[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}']) == (
        "", [PARIS])
    assert stream(LLAMA3, ['{"name": "get_weather", "parameters": {"city": "Paris"}}']) == (
        "", [PARIS])
    assert stream(JSON_ONLY, [f"```json\n{call}\n```"]) == ("", [PARIS])


# --- redo under a grammar ----------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "one", "two", "undeclared"), OUTPUTS, ids=IDS)
def test_no_redo_for_calls_that_are_not_json(fmt: ToolFormat, one: str, two: str,
                                             undeclared: str) -> None:
    assert not fmt.json_body
    for text in (one[:12], one, '{"name": "get_weather"', f"{fmt.start}{{\"name\": "):
        assert call_attempt(text, fmt) is False


def test_json_families_may_be_redone() -> None:
    assert all(fmt.json_body for fmt in (HERMES, MISTRAL, LLAMA3, JSON_ONLY))
    assert call_attempt('<tool_call>\n{"name": "get_weather"', HERMES) is True


# --- detection -------------------------------------------------------------------------------

QWEN25 = ('{{- "<tool_call>\\n{\\"name\\": \\"" }}{{- tool_call.name }}'
          '{{- "\\", \\"arguments\\": " }}{{- tool_call.arguments | tojson }}'
          '{{- "}\\n</tool_call>" }}')
TEMPLATES = [
    pytest.param('{{- "<minimax:tool_call>\\n" }}<invoke name="{{ tc.name }}">', MINIMAX_M2,
                 id="minimax"),
    pytest.param("{{- '<|tool_call>call:' + name + '{' }}{{- '}<tool_call|>' }}", GEMMA4,
                 id="gemma4"),
    pytest.param("<start_function_call>call:{{ name }}{<end_function_call>", FUNCTION_GEMMA,
                 id="function-gemma"),
    pytest.param("<longcat_tool_call>{{ tc.name }}<longcat_arg_key>", LONGCAT, id="longcat"),
    pytest.param("{{- '<tool_call>' + tc.name }}<arg_key>{{ k }}</arg_key>", GLM47, id="glm"),
    pytest.param("<|tool_list_start|>{{ tools | tojson }}<|tool_list_end|>", PYTHONIC,
                 id="lfm2-tool-list"),
    pytest.param("{{- '<|tool_call_start|>[' }}", PYTHONIC, id="lfm2-tool-call"),
    pytest.param("{{- '<tool_call>\\n<function=' + tool_call.name + '>\\n' }}", QWEN3_CODER,
                 id="qwen3-coder-escaped"),
    pytest.param("<tool_call>\n<function={{ tool_call.name }}>\n", QWEN3_CODER,
                 id="qwen3-coder"),
    pytest.param("<|tool_calls_section_begin|>{%- for tc in tool_calls %}", KIMI_K2,
                 id="kimi-k2"),
    pytest.param('<function name="{{ name }}"><param name="{{ k }}">', MINICPM5,
                 id="minicpm5"),
    pytest.param("<atem:function_calls><atem:invoke name=", MUSE_SPARK, id="muse-spark"),
    pytest.param("{{- '[TOOL_CALLS]' + tool.function.name + '[ARGS]' }}", MISTRAL,
                 id="mistral"),
    pytest.param(QWEN25, HERMES, id="qwen2.5-json-tools"),
    pytest.param("<tool_call></tool_call> XML tags", HERMES, id="hermes-legacy"),
    pytest.param("{{- '<|python_tag|>' }}", LLAMA3, id="llama3"),
    pytest.param("<|start_header_id|>ipython<|end_header_id|>", LLAMA3, id="llama3-ipython"),
    pytest.param("{{ messages }}", JSON_ONLY, id="no-tools"),
]


@pytest.mark.parametrize(("template", "expected"), TEMPLATES)
def test_detect_format(template: str, expected: ToolFormat) -> None:
    assert detect_format(template) == expected


def test_mlx_lm_order_wins_where_markers_overlap() -> None:
    # GLM and Qwen3-Coder templates hold `<tool_call>` too; MiniMax holds `<invoke name=`.
    assert detect_format("<tool_call>{{ n }}<arg_key>") == GLM47
    assert detect_format("<tool_call>\n<function=f> tool_call.name") == QWEN3_CODER
    assert detect_format('<minimax:tool_call><function name="f"><param name="p">') == (
        MINIMAX_M2)


def test_the_vocabulary_decides_when_the_template_cannot() -> None:
    assert detect_format("{{ messages }}", {"<|tool_call_start|>", "<|tool_call_end|>"}) == (
        PYTHONIC)
    xtml = {"<|open|>", "<|close|>", "<|sep|>", "<|end_of_msg|>"}
    assert detect_format(None, xtml) == KIMI_K3
    assert detect_format("<tool_call>", xtml) == HERMES  # the template comes first
    assert detect_format(None, {"<|tool_call_start|>"}) == JSON_ONLY
