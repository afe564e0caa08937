"""Token pieces as bytes for a Hugging Face tokenizer, the way llama.cpp renders them.

The shared decode loop (generation.py) takes one byte string per token and assembles UTF-8
itself, so both engines stream the same text. llama.cpp's `token_to_piece` (special=False)
gives control tokens as nothing and every other token as its raw bytes; this table gives
the same for byte-level BPE vocabularies (GPT-2 style byte map) and SentencePiece ones
("▁" for a space, `<0xNN>` byte-fallback tokens).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_SPM_SPACE = "\u2581"


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's printable stand-in character for every byte, reversed."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def _is_byte_level(hf_tokenizer: Any) -> bool:
    backend = getattr(hf_tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    return "ByteLevel" in repr(decoder)


def _byte_level_piece(token: str) -> bytes:
    table = _byte_decoder()
    if all(c in table for c in token):
        return bytes(table[c] for c in token)
    return token.encode("utf-8")


def _spm_piece(token: str) -> bytes:
    match = _BYTE_TOKEN.fullmatch(token)
    if match:
        return bytes([int(match.group(1), 16)])
    return token.replace(_SPM_SPACE, " ").encode("utf-8")


def token_pieces(hf_tokenizer: Any, special: bool = False) -> list[bytes]:
    """One byte string per token id; control (special) tokens render as b"", or as their
    text with `special` (a format whose markers are control tokens: harmony)."""
    size = len(hf_tokenizer)
    tokens: list[str | None] = hf_tokenizer.convert_ids_to_tokens(list(range(size)))
    piece = _byte_level_piece if _is_byte_level(hf_tokenizer) else _spm_piece
    pieces = [piece(t) if t is not None else b"" for t in tokens]
    added: dict[int, Any] = getattr(hf_tokenizer, "added_tokens_decoder", {})
    for token_id, added_token in added.items():
        if 0 <= token_id < size:
            # Added tokens are stored verbatim, not byte-mapped; special ones are controls.
            hidden = added_token.special and not special
            pieces[token_id] = b"" if hidden else added_token.content.encode()
    return pieces


@dataclass(frozen=True)
class Vocab:
    """What the decode loop needs of a tokenizer: each token's bytes, and the end tokens."""

    pieces: list[bytes]
    eos: frozenset[int]

    def piece(self, token: int) -> bytes:
        return self.pieces[token] if 0 <= token < len(self.pieces) else b""


@dataclass(frozen=True)
class HfVocabulary:
    """A Hugging Face tokenizer, as raw and fill-in-the-middle prompts use it
    (engine/raw_prompt.Vocabulary)."""

    hf: Any

    @property
    def size(self) -> int:
        return len(self.hf)

    @property
    def bos(self) -> int | None:
        # The tokenizer's own rule: what it puts before an empty text is its BOS, if any.
        start: list[int] = self.hf.encode("", add_special_tokens=True)
        bos = self.hf.bos_token_id
        return bos if bos is not None and start[:1] == [bos] else None

    def encode(self, text: str, *, special: bool) -> list[int]:
        tokens: list[int] = self.hf.encode(text, add_special_tokens=False,
                                           split_special_tokens=not special)
        return tokens

    def marker(self, text: str) -> int | None:
        token: int | None = self.hf.get_added_vocab().get(text)
        return token
