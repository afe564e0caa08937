"""Deterministic embeddings for the fake engine (fake_engine.py, `kind="embedding"`).

Each word (or token id) has a fixed pseudo-random unit vector, and a text's vector is the
normalised sum of its words': texts that share words are near each other, so API tests can
rank documents against a query. A text counts as its words plus two tokens (as [CLS] and
[SEP] would), and the same checks as the real engine's apply (engine/embedding.py).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from mlxjan.engine.embedding import checked_tokens, dimensions_for, shaped
from mlxjan.types import EmbeddingRequest, Embeddings

Vector = np.ndarray[Any, np.dtype[np.float32]]


def fake_embeddings(request: EmbeddingRequest, *, native: int, matryoshka: bool,
                    context_length: int) -> Embeddings:
    dimensions = dimensions_for(request.dimensions, native, matryoshka)
    words = [item.lower().split() if isinstance(item, str) else [str(t) for t in item]
             for item in request.inputs]
    counts = [len(checked_tokens([0] * (len(w) + 2), i, context_length, 1))
              for i, w in enumerate(words)]
    vectors = tuple(shaped(_text_vector(w, native), dimensions) for w in words)
    return Embeddings(vectors, sum(counts))


def _text_vector(words: list[str], native: int) -> Vector:
    total = np.zeros(native, np.float32)
    for word in words:
        total += word_vector(word, native)
    return total


def word_vector(word: str, native: int) -> Vector:
    seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
    vector = np.random.default_rng(seed).standard_normal(native)
    unit: Vector = (vector / np.linalg.norm(vector)).astype(np.float32)
    return unit
