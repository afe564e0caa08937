"""Tool calls in model output: family detection, parsing, and recovery of unmarked calls."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mlxjan.chat.tool_calls import (
    HERMES,
    JSON_ONLY,
    LLAMA3,
    MISTRAL,
    ParsedCall,
    ToolFormat,
    declared_tools,
    detect_format,
    new_call_id,
    parse_calls,
    recover_calls,
)
from mlxjan.types import ToolSpec

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}},
           "required": ["city"]}
STRICT = {"type": "object", "properties": {"q": {"type": "string"}},
          "additionalProperties": False}
DECLARED: dict[str, Any] = {"get_weather": WEATHER, "get_time": {}, "search": STRICT}
PARIS = ParsedCall("get_weather", '{"city": "Paris"}')
TIME = ParsedCall("get_time", "{}")
CALL = '{"name": "get_weather", "arguments": {"city": "Paris"}}'


# --- detect_format ---------------------------------------------------------------------------

QWEN_TEMPLATE = (
    "{%- if tools %}For each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>{%- endif %}')
MISTRAL_TEMPLATE = (
    "{%- for tool in message.tool_calls %}{{- '[TOOL_CALLS]' + tool.function.name + '[ARGS]' "
    "+ tool.function.arguments|tojson }}{%- endfor %}")
LLAMA3_TEMPLATE = (
    "{%- if builtin_tools is defined %}{{- '<|python_tag|>' + tool_call.name + '.call(' }}"
    "{%- endif %}")
LLAMA3_IPYTHON_TEMPLATE = (
    "{%- elif message.role == 'tool' or message.role == 'ipython' %}"
    "{{- '<|start_header_id|>ipython<|end_header_id|>\\n\\n' }}")
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>\\n' }}{% endfor %}")


@pytest.mark.parametrize(("template", "expected"), [
    pytest.param(QWEN_TEMPLATE, HERMES, id="qwen-hermes"),
    pytest.param(MISTRAL_TEMPLATE, MISTRAL, id="mistral"),
    pytest.param(LLAMA3_TEMPLATE, LLAMA3, id="llama3-python-tag"),
    pytest.param(LLAMA3_IPYTHON_TEMPLATE, LLAMA3, id="llama3-ipython"),
    pytest.param(CHATML_TEMPLATE, JSON_ONLY, id="chatml-no-tools"),
    pytest.param("", JSON_ONLY, id="empty"),
    pytest.param(None, JSON_ONLY, id="none"),
])
def test_detect_format(template: str | None, expected: ToolFormat) -> None:
    assert detect_format(template) == expected


def test_formats_markers_and_argument_keys() -> None:
    assert (HERMES.start, HERMES.end, HERMES.args_key) == (
        "<tool_call>", "</tool_call>", "arguments")
    assert (MISTRAL.start, MISTRAL.end) == ("[TOOL_CALLS]", None)
    assert (LLAMA3.start, LLAMA3.end, LLAMA3.args_key) == ("<|python_tag|>", None, "parameters")
    assert (JSON_ONLY.start, JSON_ONLY.end) == (None, None)


def test_call_ids_are_openai_style_and_unique() -> None:
    ids = {new_call_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(i.startswith("call_") and len(i) == 5 + 24 for i in ids)


# --- declared_tools --------------------------------------------------------------------------


def test_declared_tools_maps_names_to_parameter_schemas() -> None:
    tools = (ToolSpec("get_weather", "d", WEATHER), ToolSpec("no_params"))
    assert declared_tools(tools) == {"get_weather": WEATHER, "no_params": {}}
    assert declared_tools(()) == {}


# --- parse_calls: accepted -------------------------------------------------------------------


@pytest.mark.parametrize(("body", "expected"), [
    pytest.param(CALL, [PARIS], id="qwen"),
    pytest.param(f"\n  {CALL}\n", [PARIS], id="qwen-surrounding-whitespace"),
    pytest.param('{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}', [PARIS],
                 id="arguments-as-json-string"),
    pytest.param(f'{CALL}\n{{"name": "get_time", "arguments": {{}}}}', [PARIS, TIME],
                 id="parallel-lines"),
    pytest.param(f'[{CALL}, {{"name": "get_time", "arguments": {{}}}}]', [PARIS, TIME],
                 id="json-list"),
    pytest.param('{"type": "function", "function": {"name": "get_weather", '
                 '"arguments": "{\\"city\\":\\"Paris\\"}"}}', [PARIS], id="openai-shape"),
    pytest.param('{"name": "get_weather", "parameters": {"city": "Paris"}}', [PARIS],
                 id="llama3-parameters"),
    pytest.param('get_weather[ARGS]{"city": "Paris"}', [PARIS], id="mistral"),
    pytest.param('get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_time[ARGS]{}',
                 [PARIS, TIME], id="mistral-parallel"),
    pytest.param('{"name": "get_time"}', [TIME], id="no-arguments"),
    pytest.param('{"name": "get_time", "arguments": ""}', [TIME], id="empty-argument-string"),
    pytest.param('{"name": "search", "arguments": {"q": "x"}}',
                 [ParsedCall("search", '{"q": "x"}')], id="known-property"),
])
def test_parse_calls(body: str, expected: list[ParsedCall]) -> None:
    assert parse_calls(body, DECLARED) == expected


def test_arguments_are_compact_json_with_unicode_kept() -> None:
    calls = parse_calls('{"name": "get_weather", "arguments": {"city":   "Zürich 🙂"}}',
                        DECLARED)
    assert calls == [ParsedCall("get_weather", '{"city": "Zürich 🙂"}')]
    assert json.loads(calls[0].arguments) == {"city": "Zürich 🙂"}


# --- parse_calls: rejected -------------------------------------------------------------------


@pytest.mark.parametrize("body", [
    pytest.param('{"name": "get_stock", "arguments": {}}', id="undeclared-name"),
    pytest.param('{"arguments": {"city": "Paris"}}', id="no-name"),
    pytest.param('{"name": 5, "arguments": {}}', id="name-not-a-string"),
    pytest.param('{"name": "get_weather", "arguments": ["Paris"]}', id="arguments-a-list"),
    pytest.param('{"name": "get_weather", "arguments": "Paris"}', id="arguments-bad-string"),
    pytest.param('{"name": "get_weather", "arguments": "[1]"}', id="arguments-string-list"),
    pytest.param('{"name": "get_weather", "arguments": {}}', id="missing-required"),
    pytest.param('{"name": "search", "arguments": {"q": "x", "page": 2}}',
                 id="unknown-property-forbidden"),
    pytest.param('{"name": "get_weather", "arguments": {"city": "Paris"}', id="invalid-json"),
    pytest.param(f"{CALL} and then some", id="trailing-junk"),
    pytest.param(f"Sure! {CALL}", id="leading-prose"),
    pytest.param(f'{CALL}\n{{"name": "get_stock", "arguments": {{}}}}', id="one-bad-of-two"),
    pytest.param(f'[{CALL}, "x"]', id="list-with-non-object"),
    pytest.param("[]", id="empty-list"),
    pytest.param("{}", id="empty-object"),
    pytest.param('"get_weather"', id="a-string"),
    pytest.param("", id="empty"),
    pytest.param("I will look up the weather in Paris.", id="prose"),
    pytest.param('get_stock[ARGS]{"sym": "X"}', id="mistral-undeclared"),
    pytest.param('get_weather[ARGS]{"city": ', id="mistral-truncated"),
    pytest.param('get_weather[ARGS]{"city": "Paris"} and more', id="mistral-trailing-junk"),
    pytest.param('Sure: get_weather[ARGS]{"city": "Paris"}', id="mistral-leading-junk"),
])
def test_parse_calls_rejects(body: str) -> None:
    assert parse_calls(body, DECLARED) is None


def test_extra_properties_allowed_unless_forbidden() -> None:
    body = '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}'
    assert parse_calls(body, DECLARED) == [
        ParsedCall("get_weather", '{"city": "Paris", "unit": "C"}')]


def test_nothing_is_a_call_without_declared_tools() -> None:
    assert parse_calls(CALL, {}) is None
    assert recover_calls(CALL, {}) is None


# --- recover_calls ---------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    pytest.param(f"```json\n{CALL}\n```", id="json-fence"),
    pytest.param(f"```JSON\n{CALL}```", id="upper-json-fence-no-newline"),
    pytest.param(f"\n```json\n{CALL}\n```\n", id="fence-with-whitespace-around"),
    pytest.param(f"```\n{CALL}\n```", id="plain-fence"),
    pytest.param(CALL, id="bare"),
    pytest.param(f"  {CALL}  \n", id="bare-with-whitespace"),
    pytest.param(f"[{CALL}]", id="bare-list"),
])
def test_recover_calls(text: str) -> None:
    assert recover_calls(text, DECLARED) == [PARIS]


@pytest.mark.parametrize("text", [
    pytest.param(f"```python\n{CALL}\n```", id="python-fence"),
    pytest.param('```python\nget_weather(city="Paris")\n```', id="python-code"),
    pytest.param(f"Here is the call: {CALL}", id="prose-then-json"),
    pytest.param(f"```json\n{CALL}\n```\nThat should do it.", id="prose-after-fence"),
    pytest.param("Let me check the weather in Paris.", id="prose"),
    pytest.param('```json\n{"name": "get_stock", "arguments": {}}\n```', id="undeclared"),
    pytest.param('```json\n{"city": "Paris"}\n```', id="json-not-a-call"),
    pytest.param("", id="empty"),
])
def test_recover_calls_refuses(text: str) -> None:
    assert recover_calls(text, DECLARED) is None
