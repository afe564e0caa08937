"""The real server process, the real default model, the official `openai` SDK."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from mlxjan.chat.template import ChatTemplate
from mlxjan.settings import DEFAULT_MODEL
from mlxjan.types import ChatMessage
from tests.e2e.conftest import llama_tokenize, pull

pytestmark = pytest.mark.e2e
M = DEFAULT_MODEL
GREEDY = {"temperature": 0.0}


def _ask(client: openai.OpenAI, text: str, **kw: object) -> str:
    result = client.chat.completions.create(
        model=M, messages=[{"role": "user", "content": text}], **GREEDY, **kw)  # type: ignore[arg-type, call-overload]
    return result.choices[0].message.content or ""


def test_models_lists_the_default_model(client: openai.OpenAI) -> None:
    assert M in [m.id for m in client.models.list().data]


def test_streaming_arrives_token_by_token(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model=M, messages=[{"role": "user", "content": "Name three colours."}],
        stream=True, max_tokens=30, stream_options={"include_usage": True}, **GREEDY))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and
              c.choices[0].delta.content]
    assert len(pieces) >= 5
    usage = chunks[-1].usage
    assert usage is not None and chunks[-1].choices == []
    # One chunk per generated token: every token here is plain ASCII text.
    assert usage.completion_tokens in (len(pieces), len(pieces) + 1)


def test_multi_turn_context_is_used(client: openai.OpenAI) -> None:
    result = client.chat.completions.create(model=M, max_tokens=20, messages=[
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Remember this secret word: pineapple."},
        {"role": "assistant", "content": "Got it, I will remember the secret word."},
        {"role": "user", "content": "What is the secret word? Answer with the word only."},
    ], **GREEDY)  # type: ignore[arg-type]
    assert "pineapple" in (result.choices[0].message.content or "").lower()


def test_max_tokens_gives_length(client: openai.OpenAI) -> None:
    result = client.chat.completions.create(
        model=M, messages=[{"role": "user", "content": "Write a long story about a cat."}],
        max_completion_tokens=5, **GREEDY)  # type: ignore[arg-type]
    assert result.choices[0].finish_reason == "length"
    assert result.usage is not None and result.usage.completion_tokens == 5


def test_stop_string_ends_answer_without_appearing(client: openai.OpenAI) -> None:
    prompt = "Count from 1 to 10, separated by commas. Output only the numbers."
    free = _ask(client, prompt, max_tokens=40)
    assert "5" in free  # the unconstrained answer does go past 5
    result = client.chat.completions.create(
        model=M, messages=[{"role": "user", "content": prompt}], stop=["5"], max_tokens=40,
        **GREEDY)  # type: ignore[arg-type]
    text = result.choices[0].message.content or ""
    assert "5" not in text and "4" in text
    assert result.choices[0].finish_reason == "stop"
    assert free.startswith(text)


def test_usage_matches_real_tokenisation(client: openai.OpenAI,
                                         default_model_path: Path) -> None:
    from mlxjan.models.gguf_meta import read_gguf_info

    messages = [ChatMessage("system", "Be terse."), ChatMessage("user", "Say hi.")]
    template = ChatTemplate(read_gguf_info(default_model_path).chat_template)
    expected = len(llama_tokenize(default_model_path, template.render(tuple(messages)),
                                  add_bos=False, special=True))
    result = client.chat.completions.create(model=M, max_tokens=10, messages=[
        {"role": "system", "content": "Be terse."}, {"role": "user", "content": "Say hi."}],
        **GREEDY)  # type: ignore[arg-type]
    assert result.usage is not None
    assert result.usage.prompt_tokens == expected
    content = result.choices[0].message.content or ""
    answer_tokens = len(llama_tokenize(default_model_path, content, add_bos=False,
                                       special=False))
    # The EOS token ends generation and is not counted; re-tokenising may merge differently.
    assert abs(result.usage.completion_tokens - answer_tokens) <= 1
    assert result.usage.total_tokens == result.usage.prompt_tokens + \
        result.usage.completion_tokens


def test_stream_and_non_stream_agree(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "What is 2 + 2? Explain briefly."}]
    whole = client.chat.completions.create(model=M, messages=messages, max_tokens=25, **GREEDY)  # type: ignore[arg-type]
    chunks = list(client.chat.completions.create(
        model=M, messages=messages, max_tokens=25, stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True}, **GREEDY))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage is not None and whole.usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_same_seed_same_output(client: openai.OpenAI) -> None:
    def sample(seed: int) -> str:
        return client.chat.completions.create(
            model=M, messages=[{"role": "user", "content": "Invent a name for a dragon."}],
            temperature=1.0, seed=seed, max_tokens=20).choices[0].message.content or ""

    assert sample(1234) == sample(1234)


def test_same_seed_same_output_with_long_cached_prompt(client: openai.OpenAI) -> None:
    # A prompt over one batch (512 tokens), run cold, after another prompt, and warm.
    system = "You are a storyteller. " + "Stories are told by the sea. " * 120

    def sample(question: str) -> str:
        return client.chat.completions.create(model=M, temperature=1.0, seed=99, max_tokens=16,
                                              messages=[{"role": "system", "content": system},
                                                        {"role": "user", "content": question}]
                                              ).choices[0].message.content or ""

    first = sample("Invent a name for a dragon.")
    sample("Invent a name for a ship.")
    assert sample("Invent a name for a dragon.") == first
    assert sample("Invent a name for a dragon.") == first


def test_multibyte_text_streams_unbroken(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model=M, stream=True, max_tokens=30, messages=[{"role": "user", "content":
            "Repeat exactly: 日本語のテキスト café 🙂"}], **GREEDY))  # type: ignore[arg-type]
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert all("\ufffd" not in p for p in pieces)
    assert "日本" in "".join(pieces)


def test_logprobs(client: openai.OpenAI) -> None:
    result = client.chat.completions.create(
        model=M, messages=[{"role": "user", "content": "Say yes."}], max_tokens=4,
        logprobs=True, top_logprobs=3, **GREEDY)  # type: ignore[arg-type]
    content = result.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and result.usage is not None
    assert len(content) == result.usage.completion_tokens
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        # Greedy: the chosen token is the most likely one.
        assert entry.top_logprobs[0].token == entry.token


def test_errors_in_openai_shape(client: openai.OpenAI, server_url: str) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        _ask(client, "hi") if False else client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as too_long:
        client.chat.completions.create(
            model=M, messages=[{"role": "user", "content": "hello " * 40000}])
    assert too_long.value.code == "context_length_exceeded"
    assert "32768" in too_long.value.message
    bad = httpx.post(f"{server_url}/v1/chat/completions", content=b"{",
                     headers={"content-type": "application/json"})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as n2:
        client.chat.completions.create(model=M, n=2,
                                       messages=[{"role": "user", "content": "hi"}])
    assert n2.value.param == "n"
    # The server is still healthy and answering after all of that.
    assert _ask(client, "Say OK.", max_tokens=5)


def test_model_without_template_continues_plain_text(client: openai.OpenAI) -> None:
    pull("gemma-3-270m")
    assert "gemma-3-270m" in [m.id for m in client.models.list().data]
    result = client.chat.completions.create(
        model="gemma-3-270m", messages=[{"role": "user", "content": "Monday, Tuesday, Wednesday,"}],
        max_tokens=40, temperature=0.0)
    text = result.choices[0].message.content or ""
    assert "thursday" in text.lower()  # the raw text was continued, no chat markers
    assert result.usage is not None and result.usage.completion_tokens > 0
    # The default model is still resident and answering beside it.
    assert _ask(client, "Say OK.", max_tokens=5)
