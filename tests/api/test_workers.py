"""A model served by a real worker process behind the real app: what the SDKs see when the
worker crashes, what `/health`, `/v1/status` and `mlxjan ps` say, and `mlxjan load|unload`."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

from mlxjan.engine import supervisor
from mlxjan.engine.base import Engine
from mlxjan.engine.supervisor import WorkerEngine
from mlxjan.runner import load_or_unload, ps
from mlxjan.server.app import create_app
from mlxjan.settings import Settings
from mlxjan.testing.fake_engine import fake_worker_spec
from mlxjan.testing.server import running

MODEL = "fake-model"
ASK = [{"role": "user", "content": " ".join(f"w{i}" for i in range(100))}]


@pytest.fixture
def url(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(supervisor, "BACKOFF_S", (0.0, 0.0, 0.0))
    engines: dict[str, Engine] = {MODEL: WorkerEngine(fake_worker_spec(MODEL,
                                                                       token_delay=0.02))}
    with running(create_app(Settings(data_dir=tmp_path), engines=engines)) as base:
        yield base


def _worker(url: str) -> dict[str, object]:
    (record,) = httpx.get(f"{url}/v1/status").json()["models"]
    worker: dict[str, object] = record["worker"]
    return worker


def _kill_worker(url: str, sig: signal.Signals = signal.SIGSEGV) -> int:
    pid = _worker(url)["pid"]
    assert isinstance(pid, int) and pid != os.getpid()
    os.kill(pid, sig)
    return pid


def test_openai_stream_ends_with_an_in_band_error_and_the_next_request_is_answered(
        url: str) -> None:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
    stream = client.chat.completions.create(model=MODEL, messages=ASK, stream=True)  # type: ignore[arg-type]
    next(stream)
    _kill_worker(url)
    with pytest.raises(openai.APIError) as caught:
        for _ in stream:
            pass
    assert "killed by SIGSEGV" in caught.value.message
    worker = httpx.get(f"{url}/health").json()["models"][MODEL]
    assert (worker["state"], worker["pid"], worker["last_exit"]) == (
        "crashed", None, "killed by SIGSEGV")
    answer = client.chat.completions.create(model=MODEL, max_tokens=2, messages=ASK)  # type: ignore[arg-type]
    assert answer.choices[0].message.content == "You said:"


def test_anthropic_stream_ends_with_an_error_event(url: str) -> None:
    claude = anthropic.Anthropic(base_url=url, api_key="none", max_retries=0)
    with claude.messages.stream(model=MODEL, max_tokens=500, messages=ASK) as stream:  # type: ignore[arg-type]
        texts = stream.text_stream
        next(texts)
        _kill_worker(url)
        with pytest.raises(anthropic.APIStatusError, match="killed by SIGSEGV"):
            for _ in texts:
                pass


def test_a_model_failed_after_repeated_crashes_is_refused_until_loaded_by_hand(
        url: str, capsys: pytest.CaptureFixture[str]) -> None:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
    port = int(url.rsplit(":", 1)[1])
    for _ in range(supervisor.CRASHES_TO_FAIL):
        assert load_or_unload(Settings(port=port), MODEL, "load") == 0
        pid = _kill_worker(url, signal.SIGKILL)
        while _worker(url)["pid"] == pid:
            pass
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model=MODEL, max_tokens=2, messages=ASK)  # type: ignore[arg-type]
    assert refused.value.status_code == 503
    assert "marked failed" in refused.value.message and "SIGKILL" in refused.value.message
    claude = anthropic.Anthropic(base_url=url, api_key="none", max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as also:
        claude.messages.create(model=MODEL, max_tokens=2, messages=ASK)  # type: ignore[arg-type]
    assert also.value.status_code == 503
    assert ps(Settings(port=port)) == 0
    assert "worker: failed (its worker process killed by SIGKILL" in capsys.readouterr().out
    assert load_or_unload(Settings(port=port), MODEL, "load") == 0
    assert client.chat.completions.create(model=MODEL, max_tokens=2, messages=ASK)  # type: ignore[arg-type]


def test_mlxjan_unload_ends_the_worker_and_ps_says_so(
        url: str, capsys: pytest.CaptureFixture[str]) -> None:
    port = int(url.rsplit(":", 1)[1])
    assert load_or_unload(Settings(port=port), MODEL, "load") == 0
    pid = _worker(url)["pid"]
    assert ps(Settings(port=port)) == 0
    assert f"worker: ready, pid {pid}" in capsys.readouterr().out
    assert load_or_unload(Settings(port=port), MODEL, "unload") == 0
    assert _worker(url)["state"] == "stopped"
    assert load_or_unload(Settings(port=port), "no-such-model", "unload") == 1
    assert "no-such-model" in capsys.readouterr().err
