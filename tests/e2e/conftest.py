"""End-to-end fixtures: the real `mlxjan serve` process with the real default model.

Every mlxjan process a test starts gets `e2e_env()`: none of the developer's `MLXJAN_*`
variables, no config file, and the suite's own data dir `e2e_home()` (never the user's),
which persists so that the models are fetched once and reused by later runs.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import openai
import pytest

from mlxjan.engine.llamacpp.decode import Runtime, load, load_model
from mlxjan.engine.llamacpp.kernels import PLAIN, KernelCheck
from mlxjan.settings import DEFAULT_MODEL
from mlxjan.testing.server import free_port, wait_until_up
from tests.conftest import without_user_settings


@functools.cache
def e2e_home() -> Path:
    """The suite's data dir: not the user's, and kept between runs (the default model is 490 MB)."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "mlxjan-tests" / "home"


def e2e_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for an mlxjan process: no user settings, `e2e_home()`, then `extra`."""
    return {**without_user_settings(os.environ), "MLXJAN_HOME": str(e2e_home()),
            "PYTHONUNBUFFERED": "1", **(extra or {})}


def pull(model_id: str) -> Path:
    """`mlxjan pull model_id` into `e2e_home()` (a no-op when present); its weights' path."""
    from mlxjan.models.store import ModelStore

    subprocess.run([sys.executable, "-m", "mlxjan", "pull", model_id, "--quiet"], check=True,
                   env=e2e_env())
    store = ModelStore(e2e_home())
    manifest = store.get(model_id)
    assert manifest is not None
    return store.weights_path(manifest)


def npm_package(package: str, member: str) -> Path:
    """`member` (a path under node_modules) of a pinned npm package, installed once into a
    cache folder kept between runs (Claude Code, Codex, axe-core)."""
    npm = shutil.which("npm")
    assert npm is not None, f"npm is needed to install {package} for this test"
    prefix = Path.home() / ".cache" / "mlxjan-tests" / package.replace("/", "_")
    path = prefix / "node_modules" / member
    if not path.exists():
        prefix.mkdir(parents=True, exist_ok=True)
        subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(prefix),
                        package], check=True, capture_output=True, timeout=600)
    return path


def npm_binary(package: str, name: str) -> Path:
    """A pinned npm package's binary (see `npm_package`)."""
    return npm_package(package, f".bin/{name}")


@pytest.fixture(scope="session")
def default_model_path() -> Path:
    """Install the default model (a no-op when present) and return its GGUF path."""
    return pull(DEFAULT_MODEL)



@contextmanager
def llama_runtime(gguf: Path, context_length: int = 256) -> Iterator[Runtime]:
    """A GGUF in llama.cpp through the engine's one loader, under the kernel plan its
    self-check chose for this CPU (remembered in the suite's data dir)."""
    plan = KernelCheck(e2e_home() / "self-checks").verdict(gguf, str(gguf)).require()
    runtime = load(gguf, context_length, None, 1, plan)
    try:
        yield runtime
    finally:
        runtime.close()


@contextmanager
def planned_llama(gguf: Path, *, embedding: bool = False, **options: Any) -> Iterator[Any]:
    """llama-cpp-python's own `Llama` on a GGUF, as a reference to compare with, loaded under
    the kernel plan the self-check chose for it on this CPU (its default repacking crashes
    or computes garbage on some Xeons), as benchmarks/llama_cpp_peer.py loads its peer."""
    import llama_cpp
    import llama_cpp.llama_cpp as bindings

    checks = KernelCheck(e2e_home() / "self-checks", embedding=embedding)
    plan = checks.verdict(gguf, str(gguf)).require()
    defaults = bindings.llama_model_default_params
    bindings.llama_model_default_params = lambda: plan.apply(defaults())
    try:
        llama = llama_cpp.Llama(str(gguf), embedding=embedding, verbose=False, **options)
    finally:
        bindings.llama_model_default_params = defaults
    try:
        yield llama
    finally:
        llama.close()


def llama_tokenize(gguf: Path, text: str, *, add_bos: bool, special: bool) -> list[int]:
    """llama.cpp's own tokens for `text` (the vocabulary alone, loaded the one way)."""
    model = load_model(gguf, PLAIN, vocab_only=True)
    try:
        tokens: list[int] = model.tokenize(text.encode(), add_bos, special)
        return tokens
    finally:
        model.close()

def _pinned_llama_cpp() -> str:
    """The llama-cpp-python version mlxjan's metadata pins (`==`), from pyproject.toml."""
    for requirement in metadata.requires("mlxjan") or []:
        match = re.fullmatch(r"llama[-_.]cpp[-_.]python\s*==\s*([\w.+!-]+)\s*(;.*)?",
                             requirement.strip(), flags=re.IGNORECASE)
        if match:
            return match[1]
    raise AssertionError("the installed mlxjan does not pin llama-cpp-python with '==': "
                         "reinstall it (`pip install -e '.[dev]'`)")


@pytest.fixture(scope="session")
def pinned_llama_cpp() -> str:
    """For tests that compare exact llama.cpp outputs: fail unless llama.cpp is the pinned one.

    Greedy tokens and tokenisations move between llama.cpp releases; these tests are only
    meaningful on the version they were written against.
    """
    pinned, installed = _pinned_llama_cpp(), metadata.version("llama-cpp-python")
    if installed != pinned:
        pytest.fail(f"this test compares exact llama.cpp outputs and needs the pinned "
                    f"llama-cpp-python=={pinned}, but {installed} is installed: run "
                    f"`pip install -e '.[dev]'`", pytrace=False)
    return installed


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
            env=e2e_env(env))
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


THINKING_MODEL = "qwen2.5-coder-think"


@pytest.fixture(scope="session")
def thinking_model(default_model_path: Path) -> str:
    """`mlxjan create`: the default model's weights (hard-linked) under a template that
    opens a <think> block in the generation prompt, as DeepSeek-R1's do."""
    template = Path(__file__).parent / "templates" / "qwen2.5-think.jinja"
    subprocess.run([sys.executable, "-m", "mlxjan", "create", THINKING_MODEL,
                    "--from", DEFAULT_MODEL, "--chat-template", str(template)],
                   check=True, env=e2e_env(), capture_output=True)
    return THINKING_MODEL


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
