"""A full server refuses at once: 503 + Retry-After (OpenAI), 529 overloaded (Anthropic)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anthropic
import httpx
import pytest

from mlxjan.settings import Settings
from mlxjan.testing.fake_engine import FakeEngine
from tests.api.conftest import MODEL, Server, _serve

USER = [{"role": "user", "content": "hi"}]
LIMIT = 2  # places in the `endless` server


@pytest.fixture
def busy(tmp_path: Path) -> Iterator[Server]:
    engine = FakeEngine(MODEL, script=lambda _r: "slow " * 100, token_delay=0.05)
    yield from _serve(Settings(data_dir=tmp_path, max_pending_requests=2), engine)


def _hold_streams(server: Server, n: int) -> list[threading.Thread]:
    """n streaming requests in flight (one running, the rest queued behind it)."""

    def hold() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as http, http.stream(
                "POST", "/v1/chat/completions",
                json={"model": MODEL, "messages": USER, "stream": True}) as response:
            for _ in response.iter_lines():
                pass

    threads = [threading.Thread(target=hold) for _ in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while server.http.get("/v1/status").json()["requests"]["active"] < n:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return threads


def test_full_server_answers_503_and_529_then_recovers(busy: Server) -> None:
    threads = _hold_streams(busy, 2)
    response = busy.http.post("/v1/chat/completions", json={"model": MODEL, "messages": USER})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "overloaded"
    with pytest.raises(anthropic.APIStatusError) as exc:
        busy.claude.messages.create(model=MODEL, max_tokens=5, messages=USER)  # type: ignore[arg-type]
    assert exc.value.status_code == 529
    assert exc.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    for t in threads:
        t.join(30)
    # Once the streams end their places are free again.
    assert busy.client.chat.completions.create(model=MODEL, messages=USER).choices  # type: ignore[arg-type]


@pytest.fixture
def endless(tmp_path: Path) -> Iterator[Server]:
    """Answers that would stream for over half an hour: only a cancellation ends them, so a
    place or the engine thread that is free again was freed by the disconnect."""
    engine = FakeEngine(MODEL, script=lambda _r: "slow " * 100_000, token_delay=0.02,
                        context_length=200_000)
    yield from _serve(Settings(data_dir=tmp_path, max_pending_requests=LIMIT), engine)



def _wait_for(what: str, condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds:g} s: {what}"
        time.sleep(0.02)


def test_a_disconnected_stream_frees_its_place(endless: Server) -> None:
    def active() -> int:
        count: int = endless.http.get("/v1/status").json()["requests"]["active"]
        return count

    for n in range(LIMIT + 1):  # more streams than places, one after another
        with endless.http.stream("POST", "/v1/chat/completions", json={
                "model": MODEL, "messages": USER, "stream": True}) as response:
            # Admitted: a place was free, and the engine was free to start this answer.
            assert response.status_code == 200, f"stream {n}: {response.read()!r}"
            tokens = (line for line in response.iter_lines() if "slow" in line)
            next(tokens)
            next(tokens)  # generating now
            assert active() == 1
        # The client has gone: its place comes back, and the engine stops producing.
        _wait_for(f"stream {n}'s place freed after the client left", lambda: active() == 0)
        produced = endless.engine.tokens_produced
        time.sleep(0.5)  # 25 token delays
        assert endless.engine.tokens_produced - produced <= 1, \
            f"stream {n}: the engine went on generating for a client that left"
    reply = endless.client.chat.completions.create(  # type: ignore[arg-type]
        model=MODEL, messages=USER, max_tokens=3, timeout=10)
    assert reply.choices[0].message.content == "slow slow slow"
    assert active() == 0
