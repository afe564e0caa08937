"""The same API behaviour from both engines: llama.cpp with the default model, and MLX
(on this CPU) with a tiny model made of the default model's tokenizer and random layers.

Every check here holds whatever the model says: it compares the server with itself
(greedy runs, seeds, stream against whole answer, a stop string taken from its own output).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import anthropic
import httpx
import jsonschema
import openai
import pytest

from mlxjan.settings import DEFAULT_MODEL
from tests.e2e.conftest import TINY_MLX_MODEL, llama_tokenize

pytestmark = pytest.mark.e2e
GREEDY = {"temperature": 0.0}
LONG_SYSTEM = "You are a careful assistant. " + "Answers are short and exact. " * 100


@dataclass
class Target:
    engine: str
    model: str
    url: str
    client: openai.OpenAI


@pytest.fixture(scope="module", params=["llamacpp", "mlx"])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    engine: str = request.param
    url: str = request.getfixturevalue("server_url" if engine == "llamacpp"
                                       else "mlx_server_url")
    model = DEFAULT_MODEL if engine == "llamacpp" else TINY_MLX_MODEL
    with openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0,
                       timeout=300) as client:
        yield Target(engine, model, url, client)


def _complete(t: Target, text: str, **kw: object) -> openai.types.chat.ChatCompletion:
    return t.client.chat.completions.create(  # type: ignore[call-overload, no-any-return]
        model=t.model, messages=[{"role": "user", "content": text}], **kw)


def _stream_text(t: Target, text: str, **kw: object) -> tuple[list[str], object]:
    chunks = list(t.client.chat.completions.create(  # type: ignore[call-overload]
        model=t.model, messages=[{"role": "user", "content": text}], stream=True,
        stream_options={"include_usage": True}, **kw))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and
              c.choices[0].delta.content]
    return pieces, chunks[-1].usage


def test_lists_its_model(target: Target) -> None:
    assert target.model in [m.id for m in target.client.models.list().data]


def test_streams_token_by_token_with_usage(target: Target) -> None:
    pieces, usage = _stream_text(target, "Count from one to fifty in words.", max_tokens=12,
                                 **GREEDY)
    assert len(pieces) >= 6
    assert usage is not None and usage.completion_tokens == 12  # type: ignore[attr-defined]


def test_stream_and_whole_answer_agree(target: Target) -> None:
    question = "Describe the sea in one sentence."
    whole = _complete(target, question, max_tokens=16, **GREEDY)
    pieces, usage = _stream_text(target, question, max_tokens=16, **GREEDY)
    assert "".join(pieces) == whole.choices[0].message.content
    assert whole.usage is not None
    assert usage.prompt_tokens == whole.usage.prompt_tokens  # type: ignore[attr-defined]


def test_max_tokens_gives_length(target: Target) -> None:
    result = _complete(target, "Write a long story about a cat.", max_completion_tokens=5,
                       **GREEDY)
    assert result.choices[0].finish_reason == "length"
    assert result.usage is not None and result.usage.completion_tokens == 5


def test_stop_string_taken_from_own_output(target: Target) -> None:
    question = "List ten fruits, one per line."
    text = _complete(target, question, max_tokens=24, **GREEDY).choices[0].message.content
    assert text and len(text) > 8
    stop = text[len(text) // 2: len(text) // 2 + 3]
    stopped = _complete(target, question, max_tokens=24, stop=[stop], **GREEDY)
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].message.content == text[: text.index(stop)]


def test_same_seed_same_output(target: Target) -> None:
    def sample() -> str | None:
        return _complete(target, "Invent a name for a dragon.", temperature=1.0, seed=4321,
                         max_tokens=12).choices[0].message.content

    assert sample() == sample()


def test_logprobs(target: Target) -> None:
    result = _complete(target, "Say yes.", max_tokens=4, logprobs=True, top_logprobs=2,
                       **GREEDY)
    content = result.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and result.usage is not None
    assert len(content) == result.usage.completion_tokens
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 2
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob, abs=1e-3)


def test_second_turn_reuses_the_prompt(target: Target) -> None:
    first = [{"role": "system", "content": LONG_SYSTEM},
             {"role": "user", "content": f"Hello from the {target.engine} test."}]
    answer = target.client.chat.completions.create(model=target.model, messages=first,  # type: ignore[arg-type]
                                                   max_tokens=4, **GREEDY)
    second = [*first, {"role": "assistant", "content": answer.choices[0].message.content},
              {"role": "user", "content": "And again."}]
    again = target.client.chat.completions.create(model=target.model, messages=second,  # type: ignore[arg-type]
                                                  max_tokens=4, **GREEDY)
    assert again.usage is not None and again.usage.prompt_tokens_details is not None
    assert again.usage.prompt_tokens_details.cached_tokens > 500


def test_errors_in_openai_shape(target: Target) -> None:
    with pytest.raises(openai.NotFoundError):
        target.client.chat.completions.create(model="no-such-model",
                                              messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError) as too_long:
        _complete(target, "hello " * 40000)
    assert too_long.value.code == "context_length_exceeded"
    assert _complete(target, "Say OK.", max_tokens=3).choices[0].message.content is not None


def test_anthropic_stream(target: Target) -> None:
    with anthropic.Anthropic(base_url=target.url, api_key="none", max_retries=0) as claude, \
            claude.messages.stream(model=target.model, max_tokens=6, messages=[
                {"role": "user", "content": "Count from one to fifty in words."}],
                extra_body={"temperature": 0.0}) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert events[0].type == "message_start"
    assert events[0].message.usage.input_tokens > 0  # type: ignore[union-attr]
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 6


def test_disconnect_mid_answer_frees_the_engine(target: Target) -> None:
    body = {"model": target.model, "stream": True, "max_tokens": 4000,
            "messages": [{"role": "user", "content": "Write a very long essay."}]}
    with httpx.stream("POST", f"{target.url}/v1/chat/completions", json=body,
                      timeout=120) as response:
        lines = response.iter_lines()
        for _ in range(6):
            next(lines)
    # The abandoned request leaves within a decode step (4000 tokens would take minutes).
    deadline = time.monotonic() + 20
    while httpx.get(f"{target.url}/v1/status").json()["requests"]["active"]:
        assert time.monotonic() < deadline, "the abandoned request still holds the engine"
        time.sleep(0.1)
    result = _complete(target, "Say OK.", max_tokens=3)
    assert result.choices[0].finish_reason in ("stop", "length")


CITY_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "required": ["city"],
                   "properties": {"city": {"type": "string", "enum": ["Paris", "London"]}}}}}


def test_required_tool_choice_forces_a_valid_call(target: Target) -> None:
    result = target.client.chat.completions.create(
        model=target.model, tools=[CITY_TOOL], tool_choice="required", max_tokens=60,  # type: ignore[list-item]
        messages=[{"role": "user", "content": "What is the weather in Paris?"}], **GREEDY)  # type: ignore[arg-type]
    choice = result.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments)["city"] in ("Paris", "London")  # type: ignore[union-attr]


def test_json_schema_response_validates(target: Target) -> None:
    schema = {"type": "object", "required": ["answer", "sure"], "additionalProperties": False,
              "properties": {"answer": {"type": "string", "enum": ["yes", "no"]},
                             "sure": {"type": "boolean"}}}
    result = _complete(target, "Is the sky blue? Reply in JSON.", max_tokens=40,
                       response_format={"type": "json_schema", "json_schema": {
                           "name": "reply", "strict": True, "schema": schema}}, **GREEDY)
    jsonschema.validate(json.loads(result.choices[0].message.content or ""), schema)


@pytest.fixture(scope="module")
def thinking(target: Target, request: pytest.FixtureRequest) -> str:
    """The target's model under a template that opens a <think> block in the prompt."""
    if target.engine == "llamacpp":
        return str(request.getfixturevalue("thinking_model"))
    from pathlib import Path

    from mlxjan.models.derive import create_variant
    from mlxjan.models.store import ModelStore

    store = ModelStore(request.getfixturevalue("tiny_mlx_home"))
    if store.get("tiny-think") is None:
        template = Path(__file__).parent / "templates" / "qwen2.5-think.jinja"
        create_variant(store, TINY_MLX_MODEL, "tiny-think", template.read_text())
    return "tiny-think"


def test_json_schema_answer_after_a_budgeted_reasoning(target: Target, thinking: str) -> None:
    schema = {"type": "object", "required": ["answer"], "additionalProperties": False,
              "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}}}
    result = target.client.chat.completions.create(
        model=thinking, max_tokens=40, messages=[{"role": "user", "content": "Is it 5?"}],
        response_format={"type": "json_schema", "json_schema": {  # type: ignore[typeddict-item]
            "name": "reply", "strict": True, "schema": schema}},
        extra_body={"reasoning_budget": 4}, **GREEDY)  # type: ignore[arg-type]
    message = result.choices[0].message
    assert (message.model_extra or {}).get("reasoning_content")
    jsonschema.validate(json.loads(message.content or ""), schema)
    usage = result.usage
    assert usage is not None and usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 4  # it never closes alone


def test_forced_tool_call_after_a_budgeted_reasoning(target: Target, thinking: str) -> None:
    result = target.client.chat.completions.create(
        model=thinking, tools=[CITY_TOOL], tool_choice="required", max_tokens=60,  # type: ignore[list-item]
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],  # type: ignore[arg-type]
        extra_body={"reasoning_budget": 4}, **GREEDY)
    choice = result.choices[0]
    assert (choice.message.model_extra or {}).get("reasoning_content")
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert isinstance(json.loads(call.function.arguments)["city"], str)  # type: ignore[union-attr]


@dataclass(frozen=True)
class Step:
    """One generated token, its log-probability and the best alternative's."""

    token: str
    logprob: float
    runner_up: str
    runner_up_logprob: float


# Batched llama.cpp decode steps add in another order than lone ones: the same token's
# log-probability moves by rounding only (seen here: under 0.05), and where two tokens are
# this close the choice may tip. A wrong sequence id or position moves it by whole nats.
LOGPROB_TOLERANCE = 0.2
NEAR_TIE = 0.3


def _tokens(target: Target, question: str, max_tokens: int) -> list[Step]:
    result = _complete(target, question, max_tokens=max_tokens, logprobs=True,
                       top_logprobs=2, **GREEDY)
    content = result.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None
    steps = []
    for entry in content:
        other = next(t for t in entry.top_logprobs if t.token != entry.token)
        steps.append(Step(entry.token, entry.logprob, other.token, other.logprob))
    return steps


def _assert_same_answers(target: Target, alone: list[list[Step]],
                         together: list[list[Step]]) -> None:
    """MLX: batched greedy answers equal lone ones exactly. llama.cpp: token by token, the
    same log-probabilities within rounding, up to a point where the lone answer was a near
    tie and the batched one took the runner-up; past that the answers are different texts."""
    if target.engine == "mlx":
        assert together == alone
        return
    compared = 0
    for lone, batched in zip(alone, together, strict=True):
        for i, (a, b) in enumerate(zip(lone, batched, strict=True)):
            if a.token != b.token:
                assert b.token == a.runner_up and a.logprob - a.runner_up_logprob < NEAR_TIE, \
                    f"token {i}: batched {b} where alone {a}"
                break
            assert abs(a.logprob - b.logprob) < LOGPROB_TOLERANCE, f"token {i}: {a} vs {b}"
            compared += 1
    assert compared >= sum(map(len, alone)) // 2, "batched answers parted from lone ones early"


def test_parallel_answers_match_one_at_a_time(target: Target) -> None:
    questions = [f"Give me {n} words about the sea." for n in range(2, 6)]
    alone = [_tokens(target, q, 10) for q in questions]
    with ThreadPoolExecutor(len(questions)) as pool:
        together = list(pool.map(lambda q: _tokens(target, q, 10), questions))
    _assert_same_answers(target, alone, together)


def test_a_stream_leaving_mid_batch_leaves_the_others_alone(target: Target) -> None:
    questions = [f"Name {n} colours." for n in range(2, 5)]
    alone = [_tokens(target, q, 16) for q in questions]
    body = {"model": target.model, "stream": True, "max_tokens": 4000, **GREEDY,
            "messages": [{"role": "user", "content": "Write a very long essay."}]}

    def leave_early() -> None:
        with httpx.stream("POST", f"{target.url}/v1/chat/completions", json=body,
                          timeout=120) as response:
            lines = response.iter_lines()
            for _ in range(8):
                next(lines)

    with ThreadPoolExecutor(len(questions) + 1) as pool:
        leaving = pool.submit(leave_early)
        together = list(pool.map(lambda q: _tokens(target, q, 16), questions))
        leaving.result()
    _assert_same_answers(target, alone, together)
    deadline = time.monotonic() + 20
    while httpx.get(f"{target.url}/v1/status").json()["requests"]["active"]:
        assert time.monotonic() < deadline, "the abandoned request still holds a slot"
        time.sleep(0.1)


def test_raw_and_fill_in_the_middle_completions(target: Target,
                                                default_model_path: Path) -> None:
    """Both engines build a completion's prompt as llama.cpp tokenizes its text: raw text
    with no template, and the hole in the model's own FIM control tokens."""
    prompt = "def add(a, b):\n    "
    raw = target.client.completions.create(model=target.model, prompt=prompt, max_tokens=3,
                                           **GREEDY)
    assert raw.usage is not None and raw.usage.completion_tokens > 0
    assert raw.usage.prompt_tokens == len(llama_tokenize(
        default_model_path, prompt, add_bos=False, special=True))
    fim = target.client.completions.create(model=target.model, prompt=prompt,
                                           suffix="\nprint(add(1, 2))\n", max_tokens=3,
                                           **GREEDY)
    expected = f"<|fim_prefix|>{prompt}<|fim_suffix|>\nprint(add(1, 2))\n<|fim_middle|>"
    assert fim.usage is not None
    assert fim.usage.prompt_tokens == len(llama_tokenize(
        default_model_path, expected, add_bos=False, special=True))
