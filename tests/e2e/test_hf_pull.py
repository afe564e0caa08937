"""Real models pulled from the local Hub stand-in, then used: a GGUF served by `mlxjan serve`,
an MLX folder served by `mlxjan serve --engine mlx`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from openai.types.chat import ChatCompletion

from mlxjan.models.catalog import CATALOG
from mlxjan.models.hf import HfRef, HubConfig, pull_hf
from mlxjan.models.store import ModelStore
from mlxjan.testing.hub import HubStandIn
from mlxjan.testing.server import running
from tests.e2e.conftest import e2e_env, pull, serve_process

GEMMA = CATALOG["gemma-3-270m"]
GEMMA_REPO = "unsloth/gemma-3-270m-GGUF"

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def gemma_gguf() -> Path:
    """The catalog's gemma-3-270m GGUF (253 MB, the smaller real model), installed once."""
    return pull(GEMMA.id)


def _serve_and_ask(tmp_path: Path, engine: str, model: str, text: str,
                   max_tokens: int) -> ChatCompletion:
    """`mlxjan serve` on the pulled model (data dir `tmp_path/home`), one greedy answer."""
    with serve_process(tmp_path, "--engine", engine, "--model", model,
                       env={"MLXJAN_HOME": str(tmp_path / "home")}) as server, \
            openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0,
                          timeout=300) as client:
        return client.chat.completions.create(
            model=model, max_tokens=max_tokens, temperature=0.0,
            messages=[{"role": "user", "content": text}])


@pytest.fixture
def hub() -> Iterator[tuple[HubStandIn, str]]:
    stand_in = HubStandIn()
    with running(stand_in.app()) as url:
        yield stand_in, url


def test_pulled_gguf_serves_a_chat_completion(gemma_gguf: Path, hub: tuple[HubStandIn, str],
                                              tmp_path: Path) -> None:
    stand_in, url = hub
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / GEMMA.filename).symlink_to(gemma_gguf)  # served straight from the store
    (repo / "README.md").write_text("# gemma\n")
    commit = stand_in.add_commit(GEMMA_REPO, repo)
    env = e2e_env({"MLXJAN_HOME": str(tmp_path / "home"), "MLXJAN_HF_ENDPOINT": url})
    subprocess.run([sys.executable, "-m", "mlxjan", "pull", f"{GEMMA_REPO}:{GEMMA.filename}",
                    "--quiet"], check=True, env=env)

    manifest = ModelStore(tmp_path / "home").get("gemma-3-270m-q4_k_m")
    assert manifest is not None
    assert manifest.source == f"hf://{GEMMA_REPO}@{commit}/{GEMMA.filename}"
    assert (manifest.sha256, manifest.size) == (GEMMA.sha256, GEMMA.size)
    assert manifest.architecture == "gemma3" and manifest.chat_template is None

    result = _serve_and_ask(tmp_path, "llamacpp", manifest.id, "Monday, Tuesday, Wednesday,", 20)
    assert "thursday" in (result.choices[0].message.content or "").lower()


def test_pulled_mlx_folder_serves_on_the_mlx_engine(default_model_path: Path,
                                                    hub: tuple[HubStandIn, str],
                                                    tmp_path: Path) -> None:
    from converters.tiny import make_tiny_model

    stand_in, url = hub
    repo = make_tiny_model(default_model_path, tmp_path / "repo", seed=3)
    (repo / "README.md").write_text("# tiny\n")
    stand_in.add_commit("mlx-community/Tiny-Qwen2", repo)
    store = ModelStore(tmp_path / "home")
    manifest = pull_hf(store, HfRef("mlx-community/Tiny-Qwen2"), HubConfig(url), progress=False)
    assert manifest.architecture == "qwen2" and manifest.chat_template

    result = _serve_and_ask(tmp_path, "mlx", manifest.id, "Hello", 5)
    assert result.choices[0].finish_reason == "length"
    assert result.usage is not None and result.usage.completion_tokens == 5
