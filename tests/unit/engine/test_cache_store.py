"""Prompt-cache files: atomic and checksummed, keyed by model and params, capped, indexed."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mlxjan.engine.cache_store import SUFFIX, DiskCache, DiskCacheConfig, StoreKey
from mlxjan.engine.prompt_cache import PromptCache, StateCodec

KEY = StoreKey("ab" * 32, {"engine": "test", "n_ctx": 4096})
STATE = memoryview(b"state-bytes" * 100)


def _store(tmp_path: Path, cap: int = 1 << 20, key: StoreKey = KEY) -> DiskCache:
    store = DiskCache(tmp_path / "cache", key, cap)
    store.scan()
    return store


def _files(store: DiskCache) -> list[Path]:
    return sorted(store.directory.glob(f"*{SUFFIX}"))


def test_an_entry_survives_a_new_store_on_the_same_directory(tmp_path: Path) -> None:
    _store(tmp_path).save([1, 2, 3, 4], STATE)
    again = _store(tmp_path)
    entry, shared = again.best([1, 2, 3, 9])
    assert entry is not None and shared == 3
    assert bytes(again.load(entry) or b"") == STATE.tobytes()
    assert again.hits == 1


def test_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.save([1, 2], STATE)
    store.save([1, 2], STATE)  # the same prefix again replaces the file
    assert [p.name for p in store.directory.iterdir()] == [_files(store)[0].name]


def test_a_longer_entry_replaces_the_ones_it_extends(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.save([1, 2], STATE)
    store.save([1, 2, 3], STATE)
    store.save([7, 8], STATE)
    assert store.stats()[0] == 2 and len(_files(store)) == 2
    assert store.holds([1, 2, 3]) and not store.holds([1, 2, 3, 4])


def test_a_corrupt_state_is_ignored_and_deleted(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    store = _store(tmp_path)
    entry = store.save([1, 2, 3], STATE)
    assert entry is not None
    data = bytearray(entry.path.read_bytes())
    data[-1] ^= 0xFF
    entry.path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        assert store.load(entry) is None
    assert "checksum mismatch" in caplog.text
    assert not entry.path.exists() and store.best([1, 2, 3]) == (None, 0)


@pytest.mark.parametrize("damage", [b"", b"garbage", b"MLXJKVC\n\xff\xff\xff\xff"])
def test_an_unreadable_file_is_deleted_when_indexing(tmp_path: Path, damage: bytes) -> None:
    store = _store(tmp_path)
    entry = store.save([1, 2, 3], STATE)
    assert entry is not None
    entry.path.write_bytes(damage)
    assert _store(tmp_path).scan() == 0 and not entry.path.exists()


def test_a_truncated_file_is_deleted_when_indexing(tmp_path: Path) -> None:
    entry = _store(tmp_path).save([1, 2, 3], STATE)
    assert entry is not None
    entry.path.write_bytes(entry.path.read_bytes()[:-10])
    assert _store(tmp_path).scan() == 0 and not entry.path.exists()


@pytest.mark.parametrize("other", [StoreKey("cd" * 32, KEY.params),
                                   StoreKey(KEY.model_sha256, {"engine": "test", "n_ctx": 8192})])
def test_an_entry_for_another_model_or_context_is_deleted(tmp_path: Path,
                                                          other: StoreKey) -> None:
    entry = _store(tmp_path).save([1, 2, 3], STATE)
    assert entry is not None
    assert _store(tmp_path, key=other).scan() == 0 and not entry.path.exists()


def test_least_recently_used_files_go_first_over_the_cap(tmp_path: Path) -> None:
    store = _store(tmp_path)
    size = store.save([1], STATE).file_bytes  # type: ignore[union-attr]
    capped = _store(tmp_path, cap=3 * size + size // 2)
    for first, mtime in ((1, 50.0), (2, 100.0), (3, 200.0)):
        entry = capped.save([first], STATE)
        assert entry is not None
        entry.mtime = mtime
    loaded = capped.best([1])[0]
    assert loaded is not None and capped.load(loaded) is not None  # [1] is now the newest
    capped.save([4], STATE)  # over the cap: [2], the least recently used, goes
    assert {int(e.tokens[0]) for e in (capped.best([t])[0] for t in (1, 2, 3, 4)) if e} == \
        {1, 3, 4}
    assert len(_files(capped)) == 3


def test_an_entry_bigger_than_the_cap_is_not_written(tmp_path: Path) -> None:
    store = _store(tmp_path, cap=100)
    assert store.save([1, 2], STATE) is None and not _files(store)


def test_indexing_reads_headers_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = memoryview(bytes(8 << 20))
    _store(tmp_path, cap=1 << 30).save(list(range(1000)), big)
    read: list[int] = []
    original = Path.open

    def counting_open(self: Path, *args: object, **kwargs: object) -> object:
        f = original(self, *args, **kwargs)  # type: ignore[call-overload]
        raw_read = f.read

        def counted(n: int = -1) -> bytes:
            data: bytes = raw_read(n)
            read.append(len(data))
            return data

        f.read = counted
        return f

    monkeypatch.setattr(Path, "open", counting_open)
    assert DiskCache(tmp_path / "cache", KEY, 1 << 30).scan() == 1
    assert 4000 <= sum(read) < 8000  # the token ids and a small header, not the 8 MiB state


def test_background_writes_are_done_after_flush(tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert store.save_later([5, 6, 7], STATE)
    store.flush()
    assert store.holds([5, 6, 7]) and len(_files(store)) == 1


def test_the_prompt_cache_finds_a_prefix_on_disk_after_a_restart(tmp_path: Path) -> None:
    config = DiskCacheConfig(tmp_path, KEY.model_sha256, 1 << 20)
    codec: StateCodec[bytes] = StateCodec(lambda s, n: memoryview(s)[:n], bytes)
    before: PromptCache[bytes] = PromptCache(1 << 20, config.open(KEY.params), codec)
    before.open_disk()
    assert before.persisting and not PromptCache[bytes](1 << 20).persisting
    before.put([1, 2, 3, 4], b"kv-state", 8)
    before.flush()

    after: PromptCache[bytes] = PromptCache(1 << 20, config.open(KEY.params), codec)
    after.open_disk()
    assert after.best([1, 2, 3, 4, 5]) == (None, 0)  # nothing in memory
    assert after.lookup([1, 2, 3, 4, 5], at_least=5)[0] is None  # not worth a read
    entry, shared = after.lookup([1, 2, 3, 4, 5], at_least=2)
    assert entry is not None and shared == 4
    assert entry.state == b"kv-state" and entry.source == "disk"
    after.take(entry)
    stats = after.stats()
    assert (stats.hits, stats.disk_hits, stats.disk_entries) == (1, 1, 1)
