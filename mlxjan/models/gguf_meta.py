"""Read the few GGUF metadata fields the store and the engines need, without loading weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlxjan.errors import ModelStoreError

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class ModelInfo:
    """What a model's files say about it, whatever their format (GGUF or MLX folder)."""

    architecture: str | None
    context_length: int | None
    chat_template: str | None


def is_gguf(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == GGUF_MAGIC


def read_gguf_info(path: Path) -> ModelInfo:
    from gguf import GGUFReader  # imported lazily: it pulls in numpy

    try:
        reader = GGUFReader(path, "r")
    except (ValueError, OSError) as exc:
        raise ModelStoreError(f"{path} is not a readable GGUF file: {exc}") from exc

    def field(key: str) -> object:
        found = reader.fields.get(key)
        return None if found is None else found.contents()

    arch = field("general.architecture")
    arch_name = arch if isinstance(arch, str) else None
    ctx = field(f"{arch_name}.context_length") if arch_name else None
    template = field("tokenizer.chat_template")
    return ModelInfo(
        architecture=arch_name,
        context_length=int(ctx) if isinstance(ctx, int) else None,
        chat_template=template if isinstance(template, str) else None,
    )
