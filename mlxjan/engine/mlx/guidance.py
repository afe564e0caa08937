"""Constrained decoding on MLX through llguidance: a token mask applied to every step.

llguidance's own MLX helper applies its mask with a Metal kernel, which the CPU build of
MLX (Linux, tests) lacks; the mask here is unpacked with numpy and applied with `mx.where`,
which runs on every MLX device.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

log = logging.getLogger(__name__)
LogitsProcessor = Callable[[Any, Any], Any]


class Guide:
    """llguidance's view of one model's tokenizer (built once per model: about a second)."""

    def __init__(self, hf_tokenizer: Any, vocab_size: int, eos: int) -> None:
        import llguidance.hf

        self._hf = hf_tokenizer
        self._tokenizer = llguidance.hf.from_tokenizer(hf_tokenizer, n_vocab=vocab_size,
                                                       eos_token=eos)

    def single_token(self, text: str) -> int | None:
        ids: list[int] = self._hf.encode(text, add_special_tokens=False)
        return ids[0] if len(ids) == 1 else None

    def matcher(self, lark: str) -> Any | None:
        """A fresh matcher for the grammar, or None (logged) if llguidance refuses it."""
        from llguidance import LLMatcher

        grammar = LLMatcher.grammar_from_lark(lark)
        error = LLMatcher.validate_grammar(grammar, self._tokenizer)
        if error and not error.startswith("WARNING"):
            log.warning("llguidance refused the grammar (%s); decoding unconstrained", error)
            return None
        return LLMatcher(self._tokenizer, grammar, log_level=0)


def mask_processor(matcher: Any, *, skip: int) -> LogitsProcessor:
    """An mlx-lm logits processor that lets through only what the grammar allows next.

    mlx-lm passes every token fed so far in this call (the first `skip` are prompt); the
    ones sampled since the last step are consumed by the matcher first.
    """
    import mlx.core as mx

    consumed = 0

    def process(tokens: Any, logits: Any) -> Any:
        nonlocal consumed
        new: list[int] = tokens[skip + consumed:].tolist() if tokens.size > skip + consumed \
            else []
        for token in new:
            matcher.consume_token(token)
        consumed += len(new)
        words = np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8)
        allowed = np.unpackbits(words, bitorder="little")[: logits.shape[-1]].astype(np.bool_)
        return mx.where(mx.array(allowed), logits, -mx.inf)

    return process
