"""Read the few GGUF metadata fields the store and the engines need, without loading weights
(from the header alone: gguf's GGUFReader decodes every field, the vocabulary too)."""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlxjan.errors import ModelStoreError
from mlxjan.types import ModelKind

GGUF_MAGIC = b"GGUF"
# llama.cpp's pooling types beyond NONE (0): MEAN, CLS, LAST, RANK. A model that pools its
# token states into one vector per text is an embedding model (RANK: a reranker, which
# embeddings refuse at load).
POOLED = (1, 2, 3, 4)
# Embedding models trained so that a prefix of each vector serves alone (Matryoshka), by
# the name their GGUF files carry (general.name), lowercased.
MATRYOSHKA_NAMES = ("nomic-embed-text-v1.5", "nomic-embed-text-v2", "mxbai-embed-large",
                    "embeddinggemma", "qwen3-embedding", "snowflake-arctic-embed-m-v1.5",
                    "snowflake-arctic-embed-l-v2")


@dataclass(frozen=True)
class ModelInfo:
    """What a model's files say about it, whatever their format (GGUF or MLX folder)."""

    architecture: str | None
    context_length: int | None
    chat_template: str | None
    kind: ModelKind = "chat"
    matryoshka: bool = False  # an embedding model whose vectors may be cut short


def is_gguf(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == GGUF_MAGIC


def read_gguf_info(path: Path) -> ModelInfo:
    try:
        arch = read_gguf_fields(path, ("general.architecture",)).get("general.architecture")
        arch_name = arch if isinstance(arch, str) else None
        context_key = f"{arch_name}.context_length"
        pooling_key = f"{arch_name}.pooling_type"
        fields = read_gguf_fields(path, ("tokenizer.chat_template", context_key, pooling_key,
                                         "general.name"))
    except (ValueError, OSError) as exc:
        raise ModelStoreError(f"{path} is not a readable GGUF file: {exc}") from exc
    ctx = fields.get(context_key) if arch_name else None
    embedding = fields.get(pooling_key) in POOLED
    name = str(fields.get("general.name", "")).lower()
    template = fields.get("tokenizer.chat_template")
    return ModelInfo(
        architecture=arch_name,
        context_length=int(ctx) if isinstance(ctx, int) else None,
        chat_template=template if isinstance(template, str) else None,
        kind="embedding" if embedding else "chat",
        matryoshka=embedding and any(known in name for known in MATRYOSHKA_NAMES),
    )


# GGUF value types: struct formats of the fixed-size ones; 8 is a string, 9 an array.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
GgufValue = int | float | bool | str | list[Any]


def read_gguf_fields(path: Path, wanted: tuple[str, ...]) -> dict[str, GgufValue]:
    """The metadata values named `wanted`, read from the header alone, skipping the rest
    (gguf's GGUFReader decodes every field, the whole vocabulary too: seconds per model)."""
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data[:4] != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        found: dict[str, GgufValue] = {}
        try:
            count = struct.unpack_from("<Q", data, 16)[0]
            offset = 24
            for _ in range(count):
                key, offset = _string(data, offset)
                kind = struct.unpack_from("<I", data, offset)[0]
                value, offset = _value(data, offset + 4, kind, key in wanted)
                if key in wanted:
                    found[key] = value
                    if len(found) == len(wanted):
                        break
        except struct.error as exc:  # the header runs past the end of the file
            raise ValueError(f"{path} is truncated: {exc}") from exc
        return found


def _string(data: mmap.mmap, offset: int) -> tuple[str, int]:
    size = struct.unpack_from("<Q", data, offset)[0]
    start = offset + 8
    return data[start:start + size].decode("utf-8", "replace"), start + size


def _value(data: mmap.mmap, offset: int, kind: int, keep: bool) -> tuple[GgufValue, int]:
    if kind in _SCALARS:
        fmt = _SCALARS[kind]
        return struct.unpack_from(fmt, data, offset)[0], offset + struct.calcsize(fmt)
    if kind == _STRING:
        return _string(data, offset)
    if kind != _ARRAY:
        raise ValueError(f"unknown GGUF value type {kind}")
    item, n = struct.unpack_from("<IQ", data, offset)
    offset += 12
    if item in _SCALARS and not keep:  # skipped whole: nothing in it is read
        return [], offset + n * struct.calcsize(_SCALARS[item])
    items: list[Any] = []
    for _ in range(n):
        value, offset = _value(data, offset, item, keep)
        if keep:
            items.append(value)
    return items, offset
