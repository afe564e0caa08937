"""signing.py: HMAC seals over reasoning text, under a key kept in the data dir."""

from __future__ import annotations

import base64
import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from mlxjan.server.signing import KEY_BYTES, Signer, key_path, load_or_create_key

TEXT = "Let me think: 2 + 2 is 4."


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_round_trip() -> None:
    signer = Signer(key=os.urandom(KEY_BYTES))
    seal = signer.sign(TEXT, context="qwen")
    assert signer.verify(TEXT, seal, context="qwen")
    assert signer.sign(TEXT, context="qwen") == seal  # deterministic
    assert base64.b64decode(seal, validate=True)


@pytest.mark.parametrize("text", ["", "ünïcødé 🙂\n\n", "x" * 100_000])
def test_round_trip_of_any_text(text: str) -> None:
    signer = Signer(key=os.urandom(KEY_BYTES))
    assert signer.verify(text, signer.sign(text))


def test_a_changed_text_does_not_verify() -> None:
    signer = Signer(key=os.urandom(KEY_BYTES))
    seal = signer.sign(TEXT, context="qwen")
    assert not signer.verify(TEXT + " ", seal, context="qwen")
    assert not signer.verify(TEXT.replace("4", "5"), seal, context="qwen")


def test_a_seal_is_bound_to_its_context() -> None:
    signer = Signer(key=os.urandom(KEY_BYTES))
    assert not signer.verify(TEXT, signer.sign(TEXT, context="qwen"), context="llama")
    # Context and text are kept apart: moving characters across the boundary changes it.
    assert signer.sign("bc", context="a") != signer.sign("c", context="ab")


def test_a_tampered_seal_does_not_verify() -> None:
    signer = Signer(key=os.urandom(KEY_BYTES))
    raw = bytearray(base64.b64decode(signer.sign(TEXT)))
    for position in (0, 1, len(raw) - 1):
        changed = bytearray(raw)
        changed[position] ^= 1
        assert not signer.verify(TEXT, base64.b64encode(bytes(changed)).decode())


def test_another_keys_seal_does_not_verify() -> None:
    ours, theirs = Signer(key=os.urandom(KEY_BYTES)), Signer(key=os.urandom(KEY_BYTES))
    assert not ours.verify(TEXT, theirs.sign(TEXT))


@pytest.mark.parametrize("seal", ["", "sig", "not base64!", "ÄÖÜ", "AAAA",
                                  base64.b64encode(bytes(33)).decode(),
                                  base64.b64encode(b"\x02" + bytes(32)).decode()])
def test_malformed_seals_are_refused_without_reading_the_key(tmp_path: Path,
                                                             seal: str) -> None:
    signer = Signer.for_data_dir(tmp_path)
    assert not signer.verify(TEXT, seal)
    assert not (tmp_path / "secrets").exists()


def test_no_key_file_until_first_use(tmp_path: Path) -> None:
    signer = Signer.for_data_dir(tmp_path)
    assert not key_path(tmp_path).exists()
    signer.sign(TEXT)
    assert key_path(tmp_path).exists()


def test_the_key_survives_a_restart(tmp_path: Path) -> None:
    seal = Signer.for_data_dir(tmp_path).sign(TEXT, context="qwen")
    assert Signer.for_data_dir(tmp_path).verify(TEXT, seal, context="qwen")


def test_key_file_and_folder_modes(tmp_path: Path) -> None:
    Signer.for_data_dir(tmp_path).sign(TEXT)
    path = key_path(tmp_path)
    assert path == tmp_path / "secrets" / "reasoning.key"
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert len(bytes.fromhex(path.read_text())) == KEY_BYTES
    assert [p.name for p in path.parent.iterdir()] == ["reasoning.key"]  # no temp file left


def test_a_loose_key_file_is_tightened(tmp_path: Path) -> None:
    Signer.for_data_dir(tmp_path).sign(TEXT)
    path = key_path(tmp_path)
    before = path.read_text()
    path.chmod(0o644)
    path.parent.chmod(0o755)
    Signer.for_data_dir(tmp_path).sign(TEXT)
    assert mode(path) == 0o600
    assert path.read_text() == before  # the same key, only its mode changed


@pytest.mark.parametrize("content", [b"", b"not hex at all\n", b"abcd\n",
                                     b"00" * (KEY_BYTES + 1), b"\xff\xfe" * 40])
def test_a_corrupt_key_file_is_replaced(tmp_path: Path, content: bytes,
                                        caplog: pytest.LogCaptureFixture) -> None:
    path = key_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="mlxjan.server.signing"):
        seal = Signer.for_data_dir(tmp_path).sign(TEXT)
    assert "reasoning key" in caplog.text
    assert len(bytes.fromhex(path.read_text())) == KEY_BYTES
    assert mode(path) == 0o600
    assert Signer.for_data_dir(tmp_path).verify(TEXT, seal)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_key_file_is_replaced(tmp_path: Path) -> None:
    path = key_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("00" * KEY_BYTES)
    path.chmod(0)
    seal = Signer.for_data_dir(tmp_path).sign(TEXT)
    assert mode(path) == 0o600
    assert Signer.for_data_dir(tmp_path).verify(TEXT, seal)


def test_a_key_file_that_cannot_be_read_is_replaced(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # The same path as above for any user, root included: the read fails once.
    path = key_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("00" * KEY_BYTES)
    real_read = Path.read_text
    failures: list[Path] = []

    def read_once_denied(self: Path, *args: Any, **kwargs: Any) -> str:
        if self == path and not failures:
            failures.append(self)
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_once_denied)
    seal = Signer.for_data_dir(tmp_path).sign(TEXT)
    assert failures and path.read_text() != "00" * KEY_BYTES
    assert Signer.for_data_dir(tmp_path).verify(TEXT, seal)


def test_a_key_made_meanwhile_by_another_process_wins(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # Both found no key; the other process wrote its key first: this one reads it back.
    theirs = os.urandom(KEY_BYTES)
    path = key_path(tmp_path)
    path.parent.mkdir(parents=True, mode=0o700)
    real_link = os.link

    def other_process_first(src: str, dst: str) -> None:
        Path(dst).write_text(theirs.hex())
        real_link(src, dst)

    monkeypatch.setattr(os, "link", other_process_first)
    assert load_or_create_key(path) == theirs
    assert [p.name for p in path.parent.iterdir()] == ["reasoning.key"]


def test_where_no_key_can_be_stored_the_process_still_signs(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    signer = Signer.for_data_dir(blocked)
    with caplog.at_level(logging.WARNING, logger="mlxjan.server.signing"):
        seal = signer.sign(TEXT)
    assert "will not survive a restart" in caplog.text
    assert signer.verify(TEXT, seal)


def test_a_signer_needs_exactly_one_key_source(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Signer()
    with pytest.raises(ValueError):
        Signer(tmp_path / "k", key=bytes(KEY_BYTES))
    with pytest.raises(ValueError):
        Signer(key=b"short")


def test_encrypt_round_trip() -> None:
    key = os.urandom(KEY_BYTES)
    signer = Signer(key=key)
    for text in (TEXT, "", "ünïcødé 🙂\n\n", "x" * 100_000):
        token = signer.encrypt(text, context="qwen")
        assert signer.decrypt(token, context="qwen") == text
        assert base64.b64decode(token, validate=True)
    token = signer.encrypt(TEXT, context="qwen")
    assert token != signer.encrypt(TEXT, context="qwen")  # a fresh nonce each time
    assert TEXT not in token
    assert TEXT.encode() not in base64.b64decode(token)
    # Another process with the same key reads it back.
    assert Signer(key=key).decrypt(token, context="qwen") == TEXT


def test_decrypt_refuses_what_this_server_did_not_seal_here(tmp_path: Path) -> None:
    signer = Signer(key=os.urandom(KEY_BYTES))
    token = signer.encrypt(TEXT, context="qwen")
    assert signer.decrypt(token, context="qwen") == TEXT
    assert signer.decrypt(token, context="llama") is None
    assert signer.decrypt(token) is None
    assert Signer(key=os.urandom(KEY_BYTES)).decrypt(token, context="qwen") is None
    raw = base64.b64decode(token)
    for position in (0, 1, 13, len(raw) - 1):  # version, nonce, text, tag
        changed = bytearray(raw)
        changed[position] ^= 1
        assert signer.decrypt(base64.b64encode(bytes(changed)).decode(), context="qwen") is None
    assert signer.decrypt(base64.b64encode(raw[:-1]).decode(), context="qwen") is None
    # A signature is no token, and a token is no signature.
    assert signer.decrypt(signer.sign(TEXT, context="qwen"), context="qwen") is None
    assert not signer.verify(TEXT, token, context="qwen")
    for malformed in ("", "not base64!", "ÄÖÜ", token[:-2] + "!!", "AAAA",
                      base64.b64encode(b"\x01" + bytes(12)).decode()):
        assert signer.decrypt(malformed, context="qwen") is None
    # Malformed tokens are refused before the key is read.
    lazy = Signer.for_data_dir(tmp_path)
    assert lazy.decrypt("not base64!") is None
    assert lazy.decrypt(base64.b64encode(b"\x02" + bytes(40)).decode()) is None
    assert not (tmp_path / "secrets").exists()
