"""Convert an installed model, a .gguf file or a Hugging Face folder into a new store model."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from converters.gguf_to_mlx import ConvertOptions, convert_gguf
from converters.hf_to_mlx import convert_hf, is_hf_folder
from mlxjan.errors import ConversionError
from mlxjan.models.store import (
    Manifest,
    ModelStore,
    folder_sha256,
    new_manifest,
    staged_size,
    validate_model_id,
)

log = logging.getLogger(__name__)

_DTYPE_SUFFIX = {"float16": "f16", "bfloat16": "bf16", "float32": "f32"}


def resolve_source(store: ModelStore, source: str) -> tuple[Path, str]:
    """(path, base name) of an installed GGUF model id, a .gguf file or an HF folder."""
    manifest = store.get(source)
    if manifest is not None:
        if manifest.format != "gguf":
            raise ConversionError(f"'{source}' is already an MLX model")
        return store.weights_path(manifest), manifest.id
    path = Path(source).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path, path.stem
    if path.is_dir() and is_hf_folder(path):
        return path, path.name
    raise ConversionError(f"'{source}' is neither an installed GGUF model, a .gguf file nor "
                          "a Hugging Face safetensors folder")


def default_model_id(base: str, options: ConvertOptions) -> str:
    """e.g. qwen2.5-coder-0.5b-instruct-mlx-q4 or gemma-3-270m-mlx-bf16."""
    if options.q_bits is not None:
        suffix = f"q{options.q_bits}"
    else:
        suffix = _DTYPE_SUFFIX.get(options.dtype or "", "float")
    return validate_model_id(f"{base}-mlx-{suffix}")


def convert_to_store(store: ModelStore, source: str, *, model_id: str | None = None,
                     options: ConvertOptions | None = None) -> Manifest:
    """Convert `source` to MLX and install it as a new model id (never overwriting one)."""
    options = options or ConvertOptions()
    options.check()
    path, base = resolve_source(store, source)
    new_id = validate_model_id(model_id) if model_id else default_model_id(base, options)
    if store.get(new_id) is not None or store.model_dir(new_id).exists():
        raise ConversionError(f"model '{new_id}' already exists; remove it with `mlxjan rm "
                              f"{new_id}` or choose another id with --id")
    with store.staging(new_id) as staged:
        if path.is_dir():
            config = convert_hf(path, staged, options)
        else:
            config = convert_gguf(path, staged, options)
        manifest = new_manifest(
            id=new_id, format="mlx", source=str(path), file=".",
            sha256=folder_sha256(staged), size=staged_size(staged),
            architecture=str(config.get("model_type")),
            context_length=config.get("max_position_embeddings"),
            chat_template=_chat_template(staged))
        return store.install(staged, manifest)


def _chat_template(folder: Path) -> str | None:
    try:
        config: dict[str, Any] = json.loads((folder / "tokenizer_config.json").read_text())
    except FileNotFoundError:
        return None
    template = config.get("chat_template")
    if template is None and (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text()
    return template if isinstance(template, str) else None
