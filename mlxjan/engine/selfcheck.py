"""The load-time self-check both engines share: a fixed text, how two evaluations of it are
compared, and where verdicts are remembered.

A model serves only after its optimised path has computed the probe text's next-token
distributions like a reference path does (llama.cpp: its plain kernels; MLX: the same model
evaluated step by step, and on a GPU against the CPU). Verdicts are kept per processor,
library build and model, so a check runs once.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)
CHECK_VERSION = 1  # bump when what the checks measure changes: old verdicts no longer hold

# Code, prose and a counting tail a working model predicts. The last STEPS tokens are
# evaluated one at a time, as decoding does, since those kernels differ from the prompt's.
PROBE_TEXT = ("def add(a, b):\n    return a + b\n\nThe quick brown fox jumps over the lazy "
              "dog. Counting: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15")
STEPS = 4

# Agreement a path must show with the reference. Other kernels add in another order, so
# log-probabilities differ slightly (seen here: 0.05 nats at most); a broken path is off by
# whole nats. The top token must agree where the reference is sure of it (a margin over the
# runner-up): near-ties, as in a random-weight test model, may flip either way.
MAX_LOGPROB_GAP = 1.0
TOP_COMPARED = 8
SURE_MARGIN = 0.5
MIN_TOP1_AGREEMENT = 0.9

Rows = np.ndarray[Any, np.dtype[np.float32]]

# Embedding models: the probe text and two sentences, one close to the other in meaning.
# Each is embedded whole; a path whose unit vectors point elsewhere than the reference's
# (cosine below MIN_COSINE) is wrong. Other kernels add in another order: seen 0.99999+.
EMBEDDING_PROBES = (PROBE_TEXT, "search_query: how do plants make food from light?",
                    "search_document: Photosynthesis turns sunlight, water and carbon "
                    "dioxide into sugar in the leaves of green plants.")
MIN_COSINE = 0.999


def log_softmax(logits: np.ndarray[Any, Any]) -> Rows:
    wide = logits.astype(np.float64)
    shifted = wide - wide.max(-1, keepdims=True)
    rows: Rows = (shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))).astype(np.float32)
    return rows


def compare(reference: Rows, candidate: Rows) -> str | None:
    """None when the candidate's distributions agree with the reference's; else why not."""
    if candidate.shape != reference.shape:
        return f"its logits have shape {candidate.shape}, the reference's {reference.shape}"
    if not np.isfinite(candidate).all():
        return "its logits are not finite"
    ranked = np.argsort(-reference, axis=-1)[:, :TOP_COMPARED]
    ref_top = np.take_along_axis(reference, ranked, -1)
    gap = float(np.abs(np.take_along_axis(candidate, ranked, -1) - ref_top).max())
    sure = ref_top[:, 0] - ref_top[:, 1] >= SURE_MARGIN
    agree = float((candidate.argmax(-1) == ranked[:, 0])[sure].mean()) if sure.any() else 1.0
    if agree < MIN_TOP1_AGREEMENT or gap > MAX_LOGPROB_GAP:
        return (f"it disagrees with the reference (same top token at {agree:.0%} of sure "
                f"positions, log-probabilities off by up to {gap:.2f})")
    return None


def compare_embeddings(reference: Rows, candidate: Rows) -> str | None:
    """None when each candidate unit vector points where the reference's does; else why."""
    if candidate.shape != reference.shape:
        return f"its embeddings have shape {candidate.shape}, the reference's {reference.shape}"
    if not np.isfinite(candidate).all():
        return "its embeddings are not finite"
    cosine = float((reference * candidate).sum(-1).min())
    if cosine < MIN_COSINE:
        return f"its embeddings point elsewhere than the reference's (cosine {cosine:.4f})"
    return None


def plausibility(rows: Rows, tokens: tuple[int, ...] | list[int]) -> float:
    """How often the rows' top token is the text's next token, over the counting tail."""
    tail = min(12, len(tokens) - 1)
    predicted = rows[-tail - 1:-1].argmax(-1)
    return float((predicted == np.array(tokens[-tail:])).mean())


class Remembered:
    """Verdicts (small JSON objects) by key, in `folder`; no folder remembers nothing."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder

    def _path(self, key: list[str]) -> Path | None:
        if self.folder is None:
            return None
        digest = hashlib.sha256(json.dumps([CHECK_VERSION, *key]).encode()).hexdigest()
        return self.folder / f"{digest[:32]}.json"

    def get(self, key: list[str]) -> dict[str, Any] | None:
        path = self._path(key)
        try:
            data = json.loads(path.read_text()) if path else None
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def put(self, key: list[str], verdict: dict[str, Any]) -> None:
        path = self._path(key)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            staged = path.with_suffix(".tmp")
            staged.write_text(json.dumps(verdict))
            staged.replace(path)
        except OSError as exc:  # an unwritable data dir costs a recheck next load, no more
            log.warning("could not remember the self-check in %s: %s", path, exc)
