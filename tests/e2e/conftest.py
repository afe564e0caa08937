"""End-to-end fixtures: the real `mlxjan serve` process with the real default model.

The model is fetched into the user's data dir (or MLXJAN_HOME) once and reused by later runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from mlxjan.settings import DEFAULT_MODEL, Settings
from tests.serving import free_port, wait_until_up


@pytest.fixture(scope="session")
def default_model_path() -> Path:
    """Install the default model (a no-op when present) and return its GGUF path."""
    subprocess.run([sys.executable, "-m", "mlxjan", "pull", DEFAULT_MODEL, "--quiet"],
                   check=True)
    from mlxjan.models.store import ModelStore

    store = ModelStore(Settings().data_dir)
    manifest = store.get(DEFAULT_MODEL)
    assert manifest is not None
    return store.weights_path(manifest)


@dataclass
class ServerProcess:
    url: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextmanager
def serve_process(log_dir: Path, *args: str, port: int | None = None,
                  env: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    """`mlxjan serve` as a real process on a free loopback port, stopped afterwards."""
    port = port or free_port()
    log = log_dir / f"serve-{port}.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlxjan", "serve", "--port", str(port), *args],
            stdout=sink, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    server = ServerProcess(f"http://127.0.0.1:{port}", port, proc, log)
    try:
        try:
            wait_until_up(server.url, proc)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{log.read_text()}") from exc
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def server_url(default_model_path: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[str]:
    with serve_process(tmp_path_factory.mktemp("serve")) as server:
        yield server.url


@pytest.fixture(scope="session")
def client(server_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server_url}/v1", api_key="none", max_retries=0,
                       timeout=300) as c:
        yield c


TINY_MLX_MODEL = "tiny-qwen2-mlx"


@pytest.fixture(scope="session")
def tiny_mlx_home(default_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir holding one MLX model: the default model's tokenizer, 2 random layers."""
    from converters.tiny import make_tiny_model
    from mlxjan.models.store import ModelStore, folder_sha256, new_manifest, staged_size

    home = tmp_path_factory.mktemp("mlx-home")
    store = ModelStore(home)
    with store.staging(TINY_MLX_MODEL) as staged:
        folder = make_tiny_model(default_model_path, staged / "model", seed=7)
        store.install(folder, new_manifest(
            id=TINY_MLX_MODEL, format="mlx", source="tiny", file=".", architecture="qwen2",
            sha256=folder_sha256(folder), size=staged_size(folder), context_length=4096))
    return home


@pytest.fixture(scope="session")
def mlx_server_url(tiny_mlx_home: Path, tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[str]:
    with serve_process(tmp_path_factory.mktemp("serve-mlx"), "--engine", "mlx",
                       env={"MLXJAN_HOME": str(tiny_mlx_home),
                            "MLXJAN_DEFAULT_MODEL": TINY_MLX_MODEL}) as server:
        yield server.url
