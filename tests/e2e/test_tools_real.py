"""Tool calls and structured output on the real default model (llama.cpp engine)."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import jsonschema
import openai
import pytest

from mlxjan.settings import DEFAULT_MODEL
from tests.e2e.streamed import assemble

pytestmark = pytest.mark.e2e
M = DEFAULT_MODEL
WEATHER: list[Any] = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def _calls(client: openai.OpenAI, choice: Any, stream: bool = False) -> list[tuple[str, Any]]:
    if not stream:
        message = client.chat.completions.create(
            model=M, messages=ASK, tools=WEATHER, tool_choice=choice,  # type: ignore[arg-type]
            temperature=0.0).choices[0].message
        assert not message.content
        return [(c.function.name, json.loads(c.function.arguments))  # type: ignore[union-attr]
                for c in message.tool_calls or []]
    streamed = assemble(client.chat.completions.create(
        model=M, messages=ASK, tools=WEATHER, tool_choice=choice,  # type: ignore[arg-type]
        temperature=0.0, stream=True))
    assert not streamed.text  # no call text leaks into content
    assert streamed.finish == "tool_calls"
    return [(name, json.loads(arguments)) for name, arguments in streamed.calls]


@pytest.mark.parametrize("choice", ["required", "auto",
                                    {"type": "function", "function": {"name": "get_weather"}}])
def test_get_weather_is_called_with_paris(client: openai.OpenAI, choice: Any) -> None:
    whole = _calls(client, choice)
    assert whole == [("get_weather", {"city": "Paris"})]
    assert _calls(client, choice, stream=True) == whole


def test_tool_choice_none_gives_text(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model=M, messages=ASK, tools=WEATHER,  # type: ignore[arg-type]
                                           tool_choice="none", temperature=0.0, max_tokens=40)
    assert reply.choices[0].message.tool_calls is None
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_json_schema_output_validates(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {
        "name": {"type": "string"}, "age": {"type": "integer", "minimum": 0},
        "hobbies": {"type": "array", "items": {"type": "string"}}},
        "required": ["name", "age", "hobbies"], "additionalProperties": False}
    reply = client.chat.completions.create(
        model=M, temperature=0.0, max_tokens=200,
        messages=[{"role": "user", "content": "Describe a fictional person."}],
        response_format={"type": "json_schema",
                         "json_schema": {"name": "person", "schema": schema, "strict": True}})
    jsonschema.validate(json.loads(reply.choices[0].message.content or ""), schema)
    any_object = client.chat.completions.create(
        model=M, temperature=0.0, max_tokens=100, response_format={"type": "json_object"},
        messages=[{"role": "user", "content": "List two fruits."}])
    assert isinstance(json.loads(any_object.choices[0].message.content or ""), dict)


def test_anthropic_tool_use_block(server_url: str) -> None:
    tools: Any = [{"name": "get_weather", "description": "Get the current weather for a city",
                   "input_schema": WEATHER[0]["function"]["parameters"]}]
    with anthropic.Anthropic(base_url=server_url, api_key="local", max_retries=0,
                             _strict_response_validation=True) as claude:
        reply = claude.messages.create(model="claude-haiku-4-5", max_tokens=100, tools=tools,
                                       messages=ASK, extra_body={"temperature": 0.0})  # type: ignore[arg-type]
        with claude.messages.stream(model="claude-haiku-4-5", max_tokens=100, tools=tools,
                                    tool_choice={"type": "any"}, messages=ASK) as stream:  # type: ignore[arg-type]
            streamed = stream.get_final_message()
    for message in (reply, streamed):
        assert message.stop_reason == "tool_use"
        uses = [b for b in message.content if b.type == "tool_use"]
        assert [(u.name, u.input) for u in uses] == [("get_weather", {"city": "Paris"})]
