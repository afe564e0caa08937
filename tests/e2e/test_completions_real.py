"""Code completion on the real default model (Qwen2.5-Coder, FIM tokens of its own) through
`/v1/completions` with a suffix (the `openai` SDK) and llama-server's `/infill`: the middle
makes the file parse, streams, and successive keystrokes reuse the cached prompt."""

from __future__ import annotations

import ast
import json

import httpx
import openai
import pytest

from mlxjan.settings import DEFAULT_MODEL
from tests.e2e.conftest import pull

pytestmark = pytest.mark.e2e
GREEDY = {"temperature": 0.0}
# A function whose body is the hole: without a middle the file does not parse.
PREFIX = "def add(a, b):\n    "
SUFFIX = "\n\n\nprint(add(2, 3))\n"
NO_FIM_MODEL = "smollm2-135m-instruct"


def _parses(middle: str) -> bool:
    try:
        ast.parse(PREFIX + middle + SUFFIX)
    except SyntaxError:
        return False
    return True


def test_the_sdk_fills_a_function_body_that_makes_the_file_parse(
        client: openai.OpenAI) -> None:
    assert not _parses("")
    result = client.completions.create(model=DEFAULT_MODEL, prompt=PREFIX, suffix=SUFFIX,
                                       max_tokens=48, **GREEDY)
    middle = result.choices[0].text
    assert middle.strip(), result
    assert _parses(middle), middle
    assert result.object == "text_completion"
    assert result.usage is not None and result.usage.completion_tokens >= 1


def test_a_streamed_middle_arrives_in_pieces_and_matches_the_whole_one(
        client: openai.OpenAI) -> None:
    whole = client.completions.create(model=DEFAULT_MODEL, prompt=PREFIX, suffix=SUFFIX,
                                      max_tokens=48, **GREEDY).choices[0].text
    chunks = list(client.completions.create(
        model=DEFAULT_MODEL, prompt=PREFIX, suffix=SUFFIX, max_tokens=48, stream=True,
        stream_options={"include_usage": True}, **GREEDY))
    pieces = [c.choices[0].text for c in chunks if c.choices and c.choices[0].text]
    assert len(pieces) >= 2, pieces
    assert "".join(pieces) == whole
    assert chunks[-1].usage is not None
    # The prompt came from the cache: the same request a moment before.
    assert chunks[-1].usage.prompt_tokens_details is not None
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens > 0


def test_a_raw_prompt_with_echo(client: openai.OpenAI) -> None:
    result = client.completions.create(model=DEFAULT_MODEL, prompt="# Python\nimport",
                                       max_tokens=4, echo=True, logprobs=2, **GREEDY)
    choice = result.choices[0]
    assert choice.text.startswith("# Python\nimport") and len(choice.text) > 15
    assert choice.logprobs is not None and choice.logprobs.tokens
    assert choice.logprobs.text_offset is not None
    assert choice.logprobs.text_offset[0] == len("# Python\nimport")


def test_infill_fills_the_hole_and_keystrokes_reuse_the_cache(server_url: str) -> None:
    extra = [{"filename": "calc/util.py", "text": "def sub(a, b):\n    return a - b\n"}]
    with httpx.Client(base_url=server_url, timeout=300) as http:
        first = http.post("/infill", json={
            "input_prefix": PREFIX, "input_suffix": SUFFIX, "input_extra": extra,
            "n_predict": 48, "t_max_predict_ms": 20_000, **GREEDY}).json()
        assert _parses(first["content"]), first
        assert first["stop"] is True and first["timings"]["predicted_n"] >= 1
        # The user typed "re" at the cursor: everything before it is in the cache.
        second = http.post("/infill", json={
            "input_prefix": PREFIX + "re", "input_suffix": SUFFIX, "input_extra": extra,
            "n_predict": 48, "response_fields": ["content", "tokens_cached",
                                                 "timings/prompt_n"], **GREEDY}).json()
    assert set(second) == {"content", "tokens_cached", "timings/prompt_n"}
    assert second["tokens_cached"] > 20
    assert second["timings/prompt_n"] < 20  # only the new tokens were evaluated
    assert _parses("re" + second["content"]), second


def test_infill_streams(server_url: str) -> None:
    with httpx.Client(base_url=server_url, timeout=300) as http, http.stream(
            "POST", "/infill", json={"input_prefix": PREFIX, "input_suffix": SUFFIX,
                                     "n_predict": 48, "stream": True, **GREEDY}) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines()
                  if line.startswith("data: ")]
    assert len(events) >= 3
    assert events[-1]["stop"] is True and "timings" in events[-1]
    assert _parses("".join(e["content"] for e in events))


def test_a_model_without_fim_tokens_gets_a_clear_400(client: openai.OpenAI) -> None:
    pull(NO_FIM_MODEL)
    with pytest.raises(openai.BadRequestError) as exc:
        client.completions.create(model=NO_FIM_MODEL, prompt="def f():", suffix="\n",
                                  max_tokens=4, extra_body={"keep_alive": 0})
    assert exc.value.code == "fim_unsupported"
    assert "fill-in-the-middle" in str(exc.value)
