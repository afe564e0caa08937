"""Reading GGUF metadata: typed accessors over `gguf.GGUFReader` fields."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlxjan.errors import ConversionError


def open_gguf(path: Path) -> Any:
    """A `gguf.GGUFReader` over the file (memory-mapped: cheap until tensors are read)."""
    import gguf

    try:
        return gguf.GGUFReader(str(path))
    except (OSError, ValueError) as exc:
        raise ConversionError(f"cannot read GGUF file {path}: {exc}") from exc


class GGUFMeta:
    """The key/value metadata of one GGUF file, with the architecture prefix resolved."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values
        self.arch: str = str(values.get("general.architecture", ""))

    @classmethod
    def from_reader(cls, reader: Any) -> GGUFMeta:
        return cls({key: field.contents() for key, field in reader.fields.items()})

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def arch_get(self, key: str, default: Any = None) -> Any:
        """`<arch>.<key>`, e.g. arch_get("block_count")."""
        return self.values.get(f"{self.arch}.{key}", default)

    def require(self, key: str) -> Any:
        value = self.arch_get(key)
        if value is None:
            raise ConversionError(f"GGUF metadata lacks '{self.arch}.{key}'")
        return value

    def tokenizer_list(self, key: str) -> list[Any]:
        value = self.values.get(f"tokenizer.ggml.{key}")
        return list(value) if value is not None else []
