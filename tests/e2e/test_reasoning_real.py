"""Reasoning end to end: the real default model under a template that opens a `<think>`
block in the generation prompt (as DeepSeek-R1's do), so the model really writes
reasoning, and the server's budget really has to close it (a 0.5B coder never does).

Budgets are checked against llama.cpp's own tokenization of the reasoning returned, not
only against the server's count.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from tests.e2e.conftest import THINKING_MODEL, llama_tokenize, serve_process

pytestmark = pytest.mark.e2e
SERVER_BUDGET = 24  # for requests that set none


@pytest.fixture(scope="module")
def think_url(thinking_model: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {"MLXJAN_DEFAULT_MODEL": thinking_model, "MLXJAN_DEFAULT_TEMPERATURE": "0",
           "MLXJAN_REASONING_BUDGET": str(SERVER_BUDGET)}
    with serve_process(tmp_path_factory.mktemp("serve-think"), env=env) as server:
        yield server.url


@pytest.fixture(scope="module")
def oai(think_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{think_url}/v1", api_key="none", max_retries=0,
                       timeout=300) as c:
        yield c


@pytest.fixture(scope="module")
def claude(think_url: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=think_url, api_key="none", max_retries=0,
                             timeout=300) as c:
        yield c


def tokens_of(gguf: Path, text: str) -> int:
    return len(llama_tokenize(gguf, text, add_bos=False, special=True))


def assert_clean(text: str) -> None:
    assert "<think>" not in text and "</think>" not in text, text


# A question the model reasons at length about, so a small budget has to cut it short (a
# short one it answers inside the block, then ends: all of that is reasoning).
ASK = [{"role": "user", "content": "Work out 17 * 23 step by step, then give the result."}]


def test_openai_message_has_reasoning_apart_within_the_budget(
        oai: openai.OpenAI, default_model_path: Path) -> None:
    response = oai.chat.completions.create(model=THINKING_MODEL, messages=ASK,  # type: ignore[arg-type]
                                           max_tokens=80, extra_body={"reasoning_budget": 32})
    message = response.choices[0].message
    extra = message.model_extra or {}
    reasoning = extra["reasoning_content"]
    assert reasoning and extra["reasoning"] == reasoning
    assert message.content and message.content.strip()
    assert_clean(message.content)
    assert_clean(reasoning)
    usage = response.usage
    assert usage is not None and usage.completion_tokens_details is not None
    counted = usage.completion_tokens_details.reasoning_tokens
    assert counted is not None and 0 < counted <= 32
    # The reasoning returned is what 32 tokens at most can spell (the marker's newline may
    # merge with the last token, hence the one token of slack).
    assert tokens_of(default_model_path, reasoning) <= 33
    assert usage.completion_tokens > counted  # an answer came after the reasoning


def test_openai_stream_sends_reasoning_deltas_then_content(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model=THINKING_MODEL, messages=ASK, max_tokens=80, stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True}, extra_body={"reasoning_budget": 16})
    order: list[str] = []
    reasoning, content, usage = "", "", None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        piece = (delta.model_extra or {}).get("reasoning_content")
        if piece:
            reasoning += piece
            order.append("r")
        if delta.content:
            content += delta.content
            order.append("c")
    assert reasoning and content.strip()
    assert_clean(reasoning)
    assert_clean(content)
    assert len([k for k in order if k == "r"]) > 1  # streamed, not sent whole at the end
    assert "".join(order).rstrip("c").count("c") == 0  # all reasoning before any content
    assert usage is not None and usage.completion_tokens_details is not None
    assert 0 < (usage.completion_tokens_details.reasoning_tokens or 0) <= 16


def test_server_budget_closes_reasoning_for_requests_without_one(
        oai: openai.OpenAI) -> None:
    response = oai.chat.completions.create(model=THINKING_MODEL, messages=ASK,  # type: ignore[arg-type]
                                           max_tokens=80)
    usage = response.usage
    assert usage is not None and usage.completion_tokens_details is not None
    assert 0 < (usage.completion_tokens_details.reasoning_tokens or 0) <= SERVER_BUDGET
    assert response.choices[0].message.content


def test_reasoning_effort_none_answers_without_reasoning(oai: openai.OpenAI) -> None:
    response = oai.chat.completions.create(model=THINKING_MODEL, messages=ASK,  # type: ignore[arg-type]
                                           max_tokens=40, reasoning_effort="none")  # type: ignore[arg-type]
    message = response.choices[0].message
    assert "reasoning_content" not in (message.model_extra or {})
    assert message.content and message.content.strip()
    assert_clean(message.content)
    usage = response.usage
    assert usage is not None and usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 0


def test_a_budget_that_leaves_no_room_to_answer_is_refused(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(model=THINKING_MODEL, messages=ASK,  # type: ignore[arg-type]
                                    max_tokens=32, extra_body={"reasoning_budget": 32})
    assert "reasoning_budget" in str(caught.value)


def test_anthropic_thinking_blocks_are_signed_and_budgeted(
        claude: anthropic.Anthropic, default_model_path: Path) -> None:
    message = claude.messages.create(
        model="claude-sonnet-5-5", max_tokens=80, messages=ASK,  # type: ignore[arg-type]
        thinking={"type": "enabled", "budget_tokens": 32})
    kinds = [block.type for block in message.content]
    assert kinds[0] == "thinking" and "text" in kinds, kinds
    thinking = message.content[0]
    assert thinking.type == "thinking" and thinking.signature
    assert tokens_of(default_model_path, thinking.thinking) <= 33
    text = "".join(b.text for b in message.content if b.type == "text")
    assert text.strip()
    assert_clean(text)
    # The signed block comes back in the history of the next turn, and is accepted.
    follow_up = claude.messages.create(
        model="claude-sonnet-5-5", max_tokens=60,
        thinking={"type": "enabled", "budget_tokens": 16},
        messages=[*ASK, {"role": "assistant", "content": message.content},  # type: ignore[list-item]
                  {"role": "user", "content": "And 3 + 4?"}])
    assert follow_up.content[0].type == "thinking"


def test_anthropic_stream_rebuilds_the_thinking_block(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(model="claude-sonnet-5-5", max_tokens=80,
                                messages=ASK,  # type: ignore[arg-type]
                                thinking={"type": "enabled", "budget_tokens": 16}) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert "thinking" in kinds and "signature" in kinds, kinds
    assert final.content[0].type == "thinking" and final.content[0].signature
    text = "".join(b.text for b in final.content if b.type == "text")
    assert text.strip()
    assert_clean(text)


def test_responses_reasoning_item_and_its_encrypted_round_trip(oai: openai.OpenAI) -> None:
    """Codex's way: store false, the reasoning sealed into encrypted_content, sent back
    with the history next turn, where the template shows it to the model again."""
    first = oai.responses.create(model=THINKING_MODEL, input=ASK[0]["content"], store=False,
                                 include=["reasoning.encrypted_content"],
                                 reasoning={"summary": "auto"}, max_output_tokens=80)
    reasoning, message = first.output[0], first.output[-1]
    assert reasoning.type == "reasoning" and message.type == "message", first.output
    assert reasoning.content and reasoning.content[0].text.strip()
    assert reasoning.summary[0].text == reasoning.content[0].text
    assert reasoning.encrypted_content
    assert first.usage is not None
    assert 0 < first.usage.output_tokens_details.reasoning_tokens <= SERVER_BUDGET
    assert_clean(first.output_text)
    sealed_only = {"type": "reasoning", "id": reasoning.id, "summary": [],
                   "encrypted_content": reasoning.encrypted_content}

    def prompt_tokens(with_reasoning: bool) -> int:
        history: list[Any] = [{"role": "user", "content": ASK[0]["content"]},
                              *([sealed_only] if with_reasoning else []),
                              {"role": "assistant", "content": first.output_text},
                              {"role": "user", "content": "Thanks."}]
        counted = oai.post("/responses/input_tokens", cast_to=dict,
                           body={"model": THINKING_MODEL, "input": history})
        return int(counted["input_tokens"])

    assert prompt_tokens(True) > prompt_tokens(False) + 5
