"""Tiny MLX models for tests: a real GGUF's tokenizer with a few random-weight layers.

MLX on Linux CPU is too slow for a real model in every test, so engine tests load one of
these: the tokenizer, chat template and vocabulary are the real model's, the weights are
random (deterministic from the seed: the same seed gives byte-identical safetensors).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from converters.config import Config, build_config, check_architecture
from converters.gguf_meta import GGUFMeta, open_gguf
from converters.tokenizer import write_tokenizer
from mlxjan.errors import ConversionError

log = logging.getLogger(__name__)

TINY_DTYPES = ("float32", "float16")


def make_tiny_model(gguf_path: Path, out_dir: Path, *, seed: int = 0, layers: int = 2,
                    hidden: int = 64, heads: int = 4, kv_heads: int = 2,
                    intermediate: int = 128, dtype: str = "float32") -> Path:
    """Write a loadable MLX model folder to `out_dir` (created) and return it.

    `mlx_lm.load(out_dir)` gives a `layers`-layer model of the GGUF's architecture with the
    GGUF's real tokenizer and chat template; the embedding is tied to the output layer.
    """
    if dtype not in TINY_DTYPES:
        raise ConversionError(f"tiny models are {' or '.join(TINY_DTYPES)}, not {dtype}")
    meta = GGUFMeta.from_reader(open_gguf(gguf_path))
    check_architecture(meta.arch)
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / "config.json").exists():
        raise ConversionError(f"{out_dir} already holds a model; refusing to overwrite it")
    vocab = write_tokenizer(meta, out_dir)
    config = tiny_config(build_config(meta, len(vocab.tokens), tied=True), layers=layers,
                         hidden=hidden, heads=heads, kv_heads=kv_heads,
                         intermediate=intermediate)
    config["torch_dtype"] = dtype
    weights = random_weights(config, seed, np.dtype(dtype))
    _save_safetensors(weights, out_dir / "model.safetensors")
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    log.info("tiny %s model (%d layers, hidden %d) written to %s", meta.arch, layers, hidden,
             out_dir)
    return out_dir


def tiny_config(config: Config, *, layers: int, hidden: int, heads: int, kv_heads: int,
                intermediate: int) -> Config:
    """The real model's config shrunk to the given sizes (vocabulary and rope kept)."""
    if hidden % heads or heads % kv_heads:
        raise ConversionError("hidden must divide by heads, and heads by kv_heads")
    tiny = {**config, "num_hidden_layers": layers, "hidden_size": hidden,
            "num_attention_heads": heads, "num_key_value_heads": kv_heads,
            "intermediate_size": intermediate, "tie_word_embeddings": True}
    if "head_dim" in tiny:
        tiny["head_dim"] = hidden // heads
    if "sliding_window_pattern" in tiny:
        # mlx-lm's Gemma 3 wants a global layer among the first `pattern` layers.
        tiny["sliding_window_pattern"] = min(int(tiny["sliding_window_pattern"]), layers)
    if "query_pre_attn_scalar" in tiny:
        tiny["query_pre_attn_scalar"] = hidden // heads
    return tiny


def parameter_shapes(config: Config) -> dict[str, tuple[int, ...]]:
    """Every parameter name and shape of the mlx-lm model this config describes."""
    from mlx.utils import tree_flatten
    from mlx_lm.utils import _get_classes

    model_class, args_class = _get_classes(config)
    model = model_class(args_class.from_dict(config))  # lazy: no weights are computed
    flat: Any = tree_flatten(model.parameters())
    return {name: tuple(value.shape) for name, value in flat}


def random_weights(config: Config, seed: int, dtype: np.dtype[Any]) -> dict[str, np.ndarray]:
    """Small normal weights in name order; norms at their identity value."""
    rng = np.random.default_rng(seed)
    # mlx-lm's Gemma norms multiply by (1 + weight): identity is 0 there, 1 elsewhere.
    norm_identity = 0.0 if config["model_type"].startswith("gemma") else 1.0
    weights: dict[str, np.ndarray] = {}
    for name, shape in sorted(parameter_shapes(config).items()):
        values = rng.standard_normal(shape, dtype=np.float32) * 0.02
        if "norm" in name.rsplit(".", 2)[-2]:
            values = values + norm_identity
        weights[name] = values.astype(dtype)
    return weights


def _save_safetensors(weights: dict[str, np.ndarray], path: Path) -> None:
    from safetensors.numpy import save_file

    save_file(weights, str(path), metadata={"format": "mlx"})


def installed_gguf(model_id: str | None = None, data_dir: Path | None = None) -> Path:
    """The GGUF file of an installed model (default: the default model), for test fixtures.

    Raises ConversionError when it is not installed (install it with `mlxjan pull`).
    """
    from mlxjan.models.store import ModelStore
    from mlxjan.settings import DEFAULT_MODEL, Settings

    model_id = model_id or DEFAULT_MODEL
    store = ModelStore(data_dir or Settings().data_dir)
    manifest = store.get(model_id)
    if manifest is None or manifest.format != "gguf":
        raise ConversionError(f"no installed GGUF model '{model_id}': run `mlxjan pull "
                              f"{model_id}`")
    return store.weights_path(manifest)
