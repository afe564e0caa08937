"""GGUF -> MLX on the real installed models: tokenizer and greedy parity with llama.cpp.

Slow on Linux CPU (about a minute per model): conversion to float32, then 8 greedy tokens
from mlx-lm and from llama.cpp on the same prompt tokens.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from converters.gguf_to_mlx import ConvertOptions, convert_gguf
from converters.tiny import make_tiny_model
from mlxjan.engine.llamacpp.decode import greedy
from tests.e2e.conftest import llama_runtime, llama_tokenize, pull

pytestmark = pytest.mark.e2e

TEXTS = [
    "Hello world", "def f(x):\n    return x**2  # 中文 日本語",
    "  leading  spaces\t\ttabs\n\n\nnewlines   ", "emoji 🤖👍🏽 done", "12345678 3.14159 1e-10",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", "<tool_call>{\"a\": 1}</tool_call>",
    "<start_of_turn>user\nhi<end_of_turn>\n", "I'm you'LL WE'VE", "ÀÉÎõü straße Ωμέγα",
    "<b>bold</b>", "a\u200bb \x01 \ufffd", "", " ", "\n",
]


# SmolLM2-135M at Q4_1 has next-token margins under 0.1 logit on these prompts, while
# llama.cpp's Q8-quantised activations move its logits by about 0.2 from the float model's,
# so greedy parity needs a prompt whose next tokens are clear: for smollm2 the coding
# request has a step whose top two differ by 0.03, and counting has none.
GREEDY_ASK = {"smollm2-135m-instruct": "Count from 1 to 10, separated by commas."}


@pytest.fixture(scope="module", params=["qwen2.5-coder-0.5b-instruct", "gemma-3-270m",
                                        "smollm2-135m-instruct"])
def model_id(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def gguf_path(model_id: str, default_model_path: Path) -> Path:
    if model_id != "qwen2.5-coder-0.5b-instruct":
        return pull(model_id)
    return default_model_path


@pytest.fixture(scope="module")
def float_model(gguf_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mlx") / "model"
    convert_gguf(gguf_path, out, ConvertOptions(dtype="float32", progress=False))
    return out


@pytest.mark.usefixtures("pinned_llama_cpp")  # exact llama.cpp tokens
def test_tokenizer_matches_llama_cpp(gguf_path: Path, float_model: Path) -> None:
    from tokenizers import Tokenizer

    ours = Tokenizer.from_file(str(float_model / "tokenizer.json"))
    for text in TEXTS:
        assert ours.encode(text).ids == llama_tokenize(gguf_path, text, add_bos=True,
                                                       special=True), text


@pytest.mark.usefixtures("pinned_llama_cpp")  # exact llama.cpp tokens
def test_greedy_tokens_match_llama_cpp(model_id: str, gguf_path: Path,
                                       float_model: Path) -> None:
    import mlx_lm
    from mlx_lm.sample_utils import make_sampler

    model, tokenizer = mlx_lm.load(str(float_model))
    if tokenizer.chat_template:
        ask = GREEDY_ASK.get(model_id, "Write a Python function that adds two numbers.")
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": ask}],
                                               add_generation_prompt=True)
    else:
        prompt = tokenizer.encode("Monday, Tuesday, Wednesday,")
    ours = [r.token for r in mlx_lm.stream_generate(model, tokenizer, prompt, max_tokens=8,
                                                    sampler=make_sampler(0.0))]
    with llama_runtime(gguf_path) as runtime:
        theirs = greedy(runtime, list(prompt), len(ours))
    assert ours == theirs, (tokenizer.decode(ours), tokenizer.decode(theirs))


def test_tiny_model_keeps_the_real_tokenizer(gguf_path: Path, float_model: Path,
                                             tmp_path: Path) -> None:
    import mlx_lm

    tiny = make_tiny_model(gguf_path, tmp_path / "tiny")
    assert (tiny / "tokenizer.json").read_bytes() == \
        (float_model / "tokenizer.json").read_bytes()
    model, tokenizer = mlx_lm.load(str(tiny))
    assert len(model.model.layers) == 2
    assert isinstance(mlx_lm.generate(model, tokenizer, tokenizer.encode("hi"), max_tokens=2),
                      str)
