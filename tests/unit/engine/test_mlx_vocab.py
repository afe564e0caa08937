"""Token pieces for Hugging Face tokenizers match llama.cpp's (special=False) rendering."""

from __future__ import annotations

from typing import Any

import transformers

from mlxjan.engine.mlx.vocab import token_pieces


def _fast(tok: Any) -> Any:
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok)


def _byte_level() -> Any:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    # "Ã©" is GPT-2's byte-map spelling of é (0xC3 0xA9); "Ġ" stands for a space.
    vocab = {"h": 0, "i": 1, "Ġ": 2, "Ġh": 3, "Ã": 4, "©": 5, "Ã©": 6}
    tok = Tokenizer(models.BPE(vocab, [("Ġ", "h"), ("Ã", "©")]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken("<|end|>", special=True)])
    tok.add_tokens([AddedToken("<tool_call>", special=False)])
    return _fast(tok)


def _sentencepiece() -> Any:
    from tokenizers import AddedToken, Tokenizer, decoders, models

    vocab = {"<unk>": 0, "▁hi": 1, "▁": 2, "<0xE2>": 3, "<0x82>": 4, "<0xAC>": 5, "x": 6}
    tok = Tokenizer(models.BPE(vocab, [], unk_token="<unk>", byte_fallback=True))
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens([AddedToken("<start_of_turn>", special=True)])
    return _fast(tok)


def test_byte_level_pieces_are_raw_bytes() -> None:
    pieces = token_pieces(_byte_level())
    assert pieces[:7] == [b"h", b"i", b" ", b" h", b"\xc3", b"\xa9", "é".encode()]


def test_byte_level_added_tokens_verbatim_and_controls_empty() -> None:
    fast = _byte_level()
    pieces = token_pieces(fast)
    assert pieces[fast.convert_tokens_to_ids("<|end|>")] == b""
    assert pieces[fast.convert_tokens_to_ids("<tool_call>")] == b"<tool_call>"


def test_sentencepiece_spaces_and_byte_fallback() -> None:
    fast = _sentencepiece()
    pieces = token_pieces(fast)
    assert pieces[1] == b" hi"
    assert pieces[2] == b" "
    assert b"".join(pieces[3:6]).decode() == "€"
    assert pieces[fast.convert_tokens_to_ids("<start_of_turn>")] == b""
