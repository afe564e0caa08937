"""The real default model on the MLX engine (converted from its GGUF on first use), against
the same GGUF on llama.cpp. MLX on this CPU is slow, so the answers are kept short."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from mlxjan.settings import DEFAULT_MODEL
from tests.e2e.conftest import serve_process

pytestmark = pytest.mark.e2e
QUESTION = [{"role": "user", "content": "Write a Python function that adds two numbers."}]
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city.",
    "parameters": {"type": "object", "required": ["city"],
                   "properties": {"city": {"type": "string", "description": "City name"}}}}}


@pytest.fixture(scope="module")
def mlx_client(default_model_path: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[openai.OpenAI]:
    with serve_process(tmp_path_factory.mktemp("serve-mlx-real"), "--engine", "mlx") as server, \
            openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0,
                          timeout=900) as client:
        yield client


def _greedy(client: openai.OpenAI, **kw: object) -> openai.types.chat.ChatCompletion:
    return client.chat.completions.create(  # type: ignore[call-overload, no-any-return]
        model=DEFAULT_MODEL, temperature=0.0, **kw)


@pytest.mark.usefixtures("pinned_llama_cpp")  # exact llama.cpp text
def test_first_tokens_agree_with_llamacpp(mlx_client: openai.OpenAI,
                                          client: openai.OpenAI) -> None:
    ours = _greedy(mlx_client, messages=QUESTION, max_tokens=8)
    reference = _greedy(client, messages=QUESTION, max_tokens=8)
    assert ours.usage is not None and reference.usage is not None
    assert ours.usage.prompt_tokens == reference.usage.prompt_tokens
    assert ours.choices[0].message.content == reference.choices[0].message.content


def test_required_tool_call_names_the_city(mlx_client: openai.OpenAI) -> None:
    result = _greedy(mlx_client, tools=[WEATHER_TOOL], tool_choice="required", max_tokens=40,
                     messages=[{"role": "user", "content": "What is the weather in Paris?"}])
    calls = result.choices[0].message.tool_calls
    assert result.choices[0].finish_reason == "tool_calls" and calls
    assert calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]


def test_auto_tool_choice_yields_a_parsed_call(mlx_client: openai.OpenAI) -> None:
    # The model opens with fenced JSON here; the engine redoes the call under a grammar.
    result = _greedy(mlx_client, tools=[WEATHER_TOOL], max_tokens=60,
                     messages=[{"role": "user", "content": "What is the weather in Paris?"}])
    calls = result.choices[0].message.tool_calls
    assert result.choices[0].finish_reason == "tool_calls" and calls
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    assert not result.choices[0].message.content
