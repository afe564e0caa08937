"""`mlxjan doctor`: port, service, models and memory checks over a temporary data dir."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mlxjan import doctor as doctor_module
from mlxjan.cli import main
from mlxjan.doctor import Check, available_memory, doctor, run_checks
from mlxjan.engine.llamacpp import kernels as llamacpp_kernels
from mlxjan.engine.llamacpp.kernels import ProbeResult
from mlxjan.models.catalog import CATALOG
from mlxjan.models.store import ModelStore, new_manifest
from mlxjan.settings import DEFAULT_MODEL, Settings
from mlxjan.testing.server import free_port

PLENTY = 1 << 40
TOO_LITTLE = 1 << 20


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No MLXJAN_* from the shell, no config file, HOME in tmp, plenty of memory."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(doctor_module, "available_memory", lambda: PLENTY)
    return home


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port held by a plain listener that accepts and hangs up (not mlxjan)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.05)
    stop = threading.Event()

    def accept_and_close() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.close()

    thread = threading.Thread(target=accept_and_close)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        server.close()


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(data_dir=tmp_path / "data", port=free_port(), **overrides)


def _by_name(checks: list[Check]) -> dict[str, Check]:
    names = [c.name for c in checks]
    assert len(names) == len(set(names))
    return {c.name: c for c in checks}


def _install_fake(store: ModelStore, model_id: str) -> None:
    with store.staging(model_id) as stage:
        (stage / "model.gguf").write_bytes(b"weights")
        store.install(stage, new_manifest(id=model_id, format="gguf", source="test",
                                          file="model.gguf", sha256="0" * 64, size=7))


def test_healthy_machine(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    checks = _by_name(run_checks(settings))
    assert list(checks) == ["port", "service", "models", "cpu", "memory"]
    assert all(c.ok for c in checks.values())
    assert checks["port"].detail == f"127.0.0.1:{settings.port} is free"
    assert "not installed" in checks["service"].detail
    assert checks["models"].detail.startswith("0 installed")
    assert f"'{DEFAULT_MODEL}' will be fetched" in checks["models"].detail
    assert "GiB available" in checks["memory"].detail


def test_port_held_by_another_program(tmp_path: Path, busy_port: int) -> None:
    checks = _by_name(run_checks(Settings(data_dir=tmp_path / "data", port=busy_port)))
    assert not checks["port"].ok
    assert checks["port"].detail == f"127.0.0.1:{busy_port} is held by another program"


def test_port_held_by_mlxjan_is_fine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor_module, "port_state", lambda host, port: "mlxjan")
    checks = _by_name(run_checks(_settings(tmp_path)))
    assert checks["port"].ok and "mlxjan is serving" in checks["port"].detail


def test_installed_service_is_reported(tmp_path: Path, isolated: Path) -> None:
    from mlxjan.service import manager_for

    definition = manager_for("auto").definition
    assert definition.is_relative_to(isolated)  # HOME is honoured
    definition.parent.mkdir(parents=True)
    definition.write_text("stand-in")
    checks = _by_name(run_checks(_settings(tmp_path)))
    assert checks["service"].ok and checks["service"].detail == f"installed ({definition})"


def _probe_result(failure: str | None) -> ProbeResult:
    rows = np.log(np.full((4, 8), 1 / 8, dtype=np.float32))
    rows[:, 0] += 1  # tokens 1 and on are predicted as 0: plausibly not, logged only
    return ProbeResult(None if failure else rows, (0, 0, 0, 0), frozenset({"AVX2"}), failure)


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """What the fake self-check probes answer (failures, None for right logits), in turn."""
    answers: list[str | None] = []
    monkeypatch.setattr(llamacpp_kernels, "probe_in_child",
                        lambda weights, plan: _probe_result(answers.pop(0)))
    return answers


def test_installed_default_model(tmp_path: Path, probes: list[str | None]) -> None:
    settings = _settings(tmp_path, default_model="my-model", engine="llamacpp")
    _install_fake(ModelStore(settings.data_dir), "my-model")
    probes.append(None)
    checks = _by_name(run_checks(settings))
    assert checks["kernels"].ok and "no repacked kernels" in checks["kernels"].detail
    assert checks["models"].ok
    assert checks["models"].detail.startswith("1 installed")
    assert "'my-model' installed" in checks["models"].detail
    assert "memory" in checks


def test_kernels_that_crash_are_bad_with_what_to_do(tmp_path: Path,
                                                    probes: list[str | None]) -> None:
    settings = _settings(tmp_path, default_model="my-model", engine="llamacpp")
    _install_fake(ModelStore(settings.data_dir), "my-model")
    probes.append("the process was killed by SIGSEGV")
    kernels = _by_name(run_checks(settings))["kernels"]
    assert not kernels.ok and "SIGSEGV" in kernels.detail and "reinstall" in kernels.detail
    again = _by_name(run_checks(settings))["kernels"]  # remembered: no probe left to pop
    assert again == kernels


def test_unknown_default_model_is_bad(tmp_path: Path) -> None:
    checks = _by_name(run_checks(_settings(tmp_path, default_model="not-in-the-catalog")))
    assert not checks["models"].ok
    assert "memory" not in checks  # no size to compare against


def test_too_little_memory_is_bad(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor_module, "available_memory", lambda: TOO_LITTLE)
    checks = _by_name(run_checks(_settings(tmp_path)))
    assert not checks["memory"].ok
    need = CATALOG[DEFAULT_MODEL].size * doctor_module.MEMORY_OVERHEAD
    assert f"needs about {(need + doctor_module.KV_AND_BUFFERS) / 2**30:.1f} GiB" \
        in checks["memory"].detail


def test_unknown_memory_skips_the_check(tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor_module, "available_memory", lambda: None)
    assert "memory" not in _by_name(run_checks(_settings(tmp_path)))


def test_available_memory_is_plausible() -> None:
    memory = available_memory()
    assert memory is None or 0 < memory < 1 << 50


def test_doctor_prints_one_line_per_check(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    settings = _settings(tmp_path)
    assert doctor(settings) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(run_checks(settings)) == 5
    assert all(line.startswith("ok ") for line in lines)
    assert [line.split()[1] for line in lines] == ["port", "service", "models", "cpu", "memory"]


def test_doctor_fails_when_a_check_fails(tmp_path: Path, busy_port: int,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert doctor(Settings(data_dir=tmp_path / "data", port=busy_port)) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5
    assert lines[0].startswith("BAD port")
    assert all(line.startswith("ok ") for line in lines[1:])


@pytest.mark.usefixtures("restore_logging")
def test_cli_doctor(tmp_path: Path, busy_port: int,
                    capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    assert main(["doctor", "--port", str(free_port()), *data]) == 0
    assert main(["doctor", "--port", str(busy_port), *data]) == 1
    assert "held by another program" in capsys.readouterr().out
