"""The load-time self-check against kernel paths made wrong on purpose (tests/e2e/faults):
the real server, the real default model, real probe children. A wrong path must never serve
an answer nor take the server down: the server falls back to the plain kernels, or refuses
the model with a typed error while staying up."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from mlxjan.settings import DEFAULT_MODEL
from tests.e2e.conftest import serve_process

pytestmark = pytest.mark.e2e
FAULTS = Path(__file__).parent / "faults"
QUESTION = {"model": DEFAULT_MODEL, "temperature": 0, "max_tokens": 48, "messages": [
    {"role": "user", "content": "Write a Python function add(a, b) that returns a + b. "
                                "Only the code."}]}


@contextmanager
def faulty_server(default_model_path: Path, tmp_path: Path, fault: str) -> Iterator[str]:
    """A server whose llama.cpp is broken as `fault` says, with a data dir of its own (so
    no remembered verdict is shared) holding the installed default model."""
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    (home / "models" / DEFAULT_MODEL).symlink_to(default_model_path.parent)
    env = {"MLXJAN_HOME": str(home), "MLXJAN_TEST_FAULT": fault, "PYTHONPATH": str(FAULTS)}
    with serve_process(tmp_path, env=env) as server:
        yield server.url
        assert server.proc.poll() is None, "the server died"
        log = server.log.read_text()
    assert "Segmentation" not in log


def _ask(url: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json=QUESTION, timeout=300)


def _kernels(url: str) -> str:
    models = httpx.get(f"{url}/v1/status").json()["models"]
    return str(models[0]["kernels"])


def _served_correct_code(reply: httpx.Response) -> None:
    assert reply.status_code == 200, reply.text
    code = reply.json()["choices"][0]["message"]["content"]
    assert "def add(a, b)" in code and "return a + b" in code, code


@pytest.mark.parametrize("fault", ["repacked-garbage", "repacked-crash"])
def test_a_wrong_repacked_path_never_serves(default_model_path: Path, tmp_path: Path,
                                            fault: str) -> None:
    with faulty_server(default_model_path, tmp_path, fault) as url:
        _served_correct_code(_ask(url))
        kernels = _kernels(url)
    log = (tmp_path / next(p.name for p in tmp_path.glob("serve-*.log"))).read_text()
    if "AMX" in kernels:  # this CPU's rule keeps repacking off: the bad path never loads
        assert "failed the self-check" not in log
        return
    assert "failed the self-check" in kernels, kernels
    cause = "SIGSEGV" if fault.endswith("crash") else "disagrees"
    lines = [line for line in log.splitlines() if "WARNING" in line and "self-check" in line]
    assert len(lines) == 1 and cause in lines[0], log


def test_every_path_wrong_refuses_the_model_and_stays_up(default_model_path: Path,
                                                         tmp_path: Path) -> None:
    with faulty_server(default_model_path, tmp_path, "all-crash") as url:
        for _ in range(2):  # the verdict is remembered: the second refusal is immediate
            reply = _ask(url)
            assert reply.status_code == 500
            error = reply.json()["error"]
            assert error["code"] == "model_self_check_failed"
            assert "SIGSEGV" in error["message"] and "reinstall" in error["message"]
        anthropic = httpx.post(f"{url}/v1/messages", timeout=60, json={
            "model": DEFAULT_MODEL, "max_tokens": 8,
            "messages": [{"role": "user", "content": "hi"}]})
        assert anthropic.json()["type"] == "error", anthropic.text
        assert httpx.get(f"{url}/health").status_code == 200
    checks = list((tmp_path / "home" / "self-checks").glob("*.json"))
    assert len(checks) == 1 and json.loads(checks[0].read_text())["refused"]


def test_the_real_path_passes_and_is_remembered(default_model_path: Path,
                                                tmp_path: Path) -> None:
    with faulty_server(default_model_path, tmp_path, "") as url:
        _served_correct_code(_ask(url))
        kernels = _kernels(url)
    assert "failed" not in kernels, kernels
    assert len(list((tmp_path / "home" / "self-checks").glob("*.json"))) == 1
