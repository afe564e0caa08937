from __future__ import annotations

import json
from pathlib import Path

import pytest

from converters.tiny import make_tiny_model
from mlxjan.errors import ConversionError
from tests.unit.converters.synthetic import write_gguf


@pytest.fixture
def gguf_path(tmp_path: Path) -> Path:
    write_gguf(tmp_path / "m.gguf")
    return tmp_path / "m.gguf"


def test_same_seed_gives_identical_weights(gguf_path: Path, tmp_path: Path) -> None:
    a = make_tiny_model(gguf_path, tmp_path / "a", seed=3)
    b = make_tiny_model(gguf_path, tmp_path / "b", seed=3)
    c = make_tiny_model(gguf_path, tmp_path / "c", seed=4)
    weights = [(d / "model.safetensors").read_bytes() for d in (a, b, c)]
    assert weights[0] == weights[1] != weights[2]


def test_tiny_model_loads_and_generates(gguf_path: Path, tmp_path: Path) -> None:
    import mlx_lm

    out = make_tiny_model(gguf_path, tmp_path / "tiny", layers=2, hidden=32, heads=4,
                          kv_heads=2, intermediate=64)
    config = json.loads((out / "config.json").read_text())
    assert (config["model_type"], config["num_hidden_layers"], config["hidden_size"]) == \
        ("qwen2", 2, 32)
    model, tokenizer = mlx_lm.load(str(out))
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "the"}],
                                           add_generation_prompt=True)
    assert prompt[:1] == [tokenizer.convert_tokens_to_ids("<|im_start|>")]
    text = mlx_lm.generate(model, tokenizer, prompt, max_tokens=3)
    assert isinstance(text, str)


def test_refuses_to_overwrite(gguf_path: Path, tmp_path: Path) -> None:
    make_tiny_model(gguf_path, tmp_path / "t")
    with pytest.raises(ConversionError, match="refusing"):
        make_tiny_model(gguf_path, tmp_path / "t")
