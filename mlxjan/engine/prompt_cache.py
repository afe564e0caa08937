"""Several cached prompt prefixes per model: the policy, independent of the engine.

Agents interleave long prompts (Claude Code's main agent, its subagents, small-model calls):
a single KV cache thrashes between them. Engines keep their live cache and hand snapshots of
it (opaque to this module) here before overwriting it; a later prompt that shares a longer
prefix with a snapshot than with the live cache gets that snapshot restored. Least recently
used snapshots go first when the byte budget is exceeded.

With a DiskCache (engine/cache_store.py) and a codec that turns the engine's state into bytes
and back, snapshots are also persisted by a background writer as they are taken, and a prompt
that no snapshot in memory serves well is looked up on disk: prefixes survive a restart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, Literal, TypeVar

if TYPE_CHECKING:
    from mlxjan.engine.cache_store import DiskCache

from mlxjan.engine.tokens import TokenIds, common_prefix

log = logging.getLogger(__name__)
S = TypeVar("S")
# Prefixes this long go to disk as soon as they are computed (the write in the background),
# so they survive a crash or a restart, not only a clean stop. Shared by every engine.
PERSIST_AFTER_TOKENS = 1024


@dataclass
class Snapshot(Generic[S]):
    tokens: tuple[int, ...]
    state: S
    size: int
    used: float = field(default_factory=time.monotonic)
    source: Literal["memory", "disk"] = "memory"


@dataclass
class CacheStats:
    entries: int
    bytes: int
    hits: int
    misses: int
    disk_entries: int = 0
    disk_bytes: int = 0
    disk_hits: int = 0


@dataclass(frozen=True)
class StateCodec(Generic[S]):
    """An engine's state as bytes for the disk, and back: `encode(state, size)` may return
    a view of the state (it is written later, from another thread, and never changed)."""

    encode: Callable[[S, int], memoryview]
    decode: Callable[[bytearray], S]


class PromptCache(Generic[S]):
    def __init__(self, budget_bytes: int, disk: DiskCache | None = None,
                 codec: StateCodec[S] | None = None) -> None:
        self.budget = budget_bytes
        self._entries: list[Snapshot[S]] = []
        self.hits = 0
        self.misses = 0
        self._disk = disk if codec is not None else None
        self._codec = codec

    def best(self, prompt: TokenIds) -> tuple[Snapshot[S] | None, int]:
        """The snapshot sharing the longest prefix with `prompt`, and that length."""
        best: Snapshot[S] | None = None
        best_len = 0
        for entry in self._entries:
            shared = common_prefix(entry.tokens, prompt)
            if shared > best_len:
                best, best_len = entry, shared
        return best, best_len

    def lookup(self, prompt: TokenIds, at_least: int) -> tuple[Snapshot[S] | None, int]:
        """Like `best`, but when the disk holds a longer prefix than memory, of `at_least`
        tokens or more, that entry is read (on this thread) and returned instead."""
        entry, shared = self.best(prompt)
        if self._disk is None or self._codec is None:
            return entry, shared
        found, on_disk = self._disk.best(prompt)
        if found is None or on_disk <= shared or on_disk < at_least:
            return entry, shared
        data = self._disk.load(found)
        if data is None:
            return entry, shared
        state = self._codec.decode(data)
        tokens = tuple(found.tokens.tolist())
        return Snapshot(tokens, state, len(data), source="disk"), on_disk

    def take(self, entry: Snapshot[S]) -> None:
        """Count a restore and mark the snapshot recently used."""
        entry.used = time.monotonic()
        self.hits += 1

    def miss(self) -> None:
        self.misses += 1

    def holds(self, tokens: TokenIds) -> bool:
        return any(len(e.tokens) >= len(tokens) and common_prefix(e.tokens, tokens) ==
                   len(tokens) for e in self._entries)

    def put(self, tokens: Sequence[int], state: S, size: int, *,
            persist: bool = True) -> None:
        """Keep a snapshot; snapshots it extends are dropped (it covers them). With a disk
        and `persist`, it is also persisted in the background unless a file covers it."""
        if persist:
            self.persist(tokens, state, size)
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

    @property
    def persisting(self) -> bool:
        """Whether entries go to disk (engines skip copying state out when not)."""
        return self._disk is not None

    def persist(self, tokens: Sequence[int], state: S, size: int) -> None:
        """Queue a state for the disk only (e.g. the live cache at shutdown)."""
        if self._disk is not None and self._codec is not None and not self._disk.holds(tokens):
            self._disk.save_later(tokens, self._codec.encode(state, size))

    def open_disk(self) -> None:
        """Index the files on disk (headers only); call once the engine knows its params."""
        if self._disk is not None:
            count = self._disk.scan()
            _, size = self._disk.stats()
            log.info("prompt cache: %d entries (%.0f MiB) on disk in %s", count,
                     size / 2**20, self._disk.directory)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait for pending disk writes (at unload and shutdown)."""
        if self._disk is not None:
            self._disk.flush(timeout)

    def stats(self) -> CacheStats:
        disk_entries, disk_bytes = self._disk.stats() if self._disk is not None else (0, 0)
        return CacheStats(len(self._entries), sum(e.size for e in self._entries), self.hits,
                          self.misses, disk_entries, disk_bytes,
                          self._disk.hits if self._disk is not None else 0)
