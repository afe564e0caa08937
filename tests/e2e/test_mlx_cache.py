"""The MLX engine's prompt cache survives a restart (tiny model, real tokenizer)."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tests.e2e.conftest import TINY_MLX_MODEL, serve_process

pytestmark = pytest.mark.e2e
SYSTEM = "You are a patient tutor. " + "Every answer is checked twice before it is given. " * 120


def _ask(url: str, question: str) -> openai.types.chat.ChatCompletion:
    with openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0,
                       timeout=300) as client:
        return client.chat.completions.create(
            model=TINY_MLX_MODEL, max_tokens=4, temperature=0.0,
            messages=[{"role": "system", "content": SYSTEM},
                      {"role": "user", "content": question}])


def test_a_restart_reuses_the_persisted_prefix(tiny_mlx_home: Path, tmp_path: Path) -> None:
    env = {"MLXJAN_HOME": str(tiny_mlx_home), "MLXJAN_DEFAULT_MODEL": TINY_MLX_MODEL,
           "MLXJAN_PROMPT_CACHE_DIR": str(tmp_path / "cache")}
    with serve_process(tmp_path, "--engine", "mlx", env=env) as server:
        cold = _ask(server.url, "What is a prime number?")
    assert cold.usage is not None and cold.usage.prompt_tokens > 1024
    assert list((tmp_path / "cache").rglob("*.kvc")), "nothing was persisted"
    with serve_process(tmp_path, "--engine", "mlx", env=env) as server:
        warm = _ask(server.url, "What is a square number?")
    assert warm.usage is not None and warm.usage.prompt_tokens_details is not None
    assert warm.usage.prompt_tokens_details.cached_tokens > 1000
