from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from converters.gguf_meta import GGUFMeta, open_gguf
from converters.pretokenizers import PRE_TOKENIZERS
from converters.tokenizer import GGUFVocab, build_tokenizer, write_tokenizer
from mlxjan.errors import ConversionError
from tests.unit.converters.synthetic import TEMPLATE, bpe_vocab, write_gguf


@pytest.fixture
def meta(tmp_path: Path) -> GGUFMeta:
    write_gguf(tmp_path / "m.gguf")
    return GGUFMeta.from_reader(open_gguf(tmp_path / "m.gguf"))


def test_byte_level_bpe_applies_merges_and_specials(meta: GGUFMeta) -> None:
    tokens, _ = bpe_vocab()
    tok = build_tokenizer(GGUFVocab.from_meta(meta))
    ids = tok.encode("<|im_start|>the in\n<tool_call>é").ids
    pieces = [tokens[i] for i in ids]
    assert pieces == ["<|im_start|>", "t", "he", "Ġin", "Ċ", "<tool_call>", "Ã", "©"]
    assert tok.decode(ids, skip_special_tokens=False) == "<|im_start|>the in\n<tool_call>é"


def test_write_tokenizer_files(meta: GGUFMeta, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    write_tokenizer(meta, out)
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["chat_template"] == TEMPLATE
    assert (config["eos_token"], config["pad_token"]) == ("<|im_end|>", "<|endoftext|>")
    assert config["add_bos_token"] is False
    special = {v["content"]: v["special"] for v in config["added_tokens_decoder"].values()}
    assert special == {"<|endoftext|>": True, "<|im_start|>": True, "<|im_end|>": True,
                       "<tool_call>": False}
    assert Tokenizer.from_file(str(out / "tokenizer.json")).encode("the").ids


def test_unknown_pre_tokenizer_is_refused(meta: GGUFMeta) -> None:
    vocab = GGUFVocab.from_meta(meta)
    odd = GGUFVocab(**{**vocab.__dict__, "pre": "something-new"})
    with pytest.raises(ConversionError, match="something-new"):
        build_tokenizer(odd)


def _pieces(vocab: GGUFVocab, pre: str, text: str) -> list[str]:
    tok = build_tokenizer(dataclasses.replace(vocab, pre=pre))
    return [piece for piece, _ in tok.pre_tokenizer.pre_tokenize_str(text)]


def test_smollm_isolates_every_digit_then_splits_like_gpt2(meta: GGUFMeta) -> None:
    vocab = GGUFVocab.from_meta(meta)
    # llama.cpp's LLAMA_VOCAB_PRE_TYPE_SMOLLM: `\p{N}` first, then GPT-2's regex.
    assert _pieces(vocab, "smollm", "ab 123 it's") == ["ab", "Ġ", "1", "2", "3", "Ġit", "'s"]
    assert _pieces(vocab, "gpt-2", "ab 123 it's") == ["ab", "Ġ123", "Ġit", "'s"]
    assert _pieces(vocab, "llama3", "ab 12345") == ["ab", "Ġ", "123", "45"]


def test_default_pre_tokenizer_is_llama_cpps_not_gpt2(meta: GGUFMeta) -> None:
    vocab = GGUFVocab.from_meta(meta)
    # llama.cpp's default isolates punctuation runs first, and three-digit groups last.
    assert _pieces(vocab, "default", "a.b 1234") == ["a", ".", "b", "Ġ", "123", "4"]
    assert _pieces(vocab, "gpt-2", "a.b 1234") == ["a", ".", "b", "Ġ1234"]
    assert _pieces(vocab, "default", "x == y") == ["x", "Ġ", "==", "Ġy"]
    assert _pieces(vocab, "gpt-2", "x == y") == ["x", "Ġ==", "Ġy"]


def test_contractions_are_case_split_as_llama_cpp_does(meta: GGUFMeta) -> None:
    vocab = GGUFVocab.from_meta(meta)
    assert _pieces(vocab, "qwen2", "IT'S") == ["IT", "'S"]
    # `'[sS]`, not `(?i:'s)`: the long s (U+017F) case-folds to s but is no contraction.
    assert len(_pieces(vocab, "llama3", "it'\u017fx")) == 2  # HF's own regex gives 3
    assert _pieces(vocab, "llama3", "it's") == ["it", "'s"]


def test_tekken_treats_non_ascii_letters_as_both_cases(meta: GGUFMeta) -> None:
    vocab = GGUFVocab.from_meta(meta)
    # llama.cpp's stand-in for the case classes; Mistral's own regex would split "a|Éb".
    assert _pieces(vocab, "tekken", "aÉb étéÉ") == ["aÃīb", "ĠÃ©tÃ©Ãī"]
    assert _pieces(vocab, "tekken", "XMLHttp") == ["XMLHttp"]


def test_llama3_family_adds_bos_unless_the_gguf_says_otherwise(meta: GGUFMeta) -> None:
    values = {k: v for k, v in meta.values.items() if k != "tokenizer.ggml.add_bos_token"}
    values["tokenizer.ggml.pre"] = "llama-bpe"
    vocab = GGUFVocab.from_meta(GGUFMeta(values))
    assert vocab.add_bos  # llama.cpp's default for Llama 3 vocabularies
    tok = build_tokenizer(vocab)
    assert tok.model.ignore_merges
    assert tok.encode("the").ids[0] == vocab.bos_id
    values["tokenizer.ggml.pre"] = "qwen2"
    assert not GGUFVocab.from_meta(GGUFMeta(values)).add_bos


def test_every_listed_pre_tokenizer_builds(meta: GGUFMeta) -> None:
    vocab = GGUFVocab.from_meta(meta)
    for name in PRE_TOKENIZERS:
        tok = build_tokenizer(dataclasses.replace(vocab, pre=name))
        assert tok.decode(tok.encode("the in 12 中文\n").ids) == "the in 12 中文\n", name


def test_unknown_pre_tokenizer_names_the_way_out(meta: GGUFMeta) -> None:
    vocab = dataclasses.replace(GGUFVocab.from_meta(meta), pre="mystery-bpe")
    with pytest.raises(ConversionError, match=r"'mystery-bpe'.*--engine llamacpp.*smollm"):
        build_tokenizer(vocab)
