"""Completion prompts as tokens (engine/raw_prompt.py) over a toy vocabulary: one token per
character, control tokens by their spelling."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from mlxjan.engine.raw_prompt import RawPrompts
from mlxjan.errors import (
    ContextLengthExceededError,
    FillInMiddleUnsupportedError,
    InvalidRequestError,
)
from mlxjan.types import FillInMiddle, SourceFile, TextPrompt

CONTROL = ["<s>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|repo_name|>",
           "<|file_sep|>"]


@dataclass
class ToyVocabulary:
    """Characters are tokens 1000 + their code point; control tokens 0, 1, 2, ..."""

    bos_token: int | None = None

    @property
    def size(self) -> int:
        return 1000 + 0x110000

    @property
    def bos(self) -> int | None:
        return self.bos_token

    def encode(self, text: str, *, special: bool) -> list[int]:
        tokens: list[int] = []
        while text:
            control = next((c for c in CONTROL if special and text.startswith(c)), None)
            if control is not None:
                tokens.append(CONTROL.index(control))
                text = text[len(control):]
            else:
                tokens.append(1000 + ord(text[0]))
                text = text[1:]
        return tokens

    def marker(self, text: str) -> int | None:
        return CONTROL.index(text) if text in CONTROL else None

    def decode(self, tokens: list[int]) -> str:
        return "".join(CONTROL[t] if t < 1000 else chr(t - 1000) for t in tokens)


def _build(prompt: TextPrompt | FillInMiddle, vocab: ToyVocabulary | None = None,
           context: int = 1000, max_tokens: int | None = None) -> str:
    vocab = vocab or ToyVocabulary()
    raw = RawPrompts(vocab, "toy")
    return vocab.decode(raw.tokens(prompt, raw.fim_format(), context, max_tokens))


def test_text_reads_control_tokens_written_in_it_and_gets_bos() -> None:
    vocab = ToyVocabulary(bos_token=0)
    raw = RawPrompts(vocab, "toy")
    assert raw.tokens(TextPrompt("a<|fim_pad|>"), None, 100, None)[:2] == [0, 1000 + ord("a")]
    assert raw.tokens(TextPrompt("<|fim_prefix|>x"), None, 100, None) == [0, 1, 1000 + ord("x")]


def test_token_ids_pass_as_they_are_when_the_vocabulary_has_them() -> None:
    raw = RawPrompts(ToyVocabulary(bos_token=0), "toy")
    assert raw.tokens(TextPrompt(tokens=(5, 6)), None, 100, None) == [5, 6]
    with pytest.raises(InvalidRequestError, match="not in the model's vocabulary"):
        raw.tokens(TextPrompt(tokens=(5, 10**9)), None, 100, None)
    with pytest.raises(InvalidRequestError, match="empty"):
        raw.tokens(TextPrompt(tokens=()), None, 100, None)
    with pytest.raises(InvalidRequestError, match="empty"):
        raw.tokens(TextPrompt(""), None, 100, None)


def test_fim_markers_are_control_tokens_and_code_is_plain_text() -> None:
    raw = RawPrompts(ToyVocabulary(), "toy")
    # Code that spells a marker is text: it cannot forge the hole.
    tokens = raw.tokens(FillInMiddle("a<|fim_middle|>", "b"), raw.fim_format(), 100, None)
    assert tokens.count(3) == 1 and tokens[-1] == 3
    assert _build(FillInMiddle("a", "b")) == "<|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>"


def test_files_come_first_with_the_repository_markers() -> None:
    text = _build(FillInMiddle("a", "b", files=(SourceFile("u.py", "U = 1"),)))
    assert text == ("<|repo_name|>myproject\n<|file_sep|>u.py\nU = 1\n"
                    "<|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>")


def test_a_model_without_fim_tokens_refuses_a_fim_prompt() -> None:
    raw = RawPrompts(ToyVocabulary(), "toy")
    with pytest.raises(FillInMiddleUnsupportedError):
        raw.tokens(FillInMiddle("a", "b"), None, 100, None)


def test_an_unfitted_prompt_is_kept_whole_even_when_long() -> None:
    fim = FillInMiddle("p" * 500, "s")
    assert len(_build(fim, context=100)) > 500  # the engine refuses it, not this


def test_a_fitted_prompt_drops_files_then_cuts_at_lines_keeping_the_cursor() -> None:
    prefix = "".join(f"line{i}\n" for i in range(100)) + "def f():\n    "
    suffix = "\n" + "".join(f"after{i}\n" for i in range(100))
    fim = FillInMiddle(prefix, suffix, files=(SourceFile("big", "x" * 2000),), fit=True)
    text = _build(fim, context=400, max_tokens=100)
    assert len(text) - len("".join(CONTROL[1:4])) + 3 <= 300
    assert "big" not in text and "<|repo_name|>" not in text
    head, rest = text.split("<|fim_suffix|>")
    assert head.endswith("line99\ndef f():\n    ")  # the cursor's side is kept
    assert head.startswith("<|fim_prefix|>line")  # cut at a line's start
    kept_suffix = rest.removesuffix("<|fim_middle|>")
    assert kept_suffix.startswith("\nafter0\n") and kept_suffix.endswith("\n")
    # Most of the room goes to the prefix.
    assert len(head) > 2 * len(kept_suffix)


def test_a_fitted_prompt_that_cannot_fit_is_refused() -> None:
    with pytest.raises(ContextLengthExceededError):
        _build(FillInMiddle("a" * 50, "b", fit=True), context=10, max_tokens=9)
