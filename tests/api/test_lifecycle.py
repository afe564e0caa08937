"""Models on demand through the real app: keep-alive from the body or a header, in both
APIs; `/v1/models` saying what is loaded; one load for many requests; the budget in
`/v1/status` and `mlxjan ps`."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from mlxjan.engine.base import Engine
from mlxjan.engine.supervisor import WorkerEngine
from mlxjan.runner import ps
from mlxjan.server.app import create_app
from mlxjan.settings import Settings
from mlxjan.testing.fake_engine import FakeEngine, fake_worker_spec
from mlxjan.testing.server import running

ASK: Any = [{"role": "user", "content": "hello"}]


@pytest.fixture
def engines() -> dict[str, FakeEngine]:
    return {name: FakeEngine(name, loaded=False) for name in ("alpha", "beta")}


@pytest.fixture
def url(tmp_path: Path, engines: dict[str, FakeEngine]) -> Iterator[str]:
    settings = Settings(data_dir=tmp_path, keep_alive="-1", memory_budget_bytes=2**30)
    handed: dict[str, Engine] = dict(engines)
    with running(create_app(settings, engines=handed)) as base:
        yield base


def _cards(url: str, **params: str) -> dict[str, dict[str, Any]]:
    body = httpx.get(f"{url}/v1/models", params=params).json()
    return {card["id"]: card for card in body["data"]}


def _wait_unloaded(engine: FakeEngine) -> None:
    deadline = time.monotonic() + 5
    while engine.loaded and time.monotonic() < deadline:
        time.sleep(0.02)


def test_models_say_which_are_loaded_and_filter_on_it(url: str) -> None:
    assert {m: c["loaded"] for m, c in _cards(url).items()} == {"alpha": False, "beta": False}
    assert _cards(url, loaded="true") == {}
    with openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client:
        client.chat.completions.create(model="alpha", messages=ASK)
        listed = client.models.list()
    assert [m.id for m in listed.data] == ["alpha", "beta"]
    loaded = _cards(url, loaded="true")
    assert list(loaded) == ["alpha"] and loaded["alpha"]["expires_at"] is None


def test_keep_alive_zero_in_the_body_unloads_after_the_answer(
        url: str, engines: dict[str, FakeEngine]) -> None:
    with openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client:
        client.chat.completions.create(model="alpha", messages=ASK,
                                       extra_body={"keep_alive": 0})
    _wait_unloaded(engines["alpha"])
    assert not engines["alpha"].loaded and engines["alpha"].loads == 1


def test_keep_alive_as_a_duration_sets_when_the_model_unloads(url: str) -> None:
    with anthropic.Anthropic(base_url=url, api_key="x", max_retries=0) as claude:
        claude.messages.create(model="beta", max_tokens=8, messages=ASK,
                               extra_body={"keep_alive": "10m"})
    expires = _cards(url)["beta"]["expires_at"]
    assert abs(expires - (time.time() + 600)) < 30


def test_the_keep_alive_header_serves_clients_that_cannot_add_fields(
        url: str, engines: dict[str, FakeEngine]) -> None:
    with anthropic.Anthropic(base_url=url, api_key="x", max_retries=0,
                             default_headers={"X-Keep-Alive": "0"}) as claude, \
            claude.messages.stream(model="beta", max_tokens=8, messages=ASK) as stream:
        assert stream.get_final_text()
    _wait_unloaded(engines["beta"])
    assert not engines["beta"].loaded


def test_a_bad_keep_alive_is_a_400_in_each_protocol(url: str,
                                                   engines: dict[str, FakeEngine]) -> None:
    with openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client, \
            pytest.raises(openai.BadRequestError) as oa:
        client.chat.completions.create(model="alpha", messages=ASK,
                                       extra_body={"keep_alive": "soon"})
    assert oa.value.code == "invalid_request" and "keep_alive" in oa.value.message
    with anthropic.Anthropic(base_url=url, api_key="x", max_retries=0) as claude, \
            pytest.raises(anthropic.BadRequestError) as an:
        claude.messages.create(model="alpha", max_tokens=8, messages=ASK,
                               extra_headers={"X-Keep-Alive": "1 week"})
    assert an.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert not any(e.loaded for e in engines.values())


def test_load_by_hand_takes_a_keep_alive_and_status_shows_the_budget(
        url: str, capsys: pytest.CaptureFixture[str]) -> None:
    loaded = httpx.post(f"{url}/v1/models/alpha/load", params={"keep_alive": "90s"})
    assert loaded.json() == {"id": "alpha", "loaded": True}
    status = httpx.get(f"{url}/v1/status").json()
    assert status["budget"] == {"bytes": 2**30, "used_bytes": 0, "max_models": 3,
                                "loaded_models": 1, "when_full": "wait"}
    (alpha,) = [m for m in status["models"] if m["model"] == "alpha"]
    assert alpha["residency"]["keep_alive_s"] == 90 and alpha["residency"]["requests"] == 0
    assert ps(Settings(port=int(url.rsplit(":", 1)[1]))) == 0
    out = capsys.readouterr().out
    assert "memory: 0.00 of 1.00 GiB held by 1 of at most 3 models (when full: wait)" in out
    assert "unloads in 9" in out  # 90 s, or 89 by the time it prints


def test_ten_requests_for_an_unloaded_model_start_one_worker(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[int] = []
    real_popen = subprocess.Popen

    def counting_popen(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = real_popen(*args, **kwargs)
        started.append(proc.pid)
        return proc

    monkeypatch.setattr(subprocess, "Popen", counting_popen)
    engines: dict[str, Engine] = {"w": WorkerEngine(fake_worker_spec("w", token_delay=0.01))}
    with running(create_app(Settings(data_dir=tmp_path), engines=engines)) as base:
        async def ten() -> list[str]:
            async with openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="x",
                                          max_retries=0) as client:
                answers = await asyncio.gather(*(
                    client.chat.completions.create(
                        model="w", messages=[{"role": "user", "content": f"n{i}"}])
                    for i in range(10)))
            return [a.choices[0].message.content or "" for a in answers]

        assert asyncio.run(ten()) == [f"You said: n{i}" for i in range(10)]
    assert len(started) == 1
