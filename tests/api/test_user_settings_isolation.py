"""A developer's own mlxjan settings (an API key in the config file and in the shell) do not
reach the API tests: tests/conftest.py isolates every suite from them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlxjan.settings import Settings, default_config_file

ROOT = Path(__file__).resolve().parents[2]
# Tests that fail with a 401 as soon as the server they start has an API key, and a module
# that builds its app when imported (collected, its tests deselected).
CANARIES = ["tests/api/test_openai_chat.py", "tests/api/test_schemathesis.py", "-k",
            "models_list or non_streaming_answer or streaming_chunks_match"]


def _developer_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A shell like a developer's: a config file with an API key, MLXJAN_* variables."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    for name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "MLXJAN_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    config = default_config_file()  # ~/.config/mlxjan/config.toml, under the temp HOME
    assert config.is_relative_to(home)
    config.parent.mkdir(parents=True)
    config.write_text('api_key = "x"\n')
    monkeypatch.setenv("MLXJAN_HOME", str(tmp_path / "developer-data"))
    # What that shell's settings are without the tests' isolation.
    assert Settings().api_key is not None and Settings().api_key.get_secret_value() == "x"
    monkeypatch.setenv("MLXJAN_API_KEY", "y")
    assert Settings().api_key.get_secret_value() == "y"  # type: ignore[union-attr]
    return dict(os.environ)


def test_api_tests_pass_under_a_developers_settings(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    env = _developer_env(tmp_path, monkeypatch)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"--basetemp={tmp_path / 'inner'}", *CANARIES],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "deselected" in done.stdout, done.stdout[-2000:]
    assert not (tmp_path / "developer-data").exists()
