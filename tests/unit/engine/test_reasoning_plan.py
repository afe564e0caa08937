"""engine/reasoning.py: the prompt's end and the budget, by what the request asks."""

from __future__ import annotations

from mlxjan.chat.reasoning import HARMONY, THINK
from mlxjan.engine.reasoning import plan
from mlxjan.types import (
    ChatMessage,
    GenerationRequest,
    JsonOutput,
    ReasoningOptions,
    TextDelta,
)

OPENED = "<|im_start|>assistant\n<think>\n"
PLAIN = "<|im_start|>assistant\n"


def request(constraint: JsonOutput | None = None, **options: object) -> GenerationRequest:
    return GenerationRequest("m", (ChatMessage("user", "hi"),), constraint=constraint,
                             reasoning=ReasoningOptions(**options))  # type: ignore[arg-type]


def test_no_format_no_reasoning() -> None:
    assert plan(None, request(), OPENED) == (OPENED, None)


def test_an_opened_block_is_reasoning_from_the_first_token() -> None:
    prompt, reasoning = plan(THINK, request(budget_tokens=32), OPENED)
    assert prompt == OPENED
    assert reasoning is not None and reasoning.splitter.reasoning
    assert reasoning.budget == 32 and reasoning.close == THINK.close


def test_reasoning_off_closes_an_opened_block_in_the_prompt() -> None:
    for options in ({"enabled": False}, {"effort": "none"}, {"budget_tokens": 0}):
        prompt, reasoning = plan(THINK, request(**options), OPENED)
        assert prompt == OPENED + THINK.close
        assert reasoning is not None and reasoning.budget == 0
        assert not reasoning.splitter.reasoning


def test_a_constraint_without_reasoning_asked_for_applies_from_the_start() -> None:
    assert plan(THINK, request(JsonOutput()), PLAIN) == (PLAIN, None)
    assert plan(THINK, request(JsonOutput(), enabled=False), PLAIN) == (PLAIN, None)


def test_a_constraint_with_reasoning_asked_for_opens_the_block_itself() -> None:
    prompt, reasoning = plan(THINK, request(JsonOutput(), enabled=True), PLAIN)
    assert prompt == PLAIN + THINK.start
    assert reasoning is not None and reasoning.splitter.reasoning


def test_a_constraint_after_a_block_the_template_opened_waits_for_it() -> None:
    prompt, reasoning = plan(THINK, request(JsonOutput()), OPENED)
    assert prompt == OPENED and reasoning is not None


HARMONY_PROMPT = "<|start|>user<|message|>hi<|end|><|start|>assistant"


def test_harmony_without_reasoning_goes_straight_to_the_final_channel() -> None:
    prompt, reasoning = plan(HARMONY, request(JsonOutput()), HARMONY_PROMPT)
    assert (prompt, reasoning) == (HARMONY_PROMPT + HARMONY.direct_answer, None)
    prompt, reasoning = plan(HARMONY, request(effort="none"), HARMONY_PROMPT)
    assert prompt == HARMONY_PROMPT + HARMONY.direct_answer
    assert reasoning is not None and not reasoning.splitter.reasoning
    assert reasoning.splitter.feed("Hi there") == [TextDelta("Hi there")]


def test_harmony_reasoning_is_opened_by_the_model_unless_constrained() -> None:
    assert plan(HARMONY, request(), HARMONY_PROMPT)[0] == HARMONY_PROMPT
    prompt, reasoning = plan(HARMONY, request(JsonOutput(), effort="high"), HARMONY_PROMPT)
    assert prompt == HARMONY_PROMPT + HARMONY.start
    assert reasoning is not None and reasoning.splitter.reasoning
