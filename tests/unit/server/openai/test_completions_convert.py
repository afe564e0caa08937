"""`/v1/completions` and `/infill` requests to GenerationRequests, and the legacy logprobs."""

from __future__ import annotations

import pytest

from mlxjan.errors import InvalidRequestError
from mlxjan.server.openai.completions import schemas as s
from mlxjan.server.openai.completions.convert import (
    infill_request,
    legacy_logprobs,
    prompts_of,
    to_generation_requests,
)
from mlxjan.types import DEFAULT_SAMPLING, FillInMiddle, TextPrompt, TokenLogprob


def _body(**fields: object) -> s.CompletionRequest:
    return s.CompletionRequest.model_validate({"model": "m", "prompt": "hi", **fields})


@pytest.mark.parametrize(("prompt", "expected"), [
    ("a", [TextPrompt("a")]),
    (["a", "b"], [TextPrompt("a"), TextPrompt("b")]),
    ([1, 2], [TextPrompt(tokens=(1, 2))]),
    ([[1], [2, 3]], [TextPrompt(tokens=(1,)), TextPrompt(tokens=(2, 3))]),
])
def test_each_prompt_shape(prompt: object, expected: list[TextPrompt]) -> None:
    assert prompts_of(_body(prompt=prompt)) == expected


def test_sampling_and_logprobs_come_from_the_request() -> None:
    (request,) = to_generation_requests(
        _body(temperature=0.2, top_k=5, stop="END", logprobs=0, max_tokens=7),
        DEFAULT_SAMPLING)
    sampling = request.sampling
    assert (sampling.temperature, sampling.top_k, sampling.stop, sampling.max_tokens,
            sampling.logprobs, sampling.top_logprobs) == (0.2, 5, ("END",), 7, True, 0)
    assert request.messages == () and request.tools == ()


def test_a_suffix_adds_the_middle_stops_after_the_requests_own() -> None:
    (request,) = to_generation_requests(
        _body(prompt="def f():\n    ", suffix="\n\nf()\n", stop=["\nf()"]), DEFAULT_SAMPLING)
    assert request.prompt == FillInMiddle("def f():\n    ", "\n\nf()\n")
    assert request.sampling.stop == ("\nf()", "```")  # "\nf(" is too short to be sure


def test_a_prompt_list_longer_than_the_cap_is_refused() -> None:
    with pytest.raises(InvalidRequestError):
        prompts_of(_body(prompt=["x"] * (s.MAX_PROMPTS + 1)))


def test_infill_joins_prompt_to_prefix_and_fits() -> None:
    body = s.InfillRequest.model_validate({"input_prefix": "a", "prompt": "b",
                                           "input_suffix": "c", "n_predict": -1})
    request = infill_request(body, "m", DEFAULT_SAMPLING)
    assert request.prompt == FillInMiddle("ab", "c", fit=True)
    assert request.sampling.max_tokens is None


def test_infill_refuses_wrong_types_strictly() -> None:
    with pytest.raises(ValueError):
        s.InfillRequest.model_validate({"seed": False})
    with pytest.raises(ValueError):
        s.InfillRequest.model_validate({"input_prefix": 3})


def test_legacy_logprobs_offsets_run_on_from_the_echo() -> None:
    items = [TokenLogprob("Hel", -0.5, (72, 101, 108), (("Hel", -0.5, ()), ("He", -1.0, ()))),
             TokenLogprob("lo", -0.25, (108, 111))]
    out = legacy_logprobs(items, offset=4)
    assert out.tokens == ["Hel", "lo"]
    assert out.token_logprobs == [-0.5, -0.25]
    assert out.top_logprobs == [{"Hel": -0.5, "He": -1.0}, None]
    assert out.text_offset == [4, 7]


def test_infill_response_fields_flatten_nested_paths() -> None:
    result = s.InfillResult(content="x", stop=True, model="m", timings=s.Timings(
        prompt_n=3, prompt_ms=1, prompt_per_token_ms=1, prompt_per_second=1, predicted_n=1,
        predicted_ms=1, predicted_per_token_ms=1, predicted_per_second=1))
    assert result.selected(["content", "timings/prompt_n", "timings/nope"]) == {
        "content": "x", "timings/prompt_n": 3}
    assert result.selected(None)["timings"]["prompt_n"] == 3
