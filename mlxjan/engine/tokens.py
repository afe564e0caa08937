"""Token-id sequences, as the prompt cache and its disk store compare them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

TokenIds = Sequence[int] | npt.NDArray[np.int32]


def common_prefix(a: TokenIds, b: TokenIds) -> int:
    """How many leading tokens `a` and `b` share."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    differ = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(differ[0]) if differ.size else n


def outside_vocabulary(tokens: Sequence[int], size: int) -> int | None:
    """The first token id not in a vocabulary of `size` tokens, if any: a request's own ids
    are checked before llama.cpp sees them (it crashes on one)."""
    return next((t for t in tokens if not 0 <= t < size), None)
