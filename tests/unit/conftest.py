"""Shared unit-test isolation: no settings leak in from the shell or the user's config."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def no_user_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No MLXJAN_* variables from the shell, and a config file that does not exist."""
    for name in list(os.environ):
        if name.upper().startswith("MLXJAN_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MLXJAN_CONFIG", str(tmp_path / "absent.toml"))


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The CLI reconfigures the root logger: close what it added, put pytest's back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)
