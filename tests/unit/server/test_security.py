"""Host header parsing and the allowlist it is checked against."""

from __future__ import annotations

import pytest

from mlxjan.server.security import LOOPBACK_HOSTS, allowed_hosts, host_name
from mlxjan.settings import Settings


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("localhost:1337", "localhost"),
        ("LocalHost:1337", "localhost"),
        ("[::1]:80", "::1"),
        ("[::1]", "::1"),
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.1:1337", "127.0.0.1"),
        ("evil.com:1337", "evil.com"),
        ("localhost.evil.com", "localhost.evil.com"),
        ("user@evil.com", "evil.com"),
        ("", ""),
    ],
)
def test_host_name(header: str, expected: str) -> None:
    assert host_name(header) == expected


@pytest.mark.parametrize("header", ["[::1", "[not-ipv6]:80", "::1]"])
def test_malformed_host_header_is_never_a_loopback_name(header: str) -> None:
    # A garbled Host header must be refused (403), not crash the middleware (500).
    assert host_name(header) not in LOOPBACK_HOSTS


def test_allowed_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLXJAN_TRUSTED_HOSTS", raising=False)
    assert allowed_hosts(Settings(host="127.0.0.1")) == LOOPBACK_HOSTS
    assert allowed_hosts(Settings(host="0.0.0.0")) == LOOPBACK_HOSTS
    assert allowed_hosts(Settings(host="Box.LAN", trusted_hosts=["API.example"])) == (
        LOOPBACK_HOSTS | {"box.lan", "api.example"})
