"""Each model in its own worker process, on the real server with real models: a native
crash costs only that worker's requests, a model that cannot load says why, unloading gives
the memory back, and no worker outlives the server (SIGTERM or SIGKILL)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from mlxjan.models.store import ModelStore, new_manifest
from mlxjan.settings import DEFAULT_MODEL
from tests.e2e.conftest import (
    TINY_MLX_MODEL,
    ServerProcess,
    e2e_home,
    pull,
    serve_process,
)

pytestmark = pytest.mark.e2e
GEMMA = "gemma-3-270m"
LONG = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]


@pytest.fixture(scope="module")
def server(default_model_path: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServerProcess]:
    """A server of this module's own (its workers get killed), small contexts."""
    pull(GEMMA)
    with serve_process(tmp_path_factory.mktemp("workers"), "--context-length", "2048") as s:
        yield s


def _client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0,
                         timeout=120)


def _worker(url: str, model: str) -> dict[str, object]:
    status = httpx.get(f"{url}/v1/status", timeout=10).json()
    for record in status["models"]:
        if record["model"] == model:
            worker: dict[str, object] = record["worker"]
            return worker
    raise AssertionError(f"{model} is not in the status: {status}")


def _worker_pid(url: str, model: str) -> int:
    pid = _worker(url, model)["pid"]
    assert isinstance(pid, int), pid
    return pid


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status  # a zombie has ended; only its entry is left


def _wait_gone(pid: int, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _running(pid):
            return True
        time.sleep(0.1)
    return False


def _maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def test_a_segfault_mid_answer_costs_only_that_workers_request(server: ServerProcess) -> None:
    client = _client(server)
    client.chat.completions.create(model=GEMMA, max_tokens=1,
                                   messages=[{"role": "user", "content": "hi"}])
    other: dict[str, object] = {}

    def other_model() -> None:  # a second model's answer, streaming across the crash
        stream = client.chat.completions.create(
            model=GEMMA, messages=[{"role": "user", "content": "Once upon a time"}],
            max_tokens=48, stream=True, temperature=0.0)
        chunks = list(stream)
        other["text"] = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        other["finish"] = [c.choices[0].finish_reason for c in chunks if c.choices][-1]

    stream = client.chat.completions.create(model=DEFAULT_MODEL, messages=LONG,
                                            max_tokens=400, stream=True)
    received = [next(stream) for _ in range(3)]
    crashed = _worker_pid(server.url, DEFAULT_MODEL)
    gemma = _worker_pid(server.url, GEMMA)
    assert crashed not in (gemma, server.proc.pid)
    assert "libllama" in _maps(crashed) and "libllama" not in _maps(server.proc.pid)
    beside = threading.Thread(target=other_model)
    beside.start()
    os.kill(crashed, signal.SIGSEGV)
    with pytest.raises(openai.APIError) as caught:
        for _ in stream:
            pass
    beside.join(120)
    assert received and "SIGSEGV" in caught.value.message
    assert other["finish"] == "length" and other["text"]
    # The API process lives on, the other worker was untouched, the crash is on record.
    assert server.proc.poll() is None
    assert _worker_pid(server.url, GEMMA) == gemma
    health = httpx.get(f"{server.url}/health", timeout=10).json()
    assert health["models"][DEFAULT_MODEL]["last_exit"] == "killed by SIGSEGV"
    # The next request to the crashed model is answered by a new worker.
    again = client.chat.completions.create(model=DEFAULT_MODEL, max_tokens=5,
                                           messages=[{"role": "user", "content": "Say OK."}])
    assert again.choices[0].message.content
    assert _worker_pid(server.url, DEFAULT_MODEL) != crashed


def test_a_segfault_on_the_mlx_engine_ends_the_anthropic_stream_in_band(
        mlx_server_url: str) -> None:
    with anthropic.Anthropic(base_url=mlx_server_url, api_key="local", max_retries=0,
                             timeout=120) as claude:
        with claude.messages.stream(model=TINY_MLX_MODEL, max_tokens=2000,
                                    messages=LONG) as stream:  # type: ignore[arg-type]
            texts = stream.text_stream
            next(texts)
            pid = _worker_pid(mlx_server_url, TINY_MLX_MODEL)
            assert "libmlx" in _maps(pid)
            os.kill(pid, signal.SIGSEGV)
            with pytest.raises(anthropic.APIStatusError) as caught:
                for _ in texts:
                    pass
        assert "SIGSEGV" in str(caught.value)
        answer = claude.messages.create(model=TINY_MLX_MODEL, max_tokens=3,
                                        messages=[{"role": "user", "content": "hi"}])
        assert answer.usage.output_tokens > 0
    assert _worker_pid(mlx_server_url, TINY_MLX_MODEL) != pid


def test_a_model_that_cannot_load_says_why(default_model_path: Path,
                                           tmp_path: Path) -> None:
    home = tmp_path / "home"
    store = ModelStore(home)
    with store.staging("broken") as staged:
        folder = staged / "model"
        folder.mkdir()
        with open(default_model_path, "rb") as whole:  # the GGUF header, then nothing
            (folder / "broken.gguf").write_bytes(whole.read(1 << 20))
        store.install(folder, new_manifest(id="broken", format="gguf", source="test",
                                           file="broken.gguf", sha256="1" * 64,
                                           size=1 << 20, context_length=2048))
    with serve_process(tmp_path, env={"MLXJAN_HOME": str(home)}) as s:
        with _client(s) as client, pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.create(model="broken", max_tokens=3,
                                           messages=[{"role": "user", "content": "hi"}])
        assert "broken" in caught.value.message
        worker = _worker(s.url, "broken")
        assert worker["state"] in ("crashed", "failed") and worker["last_error"]
        assert s.proc.poll() is None


def test_unloading_gives_the_memory_back(server: ServerProcess) -> None:
    url = server.url
    _client(server).chat.completions.create(model=DEFAULT_MODEL, max_tokens=1,
                                            messages=[{"role": "user", "content": "hi"}])
    httpx.post(f"{url}/v1/models/{GEMMA}/unload", timeout=60).raise_for_status()
    httpx.post(f"{url}/v1/models/{DEFAULT_MODEL}/unload", timeout=60).raise_for_status()
    idle = _rss_mib(server.proc.pid)
    httpx.post(f"{url}/v1/models/{DEFAULT_MODEL}/load", timeout=120).raise_for_status()
    pid = _worker_pid(url, DEFAULT_MODEL)
    loaded = idle + _rss_mib(pid)
    httpx.post(f"{url}/v1/models/{DEFAULT_MODEL}/unload", timeout=60).raise_for_status()
    assert _wait_gone(pid)
    after = _rss_mib(server.proc.pid)
    assert loaded > idle + 300, (idle, loaded)  # the model's weights and KV cache
    assert after < idle + 50, (idle, loaded, after)
    assert _worker(url, DEFAULT_MODEL)["state"] == "stopped"


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_no_worker_outlives_the_server(sig: signal.Signals, default_model_path: Path,
                                       tmp_path: Path) -> None:
    with serve_process(tmp_path, "--context-length", "2048") as s:
        with _client(s) as client:
            client.chat.completions.create(model=DEFAULT_MODEL, max_tokens=1,
                                           messages=[{"role": "user", "content": "hi"}])
        pid = _worker_pid(s.url, DEFAULT_MODEL)
        os.kill(s.proc.pid, sig)
        status = s.proc.wait(30)
        assert _wait_gone(pid), f"worker {pid} outlived the server (signal {sig.name})"
        if sig == signal.SIGTERM:
            assert status == 0  # drained and stopped its workers, then exited cleanly
    assert e2e_home().is_dir()
