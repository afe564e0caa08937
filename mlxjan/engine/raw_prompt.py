"""Tokens of a completion's prompt (types.Prompt): raw text or token ids, or a
fill-in-the-middle prompt in the model's own FIM tokens. Shared by both engines, each
giving its tokenizer as a Vocabulary."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from mlxjan.chat.fim import FimFormat, Piece, context_pieces, detect_fim, hole_pieces
from mlxjan.engine.tokens import outside_vocabulary
from mlxjan.errors import (
    ContextLengthExceededError,
    FillInMiddleUnsupportedError,
    InvalidRequestError,
)
from mlxjan.types import FillInMiddle, Prompt, TextPrompt

# Of a fitted FIM prompt's room, the share kept for the code before the hole (llama-server's
# /infill keeps three quarters of its batch for the prefix).
PREFIX_SHARE = 0.75
# What a fitted prompt leaves the middle when the request sets no max_tokens.
FIT_ROOM = 256
# Each try cuts by the token count it measured; cutting at line breaks only cuts more.
FIT_TRIES = 4


class Vocabulary(Protocol):
    """What building a prompt asks of a model's tokenizer."""

    @property
    def size(self) -> int: ...

    @property
    def bos(self) -> int | None:
        """The token to start a prompt with, where the model wants one."""
        ...

    def encode(self, text: str, *, special: bool) -> list[int]:
        """`text` as tokens, no BOS; `special`: control tokens spelled in it are read."""
        ...

    def marker(self, text: str) -> int | None:
        """The control token spelled `text`, if the vocabulary has one."""
        ...


@dataclass(frozen=True)
class RawPrompts:
    """One model's prompt builder (its FIM family is found once)."""

    vocab: Vocabulary
    model: str

    def fim_format(self) -> FimFormat | None:
        return detect_fim(lambda m: self.vocab.marker(m) is not None)

    def tokens(self, prompt: Prompt, fmt: FimFormat | None, context_length: int,
               max_tokens: int | None) -> list[int]:
        if isinstance(prompt, TextPrompt):
            return self._text(prompt)
        if fmt is None:
            raise FillInMiddleUnsupportedError(self.model, "suffix")
        if prompt.fit:
            prompt = self._fitted(prompt, fmt, context_length - (max_tokens or FIT_ROOM))
        return self._fim(prompt, fmt)

    def _text(self, prompt: TextPrompt) -> list[int]:
        bos = [] if self.vocab.bos is None else [self.vocab.bos]
        if prompt.tokens is None:
            if not prompt.text:
                raise InvalidRequestError("The prompt is empty.", param="prompt")
            return bos + self.vocab.encode(prompt.text, special=True)
        bad = outside_vocabulary(prompt.tokens, self.vocab.size)
        if bad is not None:
            raise InvalidRequestError(
                f"Token id {bad} is not in the model's vocabulary of {self.vocab.size} "
                "tokens.", param="prompt")
        if not prompt.tokens:
            raise InvalidRequestError("The prompt is empty.", param="prompt")
        return list(prompt.tokens)

    def _fim(self, fim: FillInMiddle, fmt: FimFormat) -> list[int]:
        bos = [] if self.vocab.bos is None else [self.vocab.bos]
        return bos + self._encode(context_pieces(fmt, fim)) + self._encode(
            hole_pieces(fmt, fim.prefix, fim.suffix))

    def _encode(self, pieces: Sequence[Piece]) -> list[int]:
        tokens: list[int] = []
        for piece in pieces:
            if piece.marker:
                token = self.vocab.marker(piece.text)
                assert token is not None  # detect_fim kept only markers the model has
                tokens.append(token)
            else:
                tokens += self.vocab.encode(piece.text, special=False)
        return tokens

    def _fitted(self, fim: FillInMiddle, fmt: FimFormat, budget: int) -> FillInMiddle:
        """`fim` cut to `budget` tokens: other files first (the earliest first), then the
        prefix's start and the suffix's end, at line breaks."""
        files = list(fim.files)
        while files and len(self._fim(replace(fim, files=tuple(files)), fmt)) > budget:
            files.pop(0)
        fim = replace(fim, files=tuple(files))
        for _ in range(FIT_TRIES):
            over = len(self._fim(fim, fmt)) - budget
            if over <= 0:
                return fim
            prefix = len(self.vocab.encode(fim.prefix, special=False))
            suffix = len(self.vocab.encode(fim.suffix, special=False))
            room = prefix + suffix - over
            if room <= 0:
                break
            keep_suffix = min(suffix, max(room - int(room * PREFIX_SHARE), room - prefix))
            fim = replace(fim, prefix=_tail(fim.prefix, (room - keep_suffix) / max(prefix, 1)),
                          suffix=_head(fim.suffix, keep_suffix / max(suffix, 1)))
        raise ContextLengthExceededError(len(self._fim(fim, fmt)), budget)


def _tail(text: str, share: float) -> str:
    """About `share` of `text`, from its end back to a line's start: a cut line would
    mislead the model."""
    kept = text[len(text) - int(len(text) * share):]
    if len(kept) == len(text):
        return text
    cut = kept.find("\n")
    return kept[cut + 1:] if cut >= 0 else ""


def _head(text: str, share: float) -> str:
    kept = text[:int(len(text) * share)]
    if len(kept) == len(text):
        return text
    cut = kept.rfind("\n")
    return kept[:cut + 1] if cut >= 0 else ""
