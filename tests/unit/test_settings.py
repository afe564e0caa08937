"""Settings precedence: flags (init kwargs) > env MLXJAN_* > TOML config file > defaults."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from mlxjan.settings import DEFAULT_MODEL, Settings, default_config_file, default_data_dir


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No MLXJAN_* from the developer's shell; a config path that does not exist yet."""
    for name in list(os.environ):
        if name.upper().startswith("MLXJAN_"):
            monkeypatch.delenv(name)
    config = tmp_path / "config.toml"
    monkeypatch.setenv("MLXJAN_CONFIG", str(config))
    monkeypatch.setenv("MLXJAN_HOME", str(tmp_path / "home"))
    return config


def test_defaults(clean_env: Path, tmp_path: Path) -> None:
    assert not clean_env.exists()
    settings = Settings()
    assert settings.port == 1337
    assert settings.host == "127.0.0.1"
    assert settings.api_prefix == "/v1"
    assert settings.request_timeout == 600
    assert settings.api_key is None
    assert settings.trusted_hosts == []
    assert settings.default_model == DEFAULT_MODEL
    assert settings.engine == "auto"
    assert settings.data_dir == tmp_path / "home"
    assert settings.models_dir == tmp_path / "home" / "models"


def test_config_file_overrides_defaults(clean_env: Path) -> None:
    clean_env.write_text('port = 8080\nhost = "0.0.0.0"\nrequest_timeout = 30\n'
                         'trusted_hosts = ["box.lan"]\n')
    settings = Settings()
    assert settings.port == 8080
    assert settings.host == "0.0.0.0"
    assert settings.request_timeout == 30
    assert settings.trusted_hosts == ["box.lan"]
    assert settings.api_prefix == "/v1"  # untouched fields keep their defaults


def test_env_overrides_config_file(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clean_env.write_text('port = 8080\nhost = "0.0.0.0"\n')
    monkeypatch.setenv("MLXJAN_PORT", "9090")
    settings = Settings()
    assert settings.port == 9090
    assert settings.host == "0.0.0.0"  # not in env: the file still applies


def test_flags_override_env_and_config_file(clean_env: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    clean_env.write_text('port = 8080\napi_prefix = "/file"\n')
    monkeypatch.setenv("MLXJAN_PORT", "9090")
    monkeypatch.setenv("MLXJAN_API_PREFIX", "/env")
    settings = Settings(port=7070)
    assert settings.port == 7070
    assert settings.api_prefix == "/env"


def test_env_is_case_insensitive_and_parses_lists_and_secrets(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("mlxjan_host", "0.0.0.0")
    monkeypatch.setenv("MLXJAN_TRUSTED_HOSTS", '["a.lan", "b.lan"]')
    monkeypatch.setenv("MLXJAN_API_KEY", "s3cret")
    settings = Settings()
    assert settings.host == "0.0.0.0"
    assert settings.trusted_hosts == ["a.lan", "b.lan"]
    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


def test_invalid_values_are_rejected(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError):
        Settings(port=0)
    with pytest.raises(ValidationError):
        Settings(request_timeout=0)
    monkeypatch.setenv("MLXJAN_ENGINE", "tensorrt")
    with pytest.raises(ValidationError):
        Settings()


def test_config_path_and_data_dir_follow_env(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLXJAN_CONFIG", str(tmp_path / "elsewhere.toml"))
    monkeypatch.setenv("MLXJAN_HOME", str(tmp_path / "data"))
    assert default_config_file() == tmp_path / "elsewhere.toml"
    assert default_data_dir() == tmp_path / "data"


def test_llamacpp_is_the_engine_until_mlx_lands() -> None:
    assert Settings().resolved_engine() == "llamacpp"
    assert Settings(engine="llamacpp").resolved_engine() == "llamacpp"
