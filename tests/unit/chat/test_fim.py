"""FIM formats: the family found from a vocabulary's control tokens, the pieces of a prompt
in its order, and the stops that end a middle."""

from __future__ import annotations

import pytest

from mlxjan.chat.fim import (
    FORMATS,
    REPO_NAME,
    SNIPPET_LINE,
    Piece,
    context_pieces,
    detect_fim,
    hole_pieces,
    middle_stops,
)
from mlxjan.types import FillInMiddle, SourceFile

QWEN_VOCAB = {"<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|fim_pad|>",
              "<|repo_name|>", "<|file_sep|>", "<|im_start|>"}


def _format(vocab: set[str]) -> str | None:
    fmt = detect_fim(vocab.__contains__)
    return fmt.name if fmt else None


@pytest.mark.parametrize(("vocab", "family"), [
    (QWEN_VOCAB, "qwen"),
    ({"<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|file_separator|>"},
     "codegemma"),
    ({"<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<file_sep>"}, "starcoder"),
    ({"<\uff5cfim\u2581begin\uff5c>", "<\uff5cfim\u2581hole\uff5c>",
      "<\uff5cfim\u2581end\uff5c>"}, "deepseek"),
    ({"[PREFIX]", "[SUFFIX]", "[MIDDLE]", "[INST]"}, "codestral"),
    ({"\u2581<PRE>", "\u2581<SUF>", "\u2581<MID>"}, "codellama"),
    ({"<|im_start|>", "<|im_end|>"}, None),
    ({"<|fim_prefix|>", "<|fim_suffix|>"}, None),  # no middle: no FIM
])
def test_the_family_comes_from_the_control_tokens(vocab: set[str], family: str | None) -> None:
    assert _format(vocab) == family


def test_optional_markers_the_model_lacks_are_dropped() -> None:
    fmt = detect_fim({"<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>",
                      "<|file_sep|>"}.__contains__)
    assert fmt is not None and fmt.name == "qwen"
    assert fmt.repo is None and fmt.file_sep == "<|file_sep|>"


def test_every_family_has_three_distinct_markers() -> None:
    assert all(len(set(f.markers)) == 3 for f in FORMATS)


def test_the_hole_is_prefix_suffix_middle_or_suffix_first() -> None:
    qwen = detect_fim(QWEN_VOCAB.__contains__)
    assert qwen is not None
    assert hole_pieces(qwen, "a", "b") == [
        Piece("<|fim_prefix|>", True), Piece("a"), Piece("<|fim_suffix|>", True),
        Piece("b"), Piece("<|fim_middle|>", True)]
    codestral = detect_fim({"[PREFIX]", "[SUFFIX]", "[MIDDLE]"}.__contains__)
    assert codestral is not None
    assert [p.text for p in hole_pieces(codestral, "a", "")] == [
        "[SUFFIX]", "[PREFIX]", "a", "[MIDDLE]"]


def test_other_files_go_first_under_the_repository_markers() -> None:
    qwen = detect_fim(QWEN_VOCAB.__contains__)
    assert qwen is not None
    fim = FillInMiddle("p", "s", files=(SourceFile("a.py", "A = 1\n"), SourceFile("b", "B")))
    assert context_pieces(qwen, fim) == [
        Piece("<|repo_name|>", True), Piece(f"{REPO_NAME}\n"),
        Piece("<|file_sep|>", True), Piece("a.py\nA = 1\n"),
        Piece("<|file_sep|>", True), Piece("b\nB"), Piece("\n")]
    assert context_pieces(qwen, FillInMiddle("p", "s")) == []


def test_without_file_markers_other_files_are_snippets_of_text() -> None:
    deepseek = detect_fim({"<\uff5cfim\u2581begin\uff5c>", "<\uff5cfim\u2581hole\uff5c>",
                           "<\uff5cfim\u2581end\uff5c>"}.__contains__)
    assert deepseek is not None
    pieces = context_pieces(deepseek, FillInMiddle("p", "s", files=(SourceFile("a", "A\n"),)))
    assert pieces == [Piece(f"{SNIPPET_LINE}A\n")]


@pytest.mark.parametrize(("prefix", "suffix", "stops"), [
    ("def add(a, b):\n    ", "\n\nprint(add(1, 2))\n", ("\nprint(", "```")),
    ("for x in xs:\n        ", "\n    return total\n", ("\n    return ", "```")),
    ("x = f(", ")\nprint(x)", ("```",)),  # the suffix's first line says too little
    ("# ```\n", "\n  }}}}\n", ("}}}}",)),  # no word: the whole line; the file has fences
    ("", "", ("```",)),
])
def test_a_middle_stops_where_the_suffix_begins_again(prefix: str, suffix: str,
                                                      stops: tuple[str, ...]) -> None:
    assert middle_stops(FillInMiddle(prefix, suffix)) == stops
