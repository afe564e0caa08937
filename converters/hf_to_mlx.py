"""Hugging Face safetensors folder -> (quantised) MLX folder, through mlx-lm's own converter."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path
from typing import Any

from converters.gguf_to_mlx import ConvertOptions, prepare_output
from mlxjan.errors import ConversionError

log = logging.getLogger(__name__)


def is_hf_folder(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def convert_hf(hf_dir: Path, out_dir: Path, options: ConvertOptions | None = None
               ) -> dict[str, Any]:
    """Convert a local Hugging Face model folder with mlx_lm.convert; return the new config.

    Quantises to `options.q_bits` (default dtype: the checkpoint's own) when set.
    """
    from mlx_lm.convert import convert

    options = options or ConvertOptions()
    options.check()
    if not is_hf_folder(hf_dir):
        raise ConversionError(f"{hf_dir} is not a Hugging Face model folder "
                              "(config.json and *.safetensors)")
    prepare_output(out_dir)
    out_dir.rmdir()  # mlx_lm.convert insists on creating the folder itself
    chatter = io.StringIO()
    try:
        # mlx_lm.convert reports through print(); keep it for the debug log instead.
        with contextlib.redirect_stdout(chatter):
            convert(str(hf_dir), str(out_dir), quantize=options.q_bits is not None,
                    q_group_size=options.q_group_size, q_bits=options.q_bits,
                    dtype=options.dtype)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        raise ConversionError(f"mlx-lm could not convert {hf_dir}: {exc}") from exc
    finally:
        out_dir.mkdir(parents=True, exist_ok=True)
        log.debug("mlx_lm.convert: %s", chatter.getvalue().strip())
    config: dict[str, Any] = json.loads((out_dir / "config.json").read_text())
    return config
