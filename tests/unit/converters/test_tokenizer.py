from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from converters.gguf_meta import GGUFMeta, open_gguf
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
