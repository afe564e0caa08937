"""The prompt-cache policy: longest shared prefix wins, covered snapshots go, LRU budget."""

from __future__ import annotations

from mlxjan.engine.prompt_cache import PromptCache
from mlxjan.engine.tokens import common_prefix


def test_common_prefix() -> None:
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix([1, 2], [1, 2, 3]) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([5], [6]) == 0


def test_best_is_the_longest_shared_prefix() -> None:
    cache: PromptCache[str] = PromptCache(budget_bytes=100)
    cache.put([1, 2, 3, 4], "a", 10)
    cache.put([1, 2, 9, 9, 9], "b", 10)
    entry, shared = cache.best([1, 2, 3, 7])
    assert entry is not None and entry.state == "a" and shared == 3
    entry, shared = cache.best([1, 2, 9, 9, 1])
    assert entry is not None and entry.state == "b" and shared == 4
    assert cache.best([8]) == (None, 0)


def test_a_longer_snapshot_replaces_the_ones_it_extends() -> None:
    cache: PromptCache[str] = PromptCache(budget_bytes=100)
    cache.put([1, 2], "short", 10)
    cache.put([1, 2, 3], "long", 10)
    assert cache.stats().entries == 1
    assert cache.holds([1, 2]) and cache.holds([1, 2, 3]) and not cache.holds([1, 3])


def test_least_recently_used_goes_first_over_budget() -> None:
    cache: PromptCache[str] = PromptCache(budget_bytes=25)
    cache.put([1], "one", 10)
    cache.put([2], "two", 10)
    entry, _ = cache.best([1])
    assert entry is not None
    cache.take(entry)  # "one" is now the most recently used
    cache.put([3], "three", 10)
    states = {cache.best([t])[0].state for t in (1, 3) if cache.best([t])[0]}  # type: ignore[union-attr]
    assert states == {"one", "three"}
    assert cache.best([2]) == (None, 0)
    assert cache.stats().hits == 1 and cache.stats().bytes == 20


def test_a_snapshot_bigger_than_the_budget_is_not_kept() -> None:
    cache: PromptCache[str] = PromptCache(budget_bytes=5)
    cache.put([1], "big", 10)
    assert cache.stats().entries == 0
