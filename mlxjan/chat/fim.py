"""Fill-in-the-middle prompts in each coder family's own tokens. Pure: no model library.

A FIM prompt is a list of pieces, each either a marker (one control token of the model's
vocabulary) or text (the user's code, tokenized as plain text so that code which happens to
contain a marker's spelling cannot forge one). Engines turn pieces into tokens.

The family is found from the vocabulary, by the markers it holds: the first entry of
FORMATS whose three markers are all control tokens of the model.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from mlxjan.types import FillInMiddle


@dataclass(frozen=True)
class FimFormat:
    name: str
    prefix: str
    suffix: str
    middle: str
    # Suffix before prefix (SPM order): the model was trained on `suffix_first` prompts.
    suffix_first: bool = False
    repo: str | None = None  # the marker before the repository's name
    file_sep: str | None = None  # the marker before each file's name and text

    @property
    def markers(self) -> tuple[str, ...]:
        return (self.prefix, self.suffix, self.middle)


FORMATS: tuple[FimFormat, ...] = (
    # Qwen2.5-Coder and Qwen3-Coder (the default model).
    FimFormat("qwen", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>",
              repo="<|repo_name|>", file_sep="<|file_sep|>"),
    # CodeGemma: the same three markers, another file separator.
    FimFormat("codegemma", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>",
              file_sep="<|file_separator|>"),
    # StarCoder 1 and 2, SmolLM, Granite code models.
    FimFormat("starcoder", "<fim_prefix>", "<fim_suffix>", "<fim_middle>",
              repo="<repo_name>", file_sep="<file_sep>"),
    # DeepSeek-Coder: fullwidth vertical lines (U+FF5C) and a lower block (U+2581).
    FimFormat("deepseek", "<\uff5cfim\u2581begin\uff5c>", "<\uff5cfim\u2581hole\uff5c>",
              "<\uff5cfim\u2581end\uff5c>"),
    # Codestral (Mistral's control tokens), trained suffix first.
    FimFormat("codestral", "[PREFIX]", "[SUFFIX]", "[MIDDLE]", suffix_first=True),
    FimFormat("codellama", "▁<PRE>", "▁<SUF>", "▁<MID>"),
)

# The repository name llama-server gives its /infill prompts: the models know none better.
REPO_NAME = "myproject"
# Without file markers another file goes in as text under this line (llama-server's).
SNIPPET_LINE = "\n\n--- snippet ---\n\n"
# A line's first word and the character after it: "print(", "return ", "x =".
_FIRST_WORD = re.compile(r"[A-Za-z_]\w*[^\w\n]?")


@dataclass(frozen=True)
class Piece:
    text: str
    marker: bool = False  # one control token, not text


def detect_fim(is_marker: Callable[[str], bool]) -> FimFormat | None:
    """The family whose markers the vocabulary holds; None: the model has no FIM tokens.
    Where families share the three markers (Qwen, CodeGemma), the one whose file markers
    the vocabulary also holds wins; optional markers the model lacks are dropped."""
    found: list[FimFormat] = []
    for fmt in FORMATS:
        if all(is_marker(m) for m in fmt.markers):
            found.append(FimFormat(
                fmt.name, fmt.prefix, fmt.suffix, fmt.middle, fmt.suffix_first,
                fmt.repo if fmt.repo and is_marker(fmt.repo) else None,
                fmt.file_sep if fmt.file_sep and is_marker(fmt.file_sep) else None))
    return max(found, key=lambda f: -(f.repo, f.file_sep).count(None), default=None)


def context_pieces(fmt: FimFormat, fim: FillInMiddle) -> list[Piece]:
    """The other files, before the code being completed."""
    if not fim.files:
        return []
    pieces: list[Piece] = []
    if fmt.repo:
        pieces += [Piece(fmt.repo, marker=True), Piece(REPO_NAME + "\n")]
    for file in fim.files:
        if fmt.file_sep:
            pieces += [Piece(fmt.file_sep, marker=True), Piece(f"{file.name}\n{file.text}")]
        else:
            pieces.append(Piece(f"{SNIPPET_LINE}{file.text}"))
        if not file.text.endswith("\n"):
            pieces.append(Piece("\n"))
    return pieces


def hole_pieces(fmt: FimFormat, prefix: str, suffix: str) -> list[Piece]:
    """The code around the hole, in the family's order, ending where the middle begins."""
    before = [Piece(fmt.prefix, marker=True), Piece(prefix)]
    after = [Piece(fmt.suffix, marker=True), Piece(suffix)]
    ordered = after + before if fmt.suffix_first else before + after
    return [p for p in ordered if p.marker or p.text] + [Piece(fmt.middle, marker=True)]


def middle_stops(fim: FillInMiddle) -> tuple[str, ...]:
    """Stop strings that end a middle where a chat-tuned coder runs on past it.

    Such a model (the default one) seldom ends a middle itself: it writes on into code
    like the suffix's, or closes a chat-style reply with a code fence. So the middle stops
    where a line begins as the suffix's first line of code begins (same indentation, same
    first word: `print(`, `return `), and at a code fence when the file itself has none.
    """
    stops: list[str] = []
    line = next((line for line in fim.suffix.splitlines() if line.strip()), "")
    code = line.lstrip()
    word = _FIRST_WORD.match(code)
    if word is not None and len(word.group()) >= 3:
        stops.append("\n" + line[:len(line) - len(code)] + word.group())
    elif len(code.strip()) >= 4:
        stops.append(code.strip())
    if "```" not in fim.prefix and "```" not in fim.suffix:
        stops.append("```")
    return tuple(stops)
