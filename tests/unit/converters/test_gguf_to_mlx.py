from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf.quants import dequantize, quantize

from converters.gguf_to_mlx import ConvertOptions, convert_gguf
from converters.names import hf_name
from mlxjan.errors import ConversionError, UnsupportedArchitectureError
from tests.unit.converters.synthetic import Spec, write_gguf


@pytest.mark.parametrize("kind", [Q.F16, Q.BF16, Q.Q8_0, Q.Q5_0, Q.Q4_0])
def test_dequantize_round_trip(kind: Q) -> None:
    x = np.random.default_rng(0).standard_normal((8, 256)).astype(np.float32)
    y = dequantize(quantize(x, kind), kind)
    assert y.shape == x.shape
    assert np.abs(y - x).max() < 0.3 * np.abs(x).max()


def load_safetensors(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    found: dict[str, np.ndarray] = {}
    for f in sorted(folder.glob("*.safetensors")):
        found |= load_file(str(f))
    return found


def test_float_conversion_keeps_every_weight(tmp_path: Path) -> None:
    originals = write_gguf(tmp_path / "m.gguf")
    config = convert_gguf(tmp_path / "m.gguf", tmp_path / "out",
                          ConvertOptions(dtype="float32", progress=False))
    assert config["model_type"] == "qwen2" and config["tie_word_embeddings"] is False
    assert config["rms_norm_eps"] == 1e-06
    weights = load_safetensors(tmp_path / "out")
    assert set(weights) == {hf_name("qwen2", n) for n in originals}
    for name, data in originals.items():
        got = weights[str(hf_name("qwen2", name))]
        assert got.shape == data.shape
        assert np.abs(got - data).max() < 0.02, name  # within Q4_0 error of std-0.05 data
    assert {"tokenizer.json", "tokenizer_config.json", "config.json",
            "model.safetensors.index.json"} <= {p.name for p in (tmp_path / "out").iterdir()}


def test_quantised_conversion_loads_and_runs(tmp_path: Path) -> None:
    import mlx_lm

    write_gguf(tmp_path / "m.gguf", Spec(tied=True))
    out = tmp_path / "out"
    convert_gguf(tmp_path / "m.gguf", out, ConvertOptions(q_bits=8, q_group_size=32,
                                                         progress=False))
    config = json.loads((out / "config.json").read_text())
    assert config["quantization"] == {"group_size": 32, "bits": 8, "mode": "affine"}
    assert config["tie_word_embeddings"] is True
    model, tokenizer = mlx_lm.load(str(out))
    assert isinstance(mlx_lm.generate(model, tokenizer, [1, 2, 3], max_tokens=2), str)


def test_refuses_non_empty_output(tmp_path: Path) -> None:
    write_gguf(tmp_path / "m.gguf")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("keep me")
    with pytest.raises(ConversionError, match="not empty"):
        convert_gguf(tmp_path / "m.gguf", tmp_path / "out")
    assert (tmp_path / "out" / "x").read_text() == "keep me"


def test_unsupported_architecture(tmp_path: Path) -> None:
    write_gguf(tmp_path / "m.gguf", Spec(arch="phi3"))
    with pytest.raises(UnsupportedArchitectureError, match="phi3"):
        convert_gguf(tmp_path / "m.gguf", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bad_options() -> None:
    with pytest.raises(ConversionError):
        ConvertOptions(q_bits=3).check()
    with pytest.raises(ConversionError):
        ConvertOptions(dtype="int8").check()


def test_gemma3_norms_shifted_and_config(tmp_path: Path) -> None:
    originals = write_gguf(tmp_path / "m.gguf", Spec(arch="gemma3", tied=True))
    config = convert_gguf(tmp_path / "m.gguf", tmp_path / "out",
                          ConvertOptions(dtype="float32", progress=False))
    assert config["model_type"] == "gemma3_text"
    assert (config["head_dim"], config["query_pre_attn_scalar"]) == (64, 64)
    assert (config["sliding_window"], config["sliding_window_pattern"]) == (512, 6)
    weights = load_safetensors(tmp_path / "out")
    norm = originals["blk.1.post_ffw_norm.weight"]
    got = weights["model.layers.1.post_feedforward_layernorm.weight"]
    assert np.allclose(got, norm - 1.0)
    assert "lm_head.weight" not in weights
