"""Seals for reasoning text this server produced, so it can trust it when a client sends it
back: Anthropic `thinking` signatures, and the Responses API's `encrypted_content` (the text
itself, encrypted with AES-GCM, so a client that keeps no state can hand it back).

A seal is an HMAC-SHA256 over the text, bound to a context string (the local model id), under
one server secret kept in `<data dir>/secrets/reasoning.key` so seals survive restarts.
Protocol-free: callers decide what the text and the context are.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import tempfile
import threading
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger(__name__)

KEY_BYTES = 32
VERSION = b"\x01"  # the first byte of every seal: its format
SEAL_BYTES = len(VERSION) + hashlib.sha256().digest_size
DOMAIN = b"mlxjan reasoning seal v1\x00"
CIPHER_DOMAIN = b"mlxjan reasoning cipher v1\x00"  # the encryption key is derived apart
NONCE_BYTES = 12
FILE_MODE = 0o600
DIR_MODE = 0o700


def key_path(data_dir: Path) -> Path:
    return data_dir / "secrets" / "reasoning.key"


class Signer:
    """Signs and verifies reasoning text. The key is read (or made) on first use, so an app
    that never signs anything never touches the disk."""

    def __init__(self, path: Path | None = None, *, key: bytes | None = None) -> None:
        """`path`: the key file (read, or created when missing, unreadable or corrupt).
        `key`: a key held in memory only (tests)."""
        if (path is None) == (key is None):
            raise ValueError("a Signer needs a key file or a key, not both")
        if key is not None and len(key) != KEY_BYTES:
            raise ValueError(f"a signing key has {KEY_BYTES} bytes")
        self._path = path
        self._key = key
        self._lock = threading.Lock()

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> Signer:
        return cls(key_path(data_dir))

    def sign(self, text: str, *, context: str = "") -> str:
        """The seal of `text` in `context`, as base64 text."""
        return base64.b64encode(VERSION + self._mac(text, context)).decode("ascii")

    def verify(self, text: str, signature: str, *, context: str = "") -> bool:
        """Whether `signature` is this server's seal of `text` in `context` (constant time
        in the seal; a malformed one is refused before the key is read)."""
        try:
            raw = base64.b64decode(signature.encode("ascii"), validate=True)
        except (UnicodeEncodeError, binascii.Error):
            return False
        if len(raw) != SEAL_BYTES or raw[:1] != VERSION:
            return False
        return hmac.compare_digest(raw[1:], self._mac(text, context))

    def encrypt(self, text: str, *, context: str = "") -> str:
        """`text` encrypted and bound to `context`, as base64 text only this server (with
        this key) can read back."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._cipher().encrypt(nonce, text.encode(), context.encode())
        return base64.b64encode(VERSION + nonce + sealed).decode("ascii")

    def decrypt(self, token: str, *, context: str = "") -> str | None:
        """The text `encrypt` sealed in `context`; None for anything else (another key,
        another context, a changed or malformed token)."""
        try:
            raw = base64.b64decode(token.encode("ascii"), validate=True)
        except (UnicodeEncodeError, binascii.Error):
            return None
        if len(raw) <= len(VERSION) + NONCE_BYTES or raw[:1] != VERSION:
            return None
        nonce, sealed = raw[1:1 + NONCE_BYTES], raw[1 + NONCE_BYTES:]
        try:
            return self._cipher().decrypt(nonce, sealed, context.encode()).decode()
        except (InvalidTag, UnicodeDecodeError):
            return None

    def _cipher(self) -> AESGCM:
        return AESGCM(hmac.new(self._secret(), CIPHER_DOMAIN, hashlib.sha256).digest())

    def _mac(self, text: str, context: str) -> bytes:
        scope = context.encode()
        message = DOMAIN + len(scope).to_bytes(4, "big") + scope + text.encode()
        return hmac.new(self._secret(), message, hashlib.sha256).digest()

    def _secret(self) -> bytes:
        with self._lock:
            if self._key is None:
                assert self._path is not None
                self._key = load_or_create_key(self._path)
            return self._key


def load_or_create_key(path: Path) -> bytes:
    """The key in `path`; a missing, unreadable or corrupt file is replaced by a new key.
    Where no key can be stored, a key for this process only (seals then end with it)."""
    found = _read_key(path)
    if found is not None:
        _tighten(path, FILE_MODE)
        return found
    key = secrets.token_bytes(KEY_BYTES)
    try:
        return _install(path, key, replace=path.exists() or path.is_symlink())
    except OSError as exc:
        log.warning("cannot store the reasoning key at %s (%s): reasoning signatures will "
                    "not survive a restart", path, exc)
        return key


def _read_key(path: Path) -> bytes | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("the reasoning key at %s is unreadable (%s): making a new one", path, exc)
        return None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        log.warning("the reasoning key at %s is corrupt: making a new one", path)
        return None
    return key


def _install(path: Path, key: bytes, *, replace: bool) -> bytes:
    """Write `key` to `path` atomically (mode 0600, in a 0700 folder); returns the key now
    in the file: another process that made one first wins, so both use the same."""
    path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    _tighten(path.parent, DIR_MODE)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".reasoning-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:  # mkstemp makes it 0600
            out.write(key.hex() + "\n")
            out.flush()
            os.fsync(out.fileno())
        if replace:
            os.replace(temp, path)
            return key
        try:
            os.link(temp, path)  # never over a key another process has just made
        except FileExistsError:
            theirs = _read_key(path)
            if theirs is not None:
                return theirs
            os.replace(temp, path)
        return key
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)


def _tighten(path: Path, mode: int) -> None:
    """Take away any access beyond `mode` (a key file copied in with looser modes)."""
    with contextlib.suppress(OSError):
        if path.stat().st_mode & 0o777 & ~mode:
            path.chmod(mode)
