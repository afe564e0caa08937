"""Prompt-cache entries on disk, so long prefixes survive a restart.

One file per entry under `<cache dir>/<model sha256[:16]>/`: a JSON header (format version,
model digest, the engine parameters a state is only valid under, token count, payload
checksum), the prompt's token ids, then the engine's state bytes, which this module never
interprets (llama.cpp sequence state, or whatever an MLX engine serializes). Files are written
to a temporary name, fsynced and renamed, so a crash leaves either the old file or the new one.
Indexing at start-up reads headers and token ids only; the checksum is checked when an entry
is loaded. A file that is corrupt or made under other parameters is deleted, never trusted.
Least recently used files (by mtime, refreshed on every load) go first over the size cap.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import secrets
import struct
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from mlxjan.engine.tokens import TokenIds, common_prefix

log = logging.getLogger(__name__)

MAGIC = b"MLXJKVC\n"
FORMAT_VERSION = 1
SUFFIX = ".kvc"
_LENGTH = struct.Struct("<I")
_MAX_HEADER = 1 << 16
_PENDING_WRITES = 4  # snapshots waiting for the writer; more are dropped, not queued
_STALE_TMP_SECONDS = 3600  # a temporary file this old belongs to a writer that died

Params = Mapping[str, str | int | float | bool]
Tokens = npt.NDArray[np.int32]


class CacheFileError(Exception):
    """A cache file that cannot be used: truncated, corrupt, or made for something else."""


@dataclass(frozen=True)
class StoreKey:
    """What a state is valid for: the model file's digest and the engine parameters that
    change the state's layout (context size, KV types, flash attention, library version)."""

    model_sha256: str
    params: Params


@dataclass
class DiskEntry:
    path: Path
    tokens: Tokens
    file_bytes: int
    mtime: float


class DiskCache:
    """The files of one model's cache directory, their index and a background writer."""

    def __init__(self, directory: Path, key: StoreKey, cap_bytes: int) -> None:
        self.directory = directory
        self.key = key
        self.cap = cap_bytes
        self._index: dict[Path, DiskEntry] = {}
        self._lock = threading.Lock()
        self._pending: queue.Queue[tuple[npt.NDArray[np.int32], memoryview] | None] = queue.Queue(
            _PENDING_WRITES)
        self._writer: threading.Thread | None = None
        self.hits = 0

    # --- index ------------------------------------------------------------------------------

    def scan(self) -> int:
        """Index the directory from headers; delete what is unusable. Returns the count."""
        self.directory.mkdir(parents=True, exist_ok=True)
        entries: dict[Path, DiskEntry] = {}
        for path in self.directory.iterdir():
            if path.name.endswith(".tmp"):
                _drop_stale_tmp(path)
            elif path.suffix == SUFFIX:
                try:
                    with path.open("rb") as f:
                        tokens, _, _ = self._read_header(f, path.stat().st_size)
                    entries[path] = DiskEntry(path, tokens, path.stat().st_size,
                                              path.stat().st_mtime)
                except (OSError, CacheFileError) as exc:
                    self._discard(path, exc)
        with self._lock:
            self._index = entries
        self._evict()
        return len(self._index)

    def best(self, prompt: TokenIds) -> tuple[DiskEntry | None, int]:
        """The entry sharing the longest prefix with `prompt`, and that length."""
        best: DiskEntry | None = None
        best_len = 0
        with self._lock:
            entries = list(self._index.values())
        for entry in entries:
            shared = common_prefix(entry.tokens, prompt)
            if shared > best_len:
                best, best_len = entry, shared
        return best, best_len

    def holds(self, tokens: TokenIds) -> bool:
        """Whether some entry covers all of `tokens`."""
        with self._lock:
            entries = list(self._index.values())
        return any(len(e.tokens) >= len(tokens) and common_prefix(e.tokens, tokens) ==
                   len(tokens) for e in entries)

    def stats(self) -> tuple[int, int]:
        with self._lock:
            return len(self._index), sum(e.file_bytes for e in self._index.values())

    # --- reading ----------------------------------------------------------------------------

    def load(self, entry: DiskEntry) -> bytearray | None:
        """The entry's state bytes, checksum verified; None (file deleted) if unusable."""
        try:
            with entry.path.open("rb") as f:
                tokens, state_bytes, checksum = self._read_header(f, entry.path.stat().st_size)
                state = bytearray(state_bytes)
                if f.readinto(state) != len(state):
                    raise CacheFileError("truncated state")
            digest = hashlib.sha256(tokens.tobytes())
            digest.update(state)
            if digest.hexdigest() != checksum:
                raise CacheFileError("checksum mismatch")
            if not np.array_equal(tokens, entry.tokens):
                raise CacheFileError("tokens changed since indexing")
            os.utime(entry.path)  # most recently used, for eviction
        except FileNotFoundError:  # evicted meanwhile (by us or a process sharing the dir)
            self._forget(entry.path)
            return None
        except (OSError, CacheFileError) as exc:
            self._discard(entry.path, exc)
            return None
        entry.mtime = time.time()
        self.hits += 1
        return state

    def _read_header(self, f: BinaryIO, file_bytes: int) -> tuple[Tokens, int, str]:
        """The token ids, state length and checksum; the file is left at the state."""
        if f.read(len(MAGIC)) != MAGIC:
            raise CacheFileError("not a prompt-cache file")
        raw = f.read(_LENGTH.size)
        if len(raw) != _LENGTH.size or _LENGTH.unpack(raw)[0] > _MAX_HEADER:
            raise CacheFileError("bad header length")
        try:
            header = json.loads(f.read(_LENGTH.unpack(raw)[0]))
            n_tokens, state_bytes = int(header["n_tokens"]), int(header["state_bytes"])
            checksum = str(header["sha256"])
            valid = (header["version"] == FORMAT_VERSION
                     and header["model_sha256"] == self.key.model_sha256
                     and header["params"] == dict(self.key.params))
        except (ValueError, KeyError, TypeError) as exc:
            raise CacheFileError(f"bad header: {exc}") from exc
        if not valid:
            raise CacheFileError("made for another model, engine or format version")
        if f.tell() + 4 * n_tokens + state_bytes != file_bytes:
            raise CacheFileError("file size does not match its header")
        tokens = np.frombuffer(f.read(4 * n_tokens), dtype="<i4").astype(np.int32)
        return tokens, state_bytes, checksum

    # --- writing ----------------------------------------------------------------------------

    def save(self, tokens: TokenIds, state: memoryview) -> DiskEntry | None:
        """Write an entry now (atomically), then evict over the cap. None if not written."""
        ids = np.asarray(tokens, dtype="<i4")
        header = json.dumps({
            "version": FORMAT_VERSION, "model_sha256": self.key.model_sha256,
            "params": dict(self.key.params), "n_tokens": len(ids),
            "state_bytes": state.nbytes,
            "sha256": _checksum(ids, state),
        }).encode()
        size = len(MAGIC) + _LENGTH.size + len(header) + ids.nbytes + state.nbytes
        if size > self.cap:
            return None
        path = self.directory / (hashlib.sha256(ids.tobytes()).hexdigest()[:32] + SUFFIX)
        try:
            _write_atomically(path, (MAGIC, _LENGTH.pack(len(header)), header, ids.tobytes(),
                                     state))
        except OSError as exc:
            log.warning("prompt cache: could not write %s: %s", path, exc)
            return None
        entry = DiskEntry(path, ids.astype(np.int32), size, time.time())
        with self._lock:
            # Entries this one extends are covered by it.
            for old in [e for e in self._index.values() if e.path != path
                        and len(e.tokens) <= len(ids)
                        and common_prefix(e.tokens, ids) == len(e.tokens)]:
                self._unlink(old.path)
            self._index[path] = entry
        self._evict()
        return entry

    def save_later(self, tokens: TokenIds, state: memoryview) -> bool:
        """Queue an entry for the writer thread; False (dropped) when it is behind."""
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_loop, daemon=True,
                                            name=f"cache-writer-{self.directory.name}")
            self._writer.start()
        try:
            self._pending.put_nowait((np.asarray(tokens, dtype="<i4"), state))
        except queue.Full:
            log.info("prompt cache: writer busy, %d-token entry not persisted", len(tokens))
            return False
        return True

    def flush(self, timeout: float = 30.0) -> None:
        """Wait for queued writes, then stop the writer (a later save_later restarts it)."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        try:
            self._pending.put(None, timeout=timeout)
        except queue.Full:
            log.warning("prompt cache: writer stuck, pending writes dropped")
            return
        writer.join(timeout)
        if writer.is_alive():
            log.warning("prompt cache: writes still pending after %.0f s", timeout)

    def _write_loop(self) -> None:
        while (item := self._pending.get()) is not None:
            tokens, state = item
            try:
                if not self.holds(tokens):
                    self.save(tokens, state)
            except Exception:  # a writer that died would leave flush() waiting on a full queue
                log.exception("prompt cache: persisting an entry failed")

    # --- eviction ---------------------------------------------------------------------------

    def _evict(self) -> None:
        with self._lock:
            total = sum(e.file_bytes for e in self._index.values())
            for entry in sorted(self._index.values(), key=lambda e: e.mtime):
                if total <= self.cap:
                    break
                self._unlink(entry.path)
                total -= entry.file_bytes

    def _unlink(self, path: Path) -> None:
        """Delete a file and its index entry; the caller holds the lock."""
        self._index.pop(path, None)
        path.unlink(missing_ok=True)

    def _forget(self, path: Path) -> None:
        with self._lock:
            self._index.pop(path, None)

    def _discard(self, path: Path, why: Exception) -> None:
        log.warning("prompt cache: ignoring and deleting %s (%s)", path, why)
        with self._lock:
            try:
                self._unlink(path)
            except OSError as exc:
                log.warning("prompt cache: could not delete %s: %s", path, exc)


def _checksum(tokens: Tokens, state: memoryview) -> str:
    digest = hashlib.sha256(tokens.tobytes())
    digest.update(state)
    return digest.hexdigest()


def _write_atomically(path: Path, parts: Sequence[bytes | memoryview]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with tmp.open("wb") as f:
            for part in parts:
                f.write(part)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    # The rename itself is durable only once the directory is synced.
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _drop_stale_tmp(path: Path) -> None:
    try:
        if time.time() - path.stat().st_mtime > _STALE_TMP_SECONDS:
            path.unlink()
    except OSError:
        pass  # another process finished or removed it


@dataclass(frozen=True)
class DiskCacheConfig:
    """Where a model's entries go and how much room they get, from the settings; the engine
    adds the parameters its states depend on."""

    root: Path
    model_sha256: str
    cap_bytes: int

    def open(self, params: Params) -> DiskCache:
        return DiskCache(self.root / self.model_sha256[:16],
                         StoreKey(self.model_sha256, params), self.cap_bytes)
