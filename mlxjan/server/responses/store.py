"""Stored Responses API answers, for `previous_response_id` and GET/DELETE /v1/responses/{id}.

One embedded SQLite file (`<data dir>/responses.sqlite3`), opened on first use, so an app
that never stores anything never creates it. Each row is a response as last sent to the
client plus the input items of its request and the conversation before them, all as JSON
text: the store knows nothing of the wire schema. Rows older than `max_age_s` expire, and
past `max_bytes` the oldest go first. A database that cannot be read (not a database,
corrupt, from a newer mlxjan) is moved aside and replaced by an empty one: stored responses
are a convenience, never a reason for a request to fail.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from mlxjan.settings import Settings

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1  # PRAGMA user_version of the database this module writes
BUSY_TIMEOUT_MS = 5000  # another process (a second server on the same data dir) writing
DIR_MODE = 0o700
FILE_MODE = 0o600  # conversations are private; SQLite gives -wal/-shm the same mode
SECONDS_PER_DAY = 86400.0

# `size` is last in each row, after texts that spill to overflow pages, so summing or
# walking sizes through the table would read every stored byte: the index covers them.
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS responses (
        id TEXT PRIMARY KEY,
        created_at REAL NOT NULL,
        model TEXT NOT NULL,
        status TEXT NOT NULL,
        response TEXT NOT NULL,
        input TEXT NOT NULL,
        history TEXT NOT NULL,
        size INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS responses_created_at ON responses (created_at, size)",
)

T = TypeVar("T")


@dataclass(frozen=True)
class StoredResponse:
    id: str
    created_at: float  # Unix time
    model: str
    status: str  # "completed", "incomplete", "failed", "in_progress", "queued", "cancelled"
    response_json: str  # the Response object as last sent to the client
    input_json: str  # this request's input items (a JSON array)
    history_json: str  # the conversation items before this request's input (a JSON array)

    def size(self) -> int:
        """Bytes this entry counts against the cap: its three JSON texts."""
        return sum(
            len(text.encode("utf-8"))
            for text in (self.response_json, self.input_json, self.history_json)
        )


class UnusableDatabaseError(sqlite3.DatabaseError):
    """The file opens as SQLite but is not one this module can use (newer, fails checks):
    handled like a corrupt one, never raised to callers."""


class ResponseStore:
    """Thread-safe: one connection behind a lock, for the event loop thread and
    `asyncio.to_thread` workers alike. Calls block on disk I/O."""

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        max_age_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`max_bytes`: the stored entries' total size cap (0 stores nothing);
        `max_age_s`: entries older than this (by `created_at`, against `clock`) expire."""
        self._path = path
        self._max_bytes = max_bytes
        self._max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    @classmethod
    def for_settings(cls, settings: Settings) -> ResponseStore:
        return cls(
            settings.responses_db,
            max_bytes=settings.responses_store_bytes,
            max_age_s=settings.responses_store_days * SECONDS_PER_DAY,
        )

    @property
    def path(self) -> Path:
        return self._path

    def put(self, stored: StoredResponse) -> None:
        """Insert or replace `stored` atomically, then drop expired entries and the oldest
        ones past the cap. An entry larger than the whole cap is not stored (and an earlier
        version of it is removed, so a get never returns a stale status)."""
        if self._max_bytes == 0:
            return
        size = stored.size()
        with self._lock:
            if size > self._max_bytes:
                log.warning(
                    "response %s is not stored: %d bytes is more than responses_store_bytes "
                    "(%d)", stored.id, size, self._max_bytes,
                )
                if self._usable_without_creating():
                    self._retrying(lambda conn: _delete(conn, stored.id, expiry=self._expiry()))
                return
            self._retrying(lambda conn: self._insert(conn, stored, size))

    def get(self, response_id: str) -> StoredResponse | None:
        """The stored response, or None when it was never stored, was deleted or expired."""
        with self._lock:
            if not self._usable_without_creating():
                return None
            return self._retrying(lambda conn: self._select(conn, response_id))

    def delete(self, response_id: str) -> bool:
        """Remove a stored response; whether there was one."""
        with self._lock:
            if not self._usable_without_creating():
                return False
            return self._retrying(
                lambda conn: _delete(conn, response_id, expiry=self._expiry())
            )

    def close(self) -> None:
        """Close the database (idempotent). A later call opens it again."""
        with self._lock:
            self._disconnect()

    # --- Queries, run with the lock held on an open connection ---

    def _insert(self, conn: sqlite3.Connection, stored: StoredResponse, size: int) -> None:
        with conn:
            conn.execute("BEGIN IMMEDIATE")  # take the write lock now, not on upgrade
            cursor = conn.execute(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    stored.id, stored.created_at, stored.model, stored.status,
                    stored.response_json, stored.input_json, stored.history_json, size,
                ),
            )
            self._prune(conn, keep_rowid=cursor.lastrowid)

    def _prune(self, conn: sqlite3.Connection, *, keep_rowid: int | None) -> None:
        conn.execute("DELETE FROM responses WHERE created_at < ?", (self._expiry(),))
        (total,) = conn.execute("SELECT COALESCE(SUM(size), 0) FROM responses").fetchone()
        excess = int(total) - self._max_bytes
        if excess <= 0:
            return
        doomed: list[tuple[int]] = []
        rows = conn.execute("SELECT rowid, size FROM responses ORDER BY created_at")
        try:
            for rowid, size in rows:
                if rowid == keep_rowid:
                    continue  # the entry just put fits on its own (checked before)
                doomed.append((rowid,))
                excess -= size
                if excess <= 0:
                    break
        finally:
            rows.close()
        conn.executemany("DELETE FROM responses WHERE rowid = ?", doomed)

    def _select(self, conn: sqlite3.Connection, response_id: str) -> StoredResponse | None:
        # Expired rows linger until the next put prunes them: they are missing already.
        row = conn.execute(
            "SELECT id, created_at, model, status, response, input, history FROM responses "
            "WHERE id = ? AND created_at >= ?",
            (response_id, self._expiry()),
        ).fetchone()
        if row is None:
            return None
        return StoredResponse(
            id=row[0], created_at=row[1], model=row[2], status=row[3],
            response_json=row[4], input_json=row[5], history_json=row[6],
        )

    def _expiry(self) -> float:
        """Entries created before this are expired."""
        return self._clock() - self._max_age_s

    # --- The connection ---

    def _usable_without_creating(self) -> bool:
        """Reads need no database until something was stored: don't create one for them."""
        return self._conn is not None or self._path.exists()

    def _retrying(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """Run `operation`; if the database turns out corrupt, move it aside and run it once
        more on a new, empty one (where a get finds nothing and a put lands)."""
        try:
            return operation(self._connection())
        except sqlite3.DatabaseError as exc:
            if not _is_corruption(exc):
                raise
            self._disconnect()
            self._move_aside(exc)
        return operation(self._connection())

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        self._path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        try:
            return _connect(self._path)
        except sqlite3.DatabaseError as exc:
            if not _is_corruption(exc):
                raise  # locked, unreadable, disk full: the file may be fine
            self._move_aside(exc)
        return _connect(self._path)

    def _disconnect(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(sqlite3.Error):  # a corrupt database may fail to close
                conn.close()

    def _move_aside(self, reason: Exception) -> None:
        """Rename the database and its -wal/-shm files to `<name>.corrupt-<unix time>`
        (plus -wal/-shm, so the set still opens as one database for a post-mortem)."""
        aside = _free_name(self._path.with_name(f"{self._path.name}.corrupt-{int(time.time())}"))
        for suffix in ("", "-wal", "-shm"):
            source = self._path.with_name(self._path.name + suffix)
            with contextlib.suppress(FileNotFoundError):
                os.replace(source, aside.with_name(aside.name + suffix))
        log.warning(
            "the stored responses database %s is unusable (%s): moved it aside to %s and "
            "started an empty one", self._path, reason, aside,
        )


def _connect(path: Path) -> sqlite3.Connection:
    """An open, checked database at `path` with the current schema (created if new)."""
    if not path.exists():
        # Create it ourselves so that it is private from the start.
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, FILE_MODE))
    # Autocommit mode: transactions are the explicit BEGINs, nothing implicit.
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        _check(conn)
        conn.execute("PRAGMA journal_mode = WAL")
        # With WAL, NORMAL loses at most the last commits on power loss, never integrity.
        conn.execute("PRAGMA synchronous = NORMAL")
        _migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _check(conn: sqlite3.Connection) -> None:
    """Raise for a database this module must not use; sqlite3.DatabaseError for one that is
    not a database at all (the first read finds out)."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise UnusableDatabaseError(
            f"schema version {version}, newer than this mlxjan's {SCHEMA_VERSION}"
        )
    # The first problem is enough (the whole list can be long); O(size), once per open.
    (verdict,) = conn.execute("PRAGMA quick_check(1)").fetchone()
    if verdict != "ok":
        summary = " ".join(str(verdict).split())[:200]
        raise UnusableDatabaseError(f"quick_check: {summary}")


def _migrate(conn: sqlite3.Connection) -> None:
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version == SCHEMA_VERSION:
        return
    with conn:
        conn.execute("BEGIN IMMEDIATE")  # two servers opening a new file at once
        for statement in SCHEMA:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _delete(conn: sqlite3.Connection, response_id: str, *, expiry: float) -> bool:
    """Remove the row; whether it was there and not yet expired (an expired one is already
    missing to a get, so a DELETE of it is a 404 too)."""
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        live = conn.execute(
            "SELECT 1 FROM responses WHERE id = ? AND created_at >= ?", (response_id, expiry)
        ).fetchone()
        conn.execute("DELETE FROM responses WHERE id = ?", (response_id,))
        return live is not None


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    """SQLITE_CORRUPT and SQLITE_NOTADB raise plain DatabaseError; its other subclasses are
    other troubles (OperationalError: locked, read-only, disk full, cannot open) where moving
    the file aside would lose good data."""
    return type(exc) is sqlite3.DatabaseError or isinstance(exc, UnusableDatabaseError)


def _free_name(path: Path) -> Path:
    """`path`, or `path.1`, `path.2`, ... when a database was moved aside this second."""
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}.{n}")
    return candidate
