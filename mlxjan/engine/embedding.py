"""What every embedding engine does alike: checks of a request against the model, the
batches inputs are packed into, and the vectors' final shape (cut, then unit length).

Pure: numbers in, numbers out; the model library stays in the engines.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mlxjan.engine.tokens import outside_vocabulary
from mlxjan.errors import InputTooLongError, InvalidRequestError

Vector = np.ndarray[Any, np.dtype[np.float32]]


def dimensions_for(requested: int | None, native: int, matryoshka: bool) -> int:
    """The vectors' length: the model's own, or fewer where it was trained for that."""
    if requested is None or requested == native:
        return native
    if not matryoshka:
        raise InvalidRequestError(
            f"this model's embeddings have {native} dimensions and cannot be shortened: "
            f"leave out `dimensions` or set it to {native}", param="dimensions")
    if not 1 <= requested <= native:
        raise InvalidRequestError(f"`dimensions` must be between 1 and {native}",
                                  param="dimensions")
    return requested


def checked_tokens(tokens: Sequence[int], index: int, context_length: int,
                   vocabulary: int) -> list[int]:
    """One input's tokens, refused (never cut short) beyond the context."""
    if len(tokens) > context_length:
        raise InputTooLongError(index, len(tokens), context_length)
    if outside_vocabulary(tokens, vocabulary) is not None:
        raise InvalidRequestError(f"input {index} has a token id outside this model's "
                                  f"vocabulary of {vocabulary}", param="input")
    return list(tokens)


def packed(lengths: Sequence[int], max_tokens: int, max_inputs: int) -> list[list[int]]:
    """Input indices, in order, grouped into batches of at most `max_inputs` inputs and
    `max_tokens` tokens (an input longer than that alone in its batch)."""
    batches: list[list[int]] = []
    used = 0
    for index, length in enumerate(lengths):
        if not batches or used + length > max_tokens or len(batches[-1]) >= max_inputs:
            batches.append([])
            used = 0
        batches[-1].append(index)
        used += length
    return batches


def shaped(vector: Vector, dimensions: int) -> tuple[float, ...]:
    """The first `dimensions` values, scaled to unit length (a zero vector stays zero)."""
    cut = vector[:dimensions].astype(np.float64)
    norm = float(np.linalg.norm(cut))
    unit = cut / norm if norm > 0 else cut
    return tuple(float(v) for v in unit.astype(np.float32))
