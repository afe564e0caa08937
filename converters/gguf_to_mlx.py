"""GGUF -> MLX model folder: dequantise, rename, undo llama.cpp's edits, optionally quantise.

The folder holds config.json, model.safetensors (sharded with an index when large),
tokenizer.json and tokenizer_config.json, and loads with `mlx_lm.load(folder)`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from converters.config import Config, build_config, check_architecture
from converters.gguf_meta import GGUFMeta, open_gguf
from converters.names import hf_name, restore_tensor
from converters.tokenizer import write_tokenizer
from mlxjan.errors import ConversionError

log = logging.getLogger(__name__)

DTYPES = ("float16", "bfloat16", "float32")
Q_BITS = (4, 8)


@dataclass(frozen=True)
class ConvertOptions:
    """Output precision: a float dtype, and quantisation when q_bits is set."""

    dtype: str | None = None  # None: bfloat16 for Gemma (float16 overflows it), else float16
    q_bits: int | None = None
    q_group_size: int = 64
    progress: bool = True

    def check(self) -> None:
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ConversionError(f"dtype must be one of {', '.join(DTYPES)}, not {self.dtype}")
        if self.q_bits is not None and self.q_bits not in Q_BITS:
            raise ConversionError(f"q_bits must be 4 or 8, not {self.q_bits}")
        if self.q_group_size not in (32, 64, 128):
            raise ConversionError("q_group_size must be 32, 64 or 128")

    def dtype_for(self, model_type: str) -> str:
        if self.dtype is not None:
            return self.dtype
        return "bfloat16" if model_type.startswith("gemma") else "float16"


def prepare_output(out_dir: Path) -> None:
    """Create `out_dir`; refuse one that already holds files."""
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConversionError(f"{out_dir} is not empty; refusing to overwrite it")
    out_dir.mkdir(parents=True, exist_ok=True)


def dequantize_tensor(tensor: Any) -> np.ndarray:
    """A GGUF tensor as float32 in numpy (row-major, Hugging Face) shape."""
    from gguf.quants import dequantize

    shape = tuple(int(n) for n in reversed(tensor.shape.tolist()))
    try:
        data = dequantize(tensor.data, tensor.tensor_type)
    except NotImplementedError as exc:
        raise ConversionError(f"cannot dequantise {tensor.name}: GGUF type "
                              f"{tensor.tensor_type.name} is not supported") from exc
    values: np.ndarray = np.asarray(data, dtype=np.float32).reshape(shape)
    return values


def iter_weights(reader: Any, meta: GGUFMeta, progress: bool) -> Iterator[tuple[str, np.ndarray]]:
    """(Hugging Face name, float32 tensor) for every tensor the model uses."""
    from tqdm import tqdm

    n_head = int(meta.require("attention.head_count"))
    n_head_kv = int(meta.arch_get("attention.head_count_kv", n_head))
    for tensor in tqdm(reader.tensors, desc="tensors", unit="tensor", disable=not progress):
        name = hf_name(meta.arch, tensor.name)
        if name is None:
            continue
        yield name, restore_tensor(meta.arch, name, dequantize_tensor(tensor), n_head,
                                   n_head_kv)


def convert_gguf(gguf_path: Path, out_dir: Path,
                 options: ConvertOptions | None = None) -> Config:
    """Convert a GGUF file into an MLX model folder at `out_dir`; return its config."""
    import mlx.core as mx

    options = options or ConvertOptions()
    options.check()
    reader = open_gguf(gguf_path)
    meta = GGUFMeta.from_reader(reader)
    check_architecture(meta.arch)
    prepare_output(out_dir)
    write_tokenizer(meta, out_dir)
    model_type = build_config(meta, 1, True)["model_type"]
    dtype = options.dtype_for(model_type)
    weights = {name: mx.array(data).astype(getattr(mx, dtype))
               for name, data in iter_weights(reader, meta, options.progress)}
    config = build_config(meta, int(weights["model.embed_tokens.weight"].shape[0]),
                          tied="lm_head.weight" not in weights)
    config["torch_dtype"] = dtype
    return save_mlx_model(weights, config, out_dir, options)


def save_mlx_model(weights: dict[str, Any], config: Config, out_dir: Path,
                   options: ConvertOptions) -> Config:
    """Load the weights into the mlx-lm model, quantise if asked, and save like mlx_lm.convert."""
    from mlx_lm.utils import _get_classes, quantize_model, save_config, save_model

    model_class, args_class = _get_classes(config)
    model = model_class(args_class.from_dict(config))
    if hasattr(model, "sanitize"):
        weights = model.sanitize(weights)
    model.load_weights(list(weights.items()), strict=True)
    if options.q_bits is not None:
        model, config = quantize_model(model, config, options.q_group_size, options.q_bits)
    save_model(out_dir, model, donate_model=True)
    save_config(config, out_dir / "config.json")
    log.info("wrote %s model to %s", config["model_type"], out_dir)
    return config
