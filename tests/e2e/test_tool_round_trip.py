"""Tool round trips on the real default model: call -> tool result -> an answer in words.

Also: the same calls whether streamed or not, over several prompts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from mlxjan.settings import DEFAULT_MODEL
from tests.e2e.streamed import assemble

pytestmark = pytest.mark.e2e
M = DEFAULT_MODEL
CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "get_weather",
                                      "description": "Get the current weather for a city",
                                      "parameters": CITY}},
    {"type": "function", "function": {"name": "get_time",
                                      "description": "Get the local time in a city",
                                      "parameters": CITY}},
]
CLAUDE_TOOLS: list[Any] = [{"name": t["function"]["name"],
                            "description": t["function"]["description"],
                            "input_schema": CITY} for t in TOOLS]
ASK: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
RESULT = json.dumps({"temperature": 18, "unit": "celsius"})
GREEDY: dict[str, Any] = {"temperature": 0.0}


@pytest.fixture(scope="module")
def claude(server_url: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=server_url, api_key="local", max_retries=0,
                             _strict_response_validation=True, timeout=300) as c:
        yield c


def openai_history(client: openai.OpenAI) -> list[Any]:
    first = client.chat.completions.create(model=M, messages=ASK, tools=TOOLS,
                                           temperature=0.0)
    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls"
    calls = message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments))  # type: ignore[union-attr]
            for c in calls] == [("get_weather", {"city": "Paris"})]
    return [*ASK, message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": calls[0].id, "content": RESULT}]


@pytest.mark.parametrize("stream", [False, True])
def test_openai_round_trip_ends_in_an_answer(client: openai.OpenAI, stream: bool) -> None:
    messages = openai_history(client)
    if stream:
        text, calls, finish = "", 0, None
        for chunk in client.chat.completions.create(model=M, messages=messages, tools=TOOLS,
                                                    temperature=0.0, max_tokens=80,
                                                    stream=True):
            delta = chunk.choices[0].delta
            text += delta.content or ""
            calls += len(delta.tool_calls or [])
            finish = chunk.choices[0].finish_reason or finish
    else:
        reply = client.chat.completions.create(model=M, messages=messages, tools=TOOLS,
                                               temperature=0.0, max_tokens=80)
        text = reply.choices[0].message.content or ""
        calls = len(reply.choices[0].message.tool_calls or [])
        finish = reply.choices[0].finish_reason
    assert (calls, finish) == (0, "stop")
    assert "18" in text


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_round_trip_ends_in_an_answer(claude: anthropic.Anthropic,
                                                stream: bool) -> None:
    first = claude.messages.create(model=M, max_tokens=100, tools=CLAUDE_TOOLS, messages=ASK,
                                   extra_body=GREEDY)
    assert first.stop_reason == "tool_use"
    uses = [b for b in first.content if b.type == "tool_use"]
    assert [(u.name, u.input) for u in uses] == [("get_weather", {"city": "Paris"})]
    messages: list[Any] = [
        *ASK, {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id,
                                      "content": RESULT}]}]
    final: Any
    if stream:
        with claude.messages.stream(model=M, max_tokens=80, tools=CLAUDE_TOOLS,
                                    messages=messages, extra_body=GREEDY) as events:
            final = events.get_final_message()
    else:
        final = claude.messages.create(model=M, max_tokens=80, tools=CLAUDE_TOOLS,
                                       messages=messages, extra_body=GREEDY)
    assert final.stop_reason == "end_turn"
    assert [b.type for b in final.content] == ["text"]
    assert "18" in final.content[0].text


PROMPTS = ["What is the weather in Paris?", "Is it raining in Tokyo right now?",
           "What time is it in London?"]


def whole_and_streamed(client: openai.OpenAI, prompt: str) -> tuple[Any, Any]:
    messages: list[Any] = [{"role": "user", "content": prompt}]
    reply = client.chat.completions.create(model=M, messages=messages, tools=TOOLS,
                                           temperature=0.0, max_tokens=100)
    message = reply.choices[0].message
    whole = (message.content or "", [(c.function.name, c.function.arguments)  # type: ignore[union-attr]
                                     for c in message.tool_calls or []],
             reply.choices[0].finish_reason)
    streamed = assemble(client.chat.completions.create(model=M, messages=messages, tools=TOOLS,
                                                       temperature=0.0, max_tokens=100,
                                                       stream=True))
    return whole, (streamed.text, streamed.calls, streamed.finish)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_streamed_and_whole_calls_agree(client: openai.OpenAI, prompt: str) -> None:
    whole, streamed = whole_and_streamed(client, prompt)
    assert streamed == whole
    assert whole[2] == "tool_calls" and whole[1], whole  # each of these prompts is a call
