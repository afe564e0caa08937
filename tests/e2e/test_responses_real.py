"""The Responses API on the real default model: the openai SDK's `responses.create`,
`responses.stream` and `responses.parse`, a function-call round trip, a stored conversation
continued across a server restart, and the OpenAI Agents SDK running an agent with a tool."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import openai
import pydantic
import pytest
from openai.types.responses import Response, ResponseStreamEvent

from mlxjan.settings import DEFAULT_MODEL
from tests.e2e.conftest import serve_process

pytestmark = pytest.mark.e2e
M = DEFAULT_MODEL
EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseStreamEvent)
WEATHER: Any = {"type": "function", "name": "get_weather",
                "description": "Get the current weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                               "required": ["city"]}}
RESULT = json.dumps({"temperature": 18, "unit": "celsius"})


def strict(response: Response) -> Response:
    """Validated against the SDK's model (the SDK itself parses leniently)."""
    return Response.model_validate(response.model_dump(mode="json", warnings=False))


def test_stream_events_all_parse_and_agree_with_create(client: openai.OpenAI) -> None:
    ask: dict[str, Any] = {"model": M, "input": "Name one colour.", "temperature": 0,
                           "max_output_tokens": 12}
    with client.responses.stream(**ask) as stream:
        events = list(stream)
        final = stream.get_final_response()
    for event in events:
        EVENTS.validate_python(event.model_dump(mode="json", warnings=False))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created"
    assert events[-1].type in ("response.completed", "response.incomplete")
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    whole = strict(client.responses.create(**ask))
    assert text.strip() and text == final.output_text == whole.output_text
    assert whole.usage is not None and whole.usage.input_tokens > 5
    # The same prompt again: the prompt cache serves most of it.
    assert whole.usage.input_tokens_details.cached_tokens > 0


def test_function_call_round_trip(client: openai.OpenAI) -> None:
    first = strict(client.responses.create(model=M, input="What is the weather in Paris?",
                                           tools=[WEATHER], temperature=0))
    calls = [o for o in first.output if o.type == "function_call"]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"})]
    answer = strict(client.responses.create(
        model=M, previous_response_id=first.id, tools=[WEATHER], temperature=0,
        max_output_tokens=60,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id,
                "output": RESULT}]))
    assert [o.type for o in answer.output] == ["message"]
    assert "18" in answer.output_text


def test_json_schema_output_through_parse(client: openai.OpenAI) -> None:
    class City(pydantic.BaseModel):
        name: str
        country: str

    parsed = client.responses.parse(model=M, input="Give the capital of France as JSON.",
                                    text_format=City, temperature=0, max_output_tokens=60)
    assert parsed.output_parsed is not None
    assert parsed.output_parsed.name.strip()


def test_previous_response_id_across_a_restart(default_model_path: Path,
                                               tmp_path: Path) -> None:
    with serve_process(tmp_path) as server, openai.OpenAI(
            base_url=f"{server.url}/v1", api_key="none", max_retries=0, timeout=300) as c:
        first = c.responses.create(model=M, input="My name is Ada. Reply with OK.",
                                   temperature=0, max_output_tokens=8)
    with serve_process(tmp_path) as server, openai.OpenAI(
            base_url=f"{server.url}/v1", api_key="none", max_retries=0, timeout=300) as c:
        assert c.responses.retrieve(first.id).output_text == first.output_text
        again = c.responses.create(model=M, input="What is my name? One word.",
                                   previous_response_id=first.id, temperature=0,
                                   max_output_tokens=8)
        items = c.responses.input_items.list(again.id)
    assert "Ada" in again.output_text
    assert len(items.data) == 1  # its own input; the rest came from the stored response


def test_agents_sdk_runs_an_agent_with_a_function_tool(server_url: str) -> None:
    from agents import (
        Agent,
        ModelSettings,
        OpenAIResponsesModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )

    set_tracing_disabled(True)
    asked: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """Get the current weather for a city."""
        asked.append(city)
        return RESULT

    async def run() -> Any:
        async with openai.AsyncOpenAI(base_url=f"{server_url}/v1", api_key="none",
                                      max_retries=0, timeout=300) as client:
            agent = Agent(name="weather", instructions="Answer with the tool's result.",
                          tools=[get_weather],
                          model=OpenAIResponsesModel(model=M, openai_client=client),
                          model_settings=ModelSettings(temperature=0, max_tokens=80))
            return await Runner.run(agent, "What is the weather in Paris?", max_turns=3)

    result = asyncio.run(run())
    assert asked == ["Paris"]
    assert isinstance(result.final_output, str) and "18" in result.final_output
