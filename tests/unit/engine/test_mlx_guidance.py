"""The llguidance mask as an mlx-lm logits processor."""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from mlxjan.engine.mlx.guidance import mask_processor


class _Matcher:
    """Allows only token (number of tokens consumed + 1) next."""

    def __init__(self, vocab: int) -> None:
        self.vocab = vocab
        self.consumed: list[int] = []

    def consume_token(self, token: int) -> bool:
        self.consumed.append(token)
        return True

    def compute_bitmask(self) -> bytes:
        bits = np.zeros(((self.vocab + 31) // 32) * 32, dtype=np.uint8)
        bits[len(self.consumed) + 1] = 1
        return np.packbits(bits, bitorder="little").tobytes()


def test_only_allowed_tokens_survive_and_new_tokens_are_consumed() -> None:
    matcher = _Matcher(40)
    process = mask_processor(matcher, skip=3)
    logits = mx.zeros((1, 40))
    first = process(mx.array([7, 8, 9]), logits)  # prompt only: nothing to consume
    assert matcher.consumed == []
    assert np.isfinite(np.array(first)).nonzero()[1].tolist() == [1]
    second = process(mx.array([7, 8, 9, 1]), logits)
    assert matcher.consumed == [1]
    assert np.isfinite(np.array(second)).nonzero()[1].tolist() == [2]
    process(mx.array([7, 8, 9, 1, 2]), logits)
    assert matcher.consumed == [1, 2]
