"""Where the MLX engine finds a model: its own folder, or a GGUF converted once and cached.

A GGUF asked for on the MLX engine is converted (dequantised, renamed, tokenizer rebuilt)
into `<data dir>/converted/<sha256 prefix>/mlx-float/` the first time, then reused. The folder is
built in staging and renamed into place, so a conversion cut short is never picked up.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from mlxjan.models.store import Manifest, ModelStore

log = logging.getLogger(__name__)
# Float keeps what the GGUF's own quantisation left, where quantising again would lose
# more; the converter picks the float type per architecture (bfloat16 for Gemma).
CONVERTED = "float"


def converted_dir(store: ModelStore, manifest: Manifest) -> Path:
    return store.conversions_dir(manifest.sha256) / f"mlx-{CONVERTED}"


def mlx_model_dir(store: ModelStore, manifest: Manifest) -> Path:
    """The MLX folder for an installed model, converting a GGUF the first time."""
    if manifest.format == "mlx":
        return store.weights_path(manifest)
    target = converted_dir(store, manifest)
    if (target / "config.json").is_file():
        return target
    from converters.gguf_to_mlx import ConvertOptions, convert_gguf

    log.info("converting %s to MLX (once; cached in %s)", manifest.id, target)
    with store.staging(manifest.id) as staged:
        out = staged / "mlx"
        convert_gguf(store.weights_path(manifest), out, ConvertOptions(progress=False))
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():  # a half-finished folder from an older version: replace it
            shutil.rmtree(target)
        os.replace(out, target)
    return target
