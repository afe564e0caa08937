"""api_key_file: the key read from a file that only its owner may read (mode 0600)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from mlxjan.cli import main
from mlxjan.settings import Settings, read_key_file


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The config path tests here may write (conftest already cleared MLXJAN_*)."""
    monkeypatch.setenv("MLXJAN_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.setenv("MLXJAN_HOME", str(tmp_path / "home"))


def _key_file(tmp_path: Path, text: str, mode: int) -> Path:
    path = tmp_path / "api.key"
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def test_owner_only_file_gives_the_key(tmp_path: Path) -> None:
    path = _key_file(tmp_path, "  s3cret-from-file\n", 0o600)
    assert read_key_file(path) == "s3cret-from-file"
    settings = Settings(api_key_file=path)
    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == "s3cret-from-file"
    assert "s3cret-from-file" not in repr(settings)


def test_key_file_from_env_and_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _key_file(tmp_path, "from-file", 0o400)
    monkeypatch.setenv("MLXJAN_API_KEY_FILE", str(path))
    settings = Settings()
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "from-file"
    monkeypatch.delenv("MLXJAN_API_KEY_FILE")
    (tmp_path / "config.toml").write_text(f"api_key_file = {str(path)!r}\n")
    settings = Settings()
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "from-file"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = _key_file(tmp_path, "s3cret", mode)
    with pytest.raises(ValueError, match=f"chmod 600 {path}"):
        read_key_file(path)
    with pytest.raises(ValidationError, match="readable by others") as info:
        Settings(api_key_file=path)
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize("text", ["", "\n", "   \n\t"])
def test_empty_file_is_refused(tmp_path: Path, text: str) -> None:
    path = _key_file(tmp_path, text, 0o600)
    with pytest.raises(ValidationError, match="is empty"):
        Settings(api_key_file=path)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="cannot read api_key_file"):
        Settings(api_key_file=tmp_path / "nope.key")


def test_explicit_key_wins_over_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _key_file(tmp_path, "from-file", 0o600)
    settings = Settings(api_key="from-flag", api_key_file=path)
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "from-flag"
    # Not even read: a bad file does not matter when a key is given.
    monkeypatch.setenv("MLXJAN_API_KEY", "from-env")
    settings = Settings(api_key_file=_key_file(tmp_path, "x", 0o644))
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "from-env"


def test_cli_reports_a_bad_key_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _key_file(tmp_path, "s3cret", 0o644)
    assert main(["serve", "--api-key-file", str(path), "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "chmod 600" in err and "s3cret" not in err
