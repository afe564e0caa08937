"""Fixtures for the store and fetch tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlxjan.models.store import ModelStore
from tests.unit.models.ggufs import write_gguf


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "data")


@pytest.fixture
def gguf_file(tmp_path: Path) -> Path:
    return write_gguf(tmp_path / "Tiny-Llama_Q4.gguf")
