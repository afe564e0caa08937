"""The Anthropic Messages API on the real server and model, through the `anthropic` SDK."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import pytest

from mlxjan.settings import DEFAULT_MODEL

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def claude(server_url: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=server_url, api_key="local", max_retries=0,
                             _strict_response_validation=True, timeout=300) as client:
        yield client


def test_messages_stream_and_usage(claude: anthropic.Anthropic) -> None:
    messages = [{"role": "user", "content": "Name three colours."}]
    greedy = {"temperature": 0.0}  # sent raw: this SDK version has no temperature argument
    with claude.messages.stream(model="claude-sonnet-4-6", max_tokens=30, extra_body=greedy,
                                system="Be brief.", messages=messages) as stream:  # type: ignore[arg-type]
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(texts) >= 5
    counted = claude.messages.count_tokens(model="claude-sonnet-4-6", system="Be brief.",
                                           messages=messages)  # type: ignore[arg-type]
    usage = final.usage
    assert usage.input_tokens + (usage.cache_read_input_tokens or 0) + (
        usage.cache_creation_input_tokens or 0) == counted.input_tokens
    whole = claude.messages.create(model=DEFAULT_MODEL, max_tokens=30, extra_body=greedy,
                                   system="Be brief.", messages=messages)  # type: ignore[arg-type]
    assert whole.content[0].text == "".join(texts)  # type: ignore[union-attr]
    assert whole.stop_reason == final.stop_reason


def test_prompt_too_long_in_anthropic_words(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as exc:
        claude.messages.create(model=DEFAULT_MODEL, max_tokens=10, messages=[
            {"role": "user", "content": "hello " * 40000}])
    assert "prompt is too long" in exc.value.message and "32768 maximum" in exc.value.message


def test_count_tokens_does_not_wait_behind_generation(claude: anthropic.Anthropic,
                                                      server_url: str) -> None:
    import threading

    import httpx

    finished = threading.Event()
    first_chunk = threading.Event()

    def long_generation() -> None:
        with httpx.stream("POST", f"{server_url}/v1/chat/completions", timeout=300, json={
                "model": DEFAULT_MODEL, "stream": True, "max_tokens": 400, "temperature": 0,
                "messages": [{"role": "user", "content": "Write a long story."}]}) as resp:
            for line in resp.iter_lines():
                if line.startswith("data: "):
                    first_chunk.set()
        finished.set()

    worker = threading.Thread(target=long_generation)
    worker.start()
    assert first_chunk.wait(60)
    counted = claude.messages.count_tokens(model=DEFAULT_MODEL, messages=[
        {"role": "user", "content": "How many tokens is this?"}])
    # The answer came while the 400-token generation was still running.
    assert not finished.is_set()
    assert counted.input_tokens > 5
    worker.join(300)
