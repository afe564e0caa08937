"""A full server refuses at once: 503 + Retry-After (OpenAI), 529 overloaded (Anthropic)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import pytest

from mlxjan.engine.fake import FakeEngine
from mlxjan.settings import Settings
from tests.api.conftest import MODEL, Server, _serve

USER = [{"role": "user", "content": "hi"}]


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


def test_a_disconnected_stream_frees_its_place(busy: Server) -> None:
    for _ in range(3):  # more than the limit, one after another
        with busy.http.stream("POST", "/v1/chat/completions", json={
                "model": MODEL, "messages": USER, "stream": True}) as response:
            next(response.iter_lines())
    busy.engine.token_delay = 0.0
    reply = busy.client.chat.completions.create(model=MODEL, messages=USER)  # type: ignore[arg-type]
    assert reply.choices[0].message.content
