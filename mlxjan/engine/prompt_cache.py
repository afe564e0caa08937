"""Several cached prompt prefixes per model: the policy, independent of the engine.

Agents interleave long prompts (Claude Code's main agent, its subagents, small-model calls):
a single KV cache thrashes between them. Engines keep their live cache and hand snapshots of
it (opaque to this module) here before overwriting it; a later prompt that shares a longer
prefix with a snapshot than with the live cache gets that snapshot restored. Least recently
used snapshots go first when the byte budget is exceeded.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

S = TypeVar("S")


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    differ = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(differ[0]) if differ.size else n


@dataclass
class Snapshot(Generic[S]):
    tokens: tuple[int, ...]
    state: S
    size: int
    used: float = field(default_factory=time.monotonic)


@dataclass
class CacheStats:
    entries: int
    bytes: int
    hits: int
    misses: int


class PromptCache(Generic[S]):
    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self._entries: list[Snapshot[S]] = []
        self.hits = 0
        self.misses = 0

    def best(self, prompt: Sequence[int]) -> tuple[Snapshot[S] | None, int]:
        """The snapshot sharing the longest prefix with `prompt`, and that length."""
        best: Snapshot[S] | None = None
        best_len = 0
        for entry in self._entries:
            shared = common_prefix(entry.tokens, prompt)
            if shared > best_len:
                best, best_len = entry, shared
        return best, best_len

    def take(self, entry: Snapshot[S]) -> None:
        """Count a restore and mark the snapshot recently used."""
        entry.used = time.monotonic()
        self.hits += 1

    def miss(self) -> None:
        self.misses += 1

    def holds(self, tokens: Sequence[int]) -> bool:
        return any(len(e.tokens) >= len(tokens) and common_prefix(e.tokens, tokens) ==
                   len(tokens) for e in self._entries)

    def put(self, tokens: Sequence[int], state: S, size: int) -> None:
        """Keep a snapshot; snapshots it extends are dropped (it covers them)."""
        if size > self.budget:
            return
        key = tuple(tokens)
        self._entries = [e for e in self._entries
                         if not (len(e.tokens) <= len(key)
                                 and common_prefix(e.tokens, key) == len(e.tokens))]
        self._entries.append(Snapshot(key, state, size))
        self._entries.sort(key=lambda e: e.used)
        while sum(e.size for e in self._entries) > self.budget:
            self._entries.pop(0)

    def stats(self) -> CacheStats:
        return CacheStats(len(self._entries), sum(e.size for e in self._entries), self.hits,
                          self.misses)
