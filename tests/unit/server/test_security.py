"""Host header parsing and the allowlist it is checked against."""

from __future__ import annotations

import asyncio
import json

import pytest
from starlette.types import Message, Receive, Scope, Send

from mlxjan.server.security import LOOPBACK_HOSTS, SecurityMiddleware, allowed_hosts, host_name
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


def test_allowed_hosts() -> None:
    assert allowed_hosts(Settings(host="127.0.0.1")) == LOOPBACK_HOSTS
    assert allowed_hosts(Settings(host="0.0.0.0")) == LOOPBACK_HOSTS
    assert allowed_hosts(Settings(host="Box.LAN", trusted_hosts=["API.example"])) == (
        LOOPBACK_HOSTS | {"box.lan", "api.example"})


def call_middleware(host: bytes) -> tuple[list[Message], bool]:
    """Run one GET through SecurityMiddleware; the messages sent and whether the app ran."""
    reached: list[bool] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(True)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "http", "method": "GET", "path": "/v1/models", "query_string": b"",
                    "headers": [(b"host", host)]}
    asyncio.run(SecurityMiddleware(app, Settings())(scope, receive, send))
    return sent, bool(reached)


@pytest.mark.parametrize("host", [b"localhost:1337", b"127.0.0.1", b"[::1]:1337"])
def test_middleware_lets_loopback_hosts_through(host: bytes) -> None:
    sent, reached = call_middleware(host)
    assert reached
    assert sent[0]["status"] == 200


@pytest.mark.parametrize("host", [b"evil.com:1337", b"[::1", b""])
def test_middleware_refuses_other_and_malformed_hosts(host: bytes) -> None:
    sent, reached = call_middleware(host)
    assert not reached
    assert sent[0]["status"] == 403
    body = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    assert body["error"]["code"] == "forbidden"
