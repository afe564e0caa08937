"""The servers and pulls an e2e test starts see none of the developer's own mlxjan settings,
and use the suite's data dir, not the user's (tests/e2e/conftest.py: `e2e_env`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx
import pytest

from mlxjan.settings import DEFAULT_MODEL, default_data_dir
from tests.conftest import NO_CONFIG
from tests.e2e.conftest import e2e_env, e2e_home, serve_process

pytestmark = pytest.mark.e2e


@pytest.fixture
def developer_shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test process's environment as a developer's shell: a config file with a key,
    MLXJAN_* variables (a key, another data dir and default model); returns that data dir."""
    config = tmp_path / "config" / "mlxjan" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('api_key = "x"\n')
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("MLXJAN_CONFIG", str(config))
    monkeypatch.setenv("MLXJAN_API_KEY", "y")
    monkeypatch.setenv("MLXJAN_HOME", str(tmp_path / "developer-data"))
    monkeypatch.setenv("MLXJAN_DEFAULT_MODEL", "not-installed")
    return tmp_path / "developer-data"


def _mlxjan_vars(env: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in env.items() if name.upper().startswith("MLXJAN_")}


def test_e2e_env_holds_only_the_suites_settings(developer_shell: Path) -> None:
    assert _mlxjan_vars(e2e_env()) == {"MLXJAN_CONFIG": str(NO_CONFIG),
                                       "MLXJAN_HOME": str(e2e_home())}
    assert not NO_CONFIG.exists()
    assert _mlxjan_vars(e2e_env({"MLXJAN_HOME": "/elsewhere"}))["MLXJAN_HOME"] == "/elsewhere"


def test_the_e2e_data_dir_is_not_the_users() -> None:
    assert "MLXJAN_HOME" not in os.environ  # so this is the user's real data dir
    assert e2e_home() != default_data_dir()


def test_a_server_sees_no_developer_settings(default_model_path: Path, developer_shell: Path,
                                             tmp_path: Path) -> None:
    assert default_model_path.is_relative_to(e2e_home())
    with serve_process(tmp_path) as server:
        environ = Path(f"/proc/{server.proc.pid}/environ")
        if sys.platform == "linux":  # the process's own environment, as the kernel holds it
            entries = environ.read_bytes().decode().split("\0")
            seen = dict(entry.split("=", 1) for entry in entries if "=" in entry)
            assert _mlxjan_vars(seen) == {"MLXJAN_CONFIG": str(NO_CONFIG),
                                          "MLXJAN_HOME": str(e2e_home())}
        # No key needed (neither the config file's nor the shell's), the suite's models.
        models = httpx.get(f"{server.url}/v1/models", timeout=30)
        assert models.status_code == 200, models.text
        assert DEFAULT_MODEL in [m["id"] for m in models.json()["data"]]
    assert not developer_shell.exists()
