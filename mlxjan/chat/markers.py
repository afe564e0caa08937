"""Which family a model belongs to, by the markers its chat template or vocabulary holds:
one ordered rule table per question (tool calls, reasoning), first match wins."""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

F = TypeVar("F")


@dataclass(frozen=True)
class Rule(Generic[F]):
    """The template (or vocabulary) teaches `fmt` if it holds every one of `markers`."""

    markers: tuple[str, ...]
    fmt: F


def first_match(template_rules: Sequence[Rule[F]], vocab_rules: Sequence[Rule[F]],
                chat_template: str | None, vocab: Container[str] | None) -> F | None:
    """The first template rule the template matches, else the first vocabulary rule the
    vocabulary (token texts) matches; None if none does."""
    template = chat_template or ""
    for rule in template_rules:
        if all(marker in template for marker in rule.markers):
            return rule.fmt
    if vocab is not None:
        for rule in vocab_rules:
            if all(marker in vocab for marker in rule.markers):
                return rule.fmt
    return None
