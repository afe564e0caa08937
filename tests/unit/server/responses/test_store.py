"""store.py: Responses API answers kept in SQLite, with age and size caps, and recovery
from a database that cannot be read."""

from __future__ import annotations

import json
import logging
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mlxjan.server.responses.store import ResponseStore, StoredResponse
from mlxjan.settings import Settings

DAY = 86400.0
NOW = 1_700_000_000.0

MakeStore = Callable[..., ResponseStore]


class FakeClock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "responses.sqlite3"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_store(db: Path, clock: FakeClock) -> Iterator[MakeStore]:
    """Stores on `db` (unless told another path), all closed at the end of the test."""
    stores: list[ResponseStore] = []

    def make(
        path: Path | None = None, *, max_bytes: int = 10**6, max_age_s: float = 30 * DAY
    ) -> ResponseStore:
        store = ResponseStore(path or db, max_bytes=max_bytes, max_age_s=max_age_s,
                              clock=clock)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


def entry(
    response_id: str = "resp_1",
    *,
    created_at: float = NOW,
    status: str = "completed",
    text: str = "Hello!",
    pad: int = 0,
) -> StoredResponse:
    response = {"id": response_id, "object": "response", "status": status,
                "output": [{"type": "message", "content": [{"type": "output_text",
                                                             "text": text}]}]}
    return StoredResponse(
        id=response_id,
        created_at=created_at,
        model="qwen",
        status=status,
        response_json=json.dumps(response),
        input_json=json.dumps([{"role": "user", "content": "Hi" + " " * pad}]),
        history_json="[]",
    )


def rows(path: Path) -> list[str]:
    """The ids really in the file, read past the store."""
    conn = sqlite3.connect(path)
    try:
        return sorted(row[0] for row in conn.execute("SELECT id FROM responses"))
    finally:
        conn.close()


def aside_files(path: Path) -> list[Path]:
    return sorted(path.parent.glob(path.name + ".corrupt-*"))


def test_round_trip(make_store: MakeStore) -> None:
    store = make_store()
    stored = entry(text="héllo ✓")
    store.put(stored)
    assert store.get("resp_1") == stored
    assert store.get("resp_2") is None


def test_get_missing_is_none(make_store: MakeStore) -> None:
    store = make_store()
    store.put(entry("resp_1"))
    assert store.get("resp_nope") is None


def test_replace_updates_status_and_response(make_store: MakeStore, db: Path) -> None:
    store = make_store()
    store.put(entry(status="in_progress", text=""))
    store.put(entry(status="completed", text="Done."))
    got = store.get("resp_1")
    assert got is not None
    assert got.status == "completed"
    assert json.loads(got.response_json)["output"][0]["content"][0]["text"] == "Done."
    assert rows(db) == ["resp_1"]  # replaced, not added


def test_delete(make_store: MakeStore, db: Path) -> None:
    store = make_store()
    store.put(entry("resp_1"))
    store.put(entry("resp_2"))
    assert store.delete("resp_1") is True
    assert store.get("resp_1") is None
    assert store.delete("resp_1") is False
    assert store.delete("resp_never") is False
    assert rows(db) == ["resp_2"]


def test_expired_entries_are_missing_then_pruned(
    make_store: MakeStore, clock: FakeClock, db: Path
) -> None:
    store = make_store(max_age_s=10 * DAY)
    store.put(entry("resp_old", created_at=NOW))
    store.put(entry("resp_new", created_at=NOW + 5 * DAY))
    clock.now = NOW + 10 * DAY  # exactly the age limit: still there
    assert store.get("resp_old") is not None
    clock.now = NOW + 11 * DAY
    assert store.get("resp_old") is None
    assert store.get("resp_new") is not None
    assert rows(db) == ["resp_new", "resp_old"]  # a get only hides it
    store.put(entry("resp_newest", created_at=clock.now))
    assert rows(db) == ["resp_new", "resp_newest"]  # the put pruned it


def test_deleting_an_expired_entry_is_false(
    make_store: MakeStore, clock: FakeClock, db: Path
) -> None:
    store = make_store(max_age_s=DAY)
    store.put(entry("resp_old", created_at=NOW))
    clock.now = NOW + 2 * DAY
    assert store.delete("resp_old") is False  # already missing to a get
    assert rows(db) == []  # but gone all the same


def test_size_cap_prunes_oldest_first(make_store: MakeStore, db: Path) -> None:
    size = entry(pad=1000).size()
    store = make_store(max_bytes=3 * size + size // 2)  # room for three
    for i in range(5):
        store.put(entry(f"resp_{i}", created_at=NOW + i, pad=1000))
    assert rows(db) == ["resp_2", "resp_3", "resp_4"]
    assert store.get("resp_0") is None
    assert store.get("resp_1") is None
    assert store.get("resp_4") is not None


def test_size_cap_keeps_the_entry_just_put_even_if_older(
    make_store: MakeStore, db: Path
) -> None:
    # A background response stored as queued long ago, finished now and bigger.
    store = make_store(max_bytes=3000)
    store.put(entry("resp_bg", created_at=NOW, status="queued"))
    store.put(entry("resp_a", created_at=NOW + 1, pad=800))
    store.put(entry("resp_b", created_at=NOW + 2, pad=800))
    store.put(entry("resp_bg", created_at=NOW, status="completed", pad=1200))
    assert "resp_bg" in rows(db)
    got = store.get("resp_bg")
    assert got is not None
    assert got.status == "completed"
    assert rows(db) == ["resp_b", "resp_bg"]  # the oldest other one made room


def test_entry_larger_than_cap_is_refused(
    make_store: MakeStore, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_store(max_bytes=2000)
    store.put(entry("resp_a", created_at=NOW))
    store.put(entry("resp_b", created_at=NOW + 1))
    with caplog.at_level(logging.WARNING, logger="mlxjan.server.responses.store"):
        store.put(entry("resp_huge", created_at=NOW + 2, pad=5000))
    assert store.get("resp_huge") is None
    assert rows(db) == ["resp_a", "resp_b"]  # nothing was pruned for it
    assert any("resp_huge" in r.getMessage() and "not stored" in r.getMessage()
               for r in caplog.records)


def test_refused_replacement_drops_the_stale_version(make_store: MakeStore, db: Path) -> None:
    store = make_store(max_bytes=2000)
    store.put(entry("resp_bg", status="in_progress"))
    store.put(entry("resp_bg", status="completed", pad=5000))
    assert store.get("resp_bg") is None  # not a stale in_progress forever
    assert rows(db) == []


def test_zero_bytes_stores_nothing(
    make_store: MakeStore, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_store(max_bytes=0)
    with caplog.at_level(logging.WARNING, logger="mlxjan.server.responses.store"):
        store.put(entry())
    assert caplog.records == []  # the user's choice: no warning per response
    assert store.get("resp_1") is None
    assert store.delete("resp_1") is False
    assert not db.exists()
    assert not db.parent.exists()


def test_lazy_open(make_store: MakeStore, db: Path) -> None:
    store = make_store()
    assert not db.exists()
    assert store.get("resp_1") is None  # reads do not create it either
    assert store.delete("resp_1") is False
    assert not db.exists()
    store.put(entry())
    assert db.exists()


def test_file_and_folder_are_private(make_store: MakeStore, db: Path) -> None:
    make_store().put(entry())
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700


def test_wal_mode(make_store: MakeStore, db: Path) -> None:
    store = make_store()
    store.put(entry())
    conn = sqlite3.connect(db)
    try:
        (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
        (version,) = conn.execute("PRAGMA user_version").fetchone()
    finally:
        conn.close()
    assert mode == "wal"
    assert version == 1


def test_survives_reopen(make_store: MakeStore, db: Path) -> None:
    first = make_store()
    stored = entry()
    first.put(stored)
    first.close()
    assert make_store().get("resp_1") == stored
    assert first.get("resp_1") == stored  # a closed store opens again on use


def test_garbage_file_is_moved_aside(
    make_store: MakeStore, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db.parent.mkdir(parents=True)
    garbage = b"not a database" * 100
    db.write_bytes(garbage)
    store = make_store()
    with caplog.at_level(logging.WARNING, logger="mlxjan.server.responses.store"):
        assert store.get("resp_1") is None
        store.put(entry())
    (aside,) = aside_files(db)
    assert aside.read_bytes() == garbage
    assert store.get("resp_1") == entry()
    assert rows(db) == ["resp_1"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "moved it aside" in warnings[0].getMessage()


def test_newer_schema_is_moved_aside(
    make_store: MakeStore, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db.parent.mkdir(parents=True)
    conn = sqlite3.connect(db)
    try:
        conn.execute("CREATE TABLE future (x)")
        conn.execute("PRAGMA user_version = 99")
        conn.commit()
    finally:
        conn.close()
    store = make_store()
    with caplog.at_level(logging.WARNING, logger="mlxjan.server.responses.store"):
        store.put(entry())
    (aside,) = aside_files(db)
    conn = sqlite3.connect(aside)
    try:
        assert conn.execute("PRAGMA user_version").fetchone() == (99,)  # kept intact
    finally:
        conn.close()
    assert store.get("resp_1") == entry()
    assert any("schema version 99" in r.getMessage() for r in caplog.records)


def test_damaged_file_is_moved_aside(
    make_store: MakeStore, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file whose header is fine but whose pages fail PRAGMA quick_check."""
    db.parent.mkdir(parents=True)
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA page_size = 4096")
        conn.execute("CREATE TABLE t (x)")
        conn.executemany("INSERT INTO t VALUES (?)", [("x" * 500,)] * 200)
        conn.commit()
    finally:
        conn.close()
    with db.open("r+b") as file:
        file.seek(4096 * 2 + 8)  # page 3, a leaf of t: its cell pointers
        file.write(b"\xff" * 40)
    store = make_store()
    with caplog.at_level(logging.WARNING, logger="mlxjan.server.responses.store"):
        store.put(entry())
    assert len(aside_files(db)) == 1
    assert store.get("resp_1") == entry()
    assert any("quick_check" in r.getMessage() for r in caplog.records)


def corrupt_while_open(db: Path) -> None:
    """Break the table's schema behind the store's back: its next query finds the
    database malformed (SQLITE_CORRUPT), as after a disk fault."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        (version,) = conn.execute("PRAGMA schema_version").fetchone()
        conn.execute("PRAGMA writable_schema = ON")
        conn.execute("UPDATE sqlite_master SET sql = 'garbage' WHERE name = 'responses'")
        conn.execute(f"PRAGMA schema_version = {version + 1}")
    finally:
        conn.close()


def test_corrupted_while_open_get_recovers(
    make_store: MakeStore, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_store()
    store.put(entry())
    corrupt_while_open(db)
    with caplog.at_level(logging.WARNING, logger="mlxjan.server.responses.store"):
        assert store.get("resp_1") is None
    assert len(aside_files(db)) == 1
    assert any("moved it aside" in r.getMessage() for r in caplog.records)
    store.put(entry("resp_2"))
    assert rows(db) == ["resp_2"]


def test_corrupted_while_open_put_retries(
    make_store: MakeStore, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_store()
    store.put(entry("resp_1"))
    corrupt_while_open(db)
    with caplog.at_level(logging.WARNING, logger="mlxjan.server.responses.store"):
        store.put(entry("resp_2"))
    assert store.get("resp_2") == entry("resp_2")
    assert rows(db) == ["resp_2"]
    assert len(aside_files(db)) == 1


def test_locked_database_is_not_moved_aside(
    make_store: MakeStore, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store()
    store.put(entry())
    monkeypatch.setattr("mlxjan.server.responses.store.BUSY_TIMEOUT_MS", 50)
    other = make_store()  # opens with the short timeout
    assert other.get("resp_1") is not None
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.put(entry("resp_2"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert aside_files(db) == []
    assert other.get("resp_1") is not None


def test_concurrent_puts_all_land(make_store: MakeStore, db: Path) -> None:
    store = make_store()
    ids = [[f"resp_{t}_{i}" for i in range(25)] for t in range(8)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(ids))

    def worker(names: list[str]) -> None:
        try:
            start.wait()
            for name in names:
                store.put(entry(name))
                assert store.get(name) is not None
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(names,)) for names in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    everything = sorted(name for names in ids for name in names)
    assert rows(db) == everything
    assert all(store.get(name) is not None for name in everything)


def test_for_settings(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, responses_store_bytes=5000,
                        responses_store_days=2.0)
    assert settings.responses_db == tmp_path / "responses.sqlite3"
    store = ResponseStore.for_settings(settings)
    try:
        assert store.path == settings.responses_db
        store.put(entry("resp_huge", pad=10_000))  # over 5000 bytes: refused
        assert not settings.responses_db.exists()
        now = time.time()
        store.put(entry("resp_day", created_at=now - 1 * DAY))
        store.put(entry("resp_3days", created_at=now - 3 * DAY))  # past 2 days
        assert store.get("resp_day") is not None
        assert store.get("resp_3days") is None
        assert rows(settings.responses_db) == ["resp_day"]
    finally:
        store.close()


def test_settings_defaults() -> None:
    fields = Settings.model_fields
    assert fields["responses_store_bytes"].default == 256 * 1024**2
    assert fields["responses_store_days"].default == 30.0
