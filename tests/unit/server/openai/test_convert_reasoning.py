"""OpenAI reasoning fields: request options in, `reasoning_content` / `reasoning` out."""

from __future__ import annotations

from typing import Any

import pytest

from mlxjan.errors import InvalidRequestError
from mlxjan.server.openai.convert import (
    completion,
    delta_chunk,
    to_generation_request,
    usage_chunk,
)
from mlxjan.types import Finished, ReasoningDelta, ReasoningOptions, TextDelta, Usage
from tests.unit.server.openai.test_convert import IDS, request


@pytest.mark.parametrize(("fields", "expected"), [
    ({}, ReasoningOptions()),
    ({"reasoning_effort": "none"}, ReasoningOptions(effort="none")),
    ({"reasoning_effort": "high"}, ReasoningOptions(effort="high")),
    ({"think": False}, ReasoningOptions(enabled=False)),
    ({"think": True}, ReasoningOptions(enabled=True)),
    ({"think": "low"}, ReasoningOptions(effort="low")),
    ({"reasoning_budget": 32}, ReasoningOptions(budget_tokens=32)),
])
def test_reasoning_options_from_the_request(fields: dict[str, Any],
                                            expected: ReasoningOptions) -> None:
    assert to_generation_request(request(**fields)).reasoning == expected


def test_the_server_budget_applies_where_the_request_sets_none() -> None:
    assert to_generation_request(request(), default_budget=64).reasoning.budget_tokens == 64
    own = to_generation_request(request(reasoning_budget=8), default_budget=64)
    assert own.reasoning.budget_tokens == 8


def test_a_budget_that_leaves_no_room_to_answer_is_refused() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        to_generation_request(request(max_tokens=32, reasoning_budget=32))
    assert caught.value.param == "reasoning_budget"
    to_generation_request(request(max_tokens=33, reasoning_budget=32))


def test_chat_template_kwargs_take_plain_values_only() -> None:
    req = to_generation_request(request(chat_template_kwargs={"enable_thinking": False,
                                                              "level": 2}))
    assert req.template_kwargs == (("enable_thinking", False), ("level", 2))
    with pytest.raises(ValueError):
        request(chat_template_kwargs={"nested": {"a": 1}})


@pytest.mark.parametrize("name", ["reasoning_content", "reasoning"])
def test_past_reasoning_reaches_the_engine_under_either_name(name: str) -> None:
    req = to_generation_request(request(messages=[
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "5", name: "2 and 3"},
        {"role": "user", "content": "more"}]))
    assert req.messages[1].reasoning == "2 and 3"


FINISHED = Finished("stop", Usage(5, 7, 0, reasoning_tokens=4))


@pytest.mark.parametrize(("field", "keys"), [
    ("both", {"reasoning_content", "reasoning"}),
    ("reasoning_content", {"reasoning_content"}),
    ("reasoning", {"reasoning"}),
])
def test_reasoning_goes_out_under_the_configured_names(
        field: Any, keys: set[str]) -> None:
    deltas = [ReasoningDelta("2 and "), ReasoningDelta("3"), TextDelta("5")]
    message = completion(IDS, deltas, FINISHED, False, field).model_dump(mode="json")
    out = message["choices"][0]["message"]
    assert out["content"] == "5"
    assert {k for k in ("reasoning_content", "reasoning") if k in out} == keys
    assert all(out[k] == "2 and 3" for k in keys)
    chunk = delta_chunk(IDS, ReasoningDelta("2"), False, field)
    sent = chunk.model_dump(mode="json", exclude_none=True)["choices"][0]["delta"]
    assert sent == dict.fromkeys(keys, "2")


def test_no_reasoning_no_reasoning_fields() -> None:
    out = completion(IDS, [TextDelta("5")], FINISHED, False).model_dump(mode="json")
    assert "reasoning_content" not in out["choices"][0]["message"]


def test_usage_counts_reasoning_tokens() -> None:
    usage = usage_chunk(IDS, FINISHED.usage).model_dump(mode="json")["usage"]
    assert usage["completion_tokens_details"] == {"reasoning_tokens": 4}
