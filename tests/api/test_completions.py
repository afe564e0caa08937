"""`/v1/completions` (the `openai` SDK's `completions.create`) and llama-server's `/infill`
against the fake engine: what reaches the engine, and every answer's shape."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from mlxjan.settings import Settings
from mlxjan.testing.fake_engine import FakeEngine
from mlxjan.types import FillInMiddle, SourceFile, TextPrompt
from tests.api.conftest import MODEL, Server, _serve


def test_a_text_prompt_is_completed_without_a_chat_template(server: Server) -> None:
    result = server.client.completions.create(model=MODEL, prompt="Once upon", max_tokens=50)
    request = server.engine.requests[-1]
    assert request.messages == ()
    assert request.prompt == TextPrompt(text="Once upon")
    assert request.sampling.max_tokens == 50
    assert result.object == "text_completion"
    assert result.id.startswith("cmpl-")
    assert result.choices[0].text == "You said: Once upon"
    assert result.choices[0].finish_reason == "stop"
    assert result.usage is not None and result.usage.completion_tokens == 4


def test_max_tokens_defaults_to_16_as_openai_and_cuts_with_length(server: Server) -> None:
    server.client.completions.create(model=MODEL, prompt="a")
    assert server.engine.requests[-1].sampling.max_tokens == 16
    result = server.client.completions.create(model=MODEL, prompt="a b c d", max_tokens=2)
    assert result.choices[0].text == "You said:"
    assert result.choices[0].finish_reason == "length"


def test_a_suffix_makes_a_fill_in_the_middle_prompt_with_middle_stops(server: Server) -> None:
    result = server.client.completions.create(
        model=MODEL, prompt="def add(a, b):\n    ", suffix="\n\nprint(add(1, 2))\n",
        stop=["\n\n\n"])
    request = server.engine.requests[-1]
    assert request.prompt == FillInMiddle(prefix="def add(a, b):\n    ",
                                          suffix="\n\nprint(add(1, 2))\n")
    assert request.sampling.stop == ("\n\n\n", "\nprint(", "```")
    assert result.choices[0].text == "middle"


def test_a_list_of_prompts_gives_one_choice_each_in_order(server: Server) -> None:
    result = server.client.completions.create(model=MODEL, prompt=["one", "two", "three"])
    assert [(c.index, c.text) for c in result.choices] == [
        (0, "You said: one"), (1, "You said: two"), (2, "You said: three")]
    assert result.usage is not None and result.usage.completion_tokens == 9


def test_token_id_prompts_reach_the_engine_as_ids(server: Server) -> None:
    server.client.completions.create(model=MODEL, prompt=[1, 2, 3])
    assert server.engine.requests[-1].prompt == TextPrompt(tokens=(1, 2, 3))
    server.client.completions.create(model=MODEL, prompt=[[4, 5], [6]])
    assert [r.prompt for r in server.engine.requests[-2:]] == [
        TextPrompt(tokens=(4, 5)), TextPrompt(tokens=(6,))]


def test_echo_puts_the_prompt_before_the_completion(server: Server) -> None:
    result = server.client.completions.create(model=MODEL, prompt="Hi", echo=True)
    assert result.choices[0].text == "HiYou said: Hi"


def test_streaming_sends_each_token_then_finish_then_usage(server: Server) -> None:
    stream = server.client.completions.create(
        model=MODEL, prompt=["ab cd", "ef"], stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    texts: dict[int, str] = {0: "", 1: ""}
    finishes = {}
    for chunk in chunks[:-1]:
        assert chunk.object == "text_completion"
        (choice,) = chunk.choices
        texts[choice.index] += choice.text
        if choice.finish_reason:
            finishes[choice.index] = choice.finish_reason
    assert texts == {0: "You said: ab cd", 1: "You said: ef"}
    assert finishes == {0: "stop", 1: "stop"}
    assert len(chunks) >= 2 + 3 + 2 + 1  # tokens, two finishes, the usage chunk
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 7


def test_streamed_echo_comes_first(server: Server) -> None:
    chunks = list(server.client.completions.create(model=MODEL, prompt="Hi", echo=True,
                                                   stream=True))
    assert chunks[0].choices[0].text == "Hi"
    assert "".join(c.choices[0].text for c in chunks) == "HiYou said: Hi"


def test_legacy_logprobs_have_offsets_into_the_choice_text(server: Server) -> None:
    server.client.completions.create(model=MODEL, prompt="x", logprobs=3)
    sampling = server.engine.requests[-1].sampling
    assert sampling.logprobs and sampling.top_logprobs == 3


@pytest.mark.parametrize(("fields", "param"), [
    ({"n": 2}, "n"), ({"best_of": 3}, "n"), ({"prompt": []}, "prompt"),
    ({"prompt": [[1]] * 17}, "prompt"), ({"prompt": [1, 2], "suffix": "x"}, "suffix"),
    ({"prompt": [1, 2], "echo": True}, "echo"), ({"suffix": "x", "echo": True}, "echo"),
    ({"logprobs": 21}, "logprobs"),
])
def test_refused_requests_name_their_field(server: Server, fields: dict[str, object],
                                           param: str) -> None:
    body = {"model": MODEL, "prompt": "hi", **fields}
    response = server.http.post("/v1/completions", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] is not None and error["param"].split(".")[0] == param
    assert server.engine.requests == []


@pytest.fixture
def no_fim_server(tmp_path: Path) -> Iterator[Server]:
    yield from _serve(Settings(data_dir=tmp_path, default_model=MODEL),
                      FakeEngine(MODEL, fim=False))


def test_a_model_without_fim_tokens_refuses_a_suffix(no_fim_server: Server) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        no_fim_server.client.completions.create(model=MODEL, prompt="a", suffix="b")
    assert exc.value.code == "fim_unsupported"
    response = no_fim_server.http.post("/infill", json={"input_prefix": "a"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input_suffix"
    # A plain completion still works on it.
    assert no_fim_server.client.completions.create(model=MODEL, prompt="a").choices


@pytest.fixture
def infill_server(tmp_path: Path) -> Iterator[Server]:
    yield from _serve(Settings(data_dir=tmp_path, default_model=MODEL), FakeEngine(MODEL))


def test_infill_takes_llama_servers_fields(infill_server: Server) -> None:
    body = {"input_prefix": "def f():\n    ", "prompt": "re", "input_suffix": "\n\nf()\n",
            "input_extra": [{"filename": "a.py", "text": "A = 1\n"}, {"text": "B = 2"}],
            "n_predict": 20, "top_k": 10, "seed": -1, "repeat_penalty": 1.1,
            "cache_prompt": True, "samplers": ["top_k", "infill"]}
    response = infill_server.http.post("/infill", json=body)
    assert response.status_code == 200, response.text
    request = infill_server.engine.requests[-1]
    assert request.model == MODEL
    assert request.prompt == FillInMiddle(
        prefix="def f():\n    re", suffix="\n\nf()\n",
        files=(SourceFile("a.py", "A = 1\n"), SourceFile("tmp", "B = 2")), fit=True)
    sampling = request.sampling
    assert (sampling.max_tokens, sampling.top_k, sampling.seed,
            sampling.repetition_penalty) == (20, 10, None, 1.1)
    answer = response.json()
    assert answer["content"] == "middle"
    assert answer["stop"] is True and answer["stop_type"] == "eos"
    assert answer["tokens_predicted"] == 1
    assert answer["timings"]["predicted_n"] == 1
    assert answer["tokens_evaluated"] > 0
    # Also under the API prefix, beside the other routes.
    assert infill_server.http.post("/v1/infill", json=body).status_code == 200


def test_infill_response_fields_pick_nested_ones(infill_server: Server) -> None:
    response = infill_server.http.post("/infill", json={
        "input_prefix": "x", "response_fields": ["content", "timings/prompt_n", "nothing"]})
    assert set(response.json()) == {"content", "timings/prompt_n"}


def test_infill_streams_its_content_then_a_last_chunk_with_timings(
        infill_server: Server) -> None:
    infill_server.engine.script = lambda _: "one two three"
    with infill_server.http.stream("POST", "/infill", json={
            "input_prefix": "x", "stream": True}) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines()
                  if line.startswith("data: ")]
    assert "".join(e["content"] for e in events) == "one two three"
    assert [e["stop"] for e in events] == [False] * (len(events) - 1) + [True]
    assert len(events) == 4
    assert events[-1]["timings"]["predicted_n"] == 3


def test_infill_stops_after_its_time_limit_at_a_complete_line(infill_server: Server) -> None:
    engine = infill_server.engine
    engine.script = lambda _: "a\nb c d e f g h i j k l m n o p q r s t u v w x y z"
    engine.token_delay = 0.02
    answer = infill_server.http.post("/infill", json={
        "input_prefix": "x", "t_max_predict_ms": 60}).json()
    assert answer["stop_type"] == "limit"
    assert answer["content"].startswith("a\nb")
    assert len(answer["content"].split()) < 20
    assert engine.tokens_produced < 26
