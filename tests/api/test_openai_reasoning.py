"""OpenAI chat completions with reasoning, through the real openai SDK against the app and
the fake engine (which writes its `reasoning` before the answer)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from mlxjan.settings import Settings
from mlxjan.testing.fake_engine import FakeEngine
from mlxjan.types import ReasoningOptions
from tests.api.conftest import MODEL, Server, _serve

REASONING = "The user says hi. A greeting back fits."


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(MODEL, context_length=400, reasoning=REASONING)


def test_message_carries_the_reasoning_apart_under_both_names(server: Server) -> None:
    response = server.client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi there"}])
    message = response.choices[0].message
    extra = message.model_extra or {}
    assert extra["reasoning_content"] == extra["reasoning"] == REASONING
    assert message.content == "You said: hi there"


def test_stream_sends_reasoning_deltas_before_the_content(server: Server) -> None:
    chunks = list(server.client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi there"}], stream=True))
    kinds: list[str] = []
    reasoning = content = ""
    for chunk in chunks:
        delta = chunk.choices[0].delta
        piece = (delta.model_extra or {}).get("reasoning_content")
        if piece:
            reasoning += piece
            kinds.append("reasoning")
        if delta.content:
            content += delta.content
            kinds.append("content")
    assert (reasoning, content) == (REASONING, "You said: hi there")
    assert kinds.index("content") > len(REASONING.split()) - 1
    assert kinds[:kinds.index("content")] == ["reasoning"] * kinds.index("content")


def test_request_options_reach_the_engine(server: Server) -> None:
    server.client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}],
        reasoning_effort="low",
        extra_body={"reasoning_budget": 20, "chat_template_kwargs": {"enable_thinking": True}})
    request = server.engine.requests[-1]
    assert request.reasoning == ReasoningOptions(effort="low", budget_tokens=20)
    assert request.template_kwargs == (("enable_thinking", True),)


def test_a_budget_leaving_no_room_is_a_400_in_openai_shape(server: Server) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        server.client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=10,
            extra_body={"reasoning_budget": 10})
    assert caught.value.body["param"] == "reasoning_budget"  # type: ignore[index]
    assert not server.engine.requests  # nothing reached the engine


@pytest.fixture
def one_name_server(tmp_path: Path, engine: FakeEngine) -> Iterator[Server]:
    yield from _serve(Settings(data_dir=tmp_path, reasoning_field="reasoning"), engine)


def test_the_field_name_is_a_setting(one_name_server: Server) -> None:
    response = one_name_server.client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}])
    extra = response.choices[0].message.model_extra or {}
    assert extra.get("reasoning") == REASONING and "reasoning_content" not in extra
