"""Every BPE pre-tokenizer the converter knows, against llama.cpp on a real vocabulary.

A GGUF's vocabulary and merges stay the same whatever its `tokenizer.ggml.pre` says; only the
split of the text before BPE changes. So the real SmolLM2 and Qwen2.5 vocabularies are
written out again (metadata only, no tensors) once per pre-tokenizer name, and llama.cpp's
tokens for each are compared with the converted tokenizer's. Neither vocabulary merges
digits, so digit grouping (`\\p{N}{1,3}`) is checked by the unit tests only.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from pathlib import Path
from typing import Any

import gguf
import pytest

from converters.gguf_meta import GGUFMeta
from converters.pretokenizers import PRE_TOKENIZERS
from converters.tokenizer import GGUFVocab, build_tokenizer
from mlxjan.engine.llamacpp.decode import load_model
from mlxjan.engine.llamacpp.kernels import PLAIN
from tests.e2e.conftest import pull
from tests.e2e.test_convert_real import TEXTS

pytestmark = pytest.mark.e2e

MORE_TEXTS = [
    "I'm fine, it's OK; shouldn't we? it'\u017fx", "camelCaseWord HTTPServer iPhone aÉb Éé",
    "Привет мир, Ωμέγα; 한국어 中文",
    "\uff26\uff55\uff4c\uff4c\uff01\uff1f \u201cquotes\u201d \u2018single\u2019 \u3002",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}\n", "x == y && z != 1,000,000 $$$",
    "naïve café e\u0301 \u00a0nbsp\u3000ideo", "\U00010400\U00010401 Deseret \U0001e900",
    "   \n   \n", "x\n\n\n\ny\r\n\r\nz",
]


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    fields: list[tuple[str, Any, list[gguf.GGUFValueType]]]
    vocab: GGUFVocab


def _read(path: Path) -> Vocabulary:
    reader = gguf.GGUFReader(path)
    fields = [(name, field.contents(), field.types) for name, field in reader.fields.items()
              if not name.startswith("GGUF.")]
    return Vocabulary(fields, GGUFVocab.from_meta(GGUFMeta({n: v for n, v, _ in fields})))


@pytest.fixture(scope="module", params=["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"])
def vocabulary(request: pytest.FixtureRequest) -> Vocabulary:
    return _read(pull(request.param))


def _with_pre(vocabulary: Vocabulary, pre: str, dest: Path) -> Path:
    """The GGUF's metadata alone, its `tokenizer.ggml.pre` replaced: enough for llama.cpp's
    vocab-only load."""
    arch = next(v for n, v, _ in vocabulary.fields if n == "general.architecture")
    writer = gguf.GGUFWriter(str(dest), arch)
    for name, value, types in vocabulary.fields:
        if name != "general.architecture":
            writer.add_key_value(name, pre if name == "tokenizer.ggml.pre" else value,
                                 types[0], types[1] if len(types) > 1 else None)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dest


def _llama_cpp_tokens(path: Path, texts: list[str]) -> list[list[int]]:
    model = load_model(path, PLAIN, vocab_only=True)
    try:
        return [model.tokenize(text.encode(), False, True) for text in texts]  # specials whole
    finally:
        model.close()


@pytest.mark.usefixtures("pinned_llama_cpp")  # exact llama.cpp tokens
@pytest.mark.parametrize("pre", sorted(PRE_TOKENIZERS))
def test_pre_tokenizer_matches_llama_cpp(vocabulary: Vocabulary, pre: str,
                                         tmp_path: Path) -> None:
    ours = build_tokenizer(dataclasses.replace(vocabulary.vocab, pre=pre))
    texts = [*TEXTS, *MORE_TEXTS]
    # Qwen's pipeline normalises to NFC first, as its own tokenizer.json does; llama.cpp
    # does not, so it is given the normalised text.
    nfc = PRE_TOKENIZERS[pre].nfc
    theirs = _llama_cpp_tokens(_with_pre(vocabulary, pre, tmp_path / "vocab.gguf"),
                               [unicodedata.normalize("NFC", t) if nfc else t for t in texts])
    for text, expected in zip(texts, theirs, strict=True):
        assert ours.encode(text, add_special_tokens=False).ids == expected, (pre, text)

