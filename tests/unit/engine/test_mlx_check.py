"""The MLX self-check on a small random qwen2 model: its paths agree, and a decode path made
wrong on purpose (the KV-cache step) is caught."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import mlx.core as mx
import pytest
from mlx_lm.models import qwen2

from mlxjan.engine.mlx.check import check_model
from mlxjan.engine.mlx.decode import Runner
from mlxjan.engine.selfcheck import Remembered
from mlxjan.errors import ModelSelfCheckError

TOKENS = [(7 * i) % 97 for i in range(24)]


@pytest.fixture(scope="module")
def model() -> Any:
    mx.random.seed(0)
    args = qwen2.ModelArgs(model_type="qwen2", hidden_size=64, num_hidden_layers=2,
                           intermediate_size=128, num_attention_heads=4, rms_norm_eps=1e-6,
                           vocab_size=128, num_key_value_heads=2, tie_word_embeddings=True)
    made = qwen2.Model(args)
    mx.eval(made.parameters())
    return made


class WrongWhenCached:
    """The model, except that steps through the KV cache compute something else."""

    def __init__(self, model: Any) -> None:
        self._model = model

    def __call__(self, inputs: Any, cache: Any = None) -> Any:
        logits = self._model(inputs, cache=cache)
        if cache is not None and inputs.shape[1] == 1:
            return logits[..., ::-1]
        return logits

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def test_a_right_model_passes(model: Any) -> None:
    assert check_model(Runner(model, mx.default_stream(mx.cpu)), TOKENS) is None


def test_a_wrong_decode_path_is_caught(model: Any) -> None:
    cause = check_model(Runner(WrongWhenCached(model), mx.default_stream(mx.cpu)), TOKENS)
    assert cause is not None and "step by step" in cause


def test_the_engine_refuses_a_failing_model_and_remembers(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    from mlxjan.engine.mlx import engine as mlx_engine

    engine = mlx_engine.MlxEngine("m", lambda: tmp_path, chat_template=None,
                                  context_length=256, self_checks=Remembered(tmp_path),
                                  model_key="sha")
    tokenizer = SimpleNamespace(encode=lambda text: TOKENS)
    runner = Runner(None, mx.default_stream(mx.cpu))
    try:
        monkeypatch.setattr(mlx_engine, "check_model", lambda runner, tokens: "it is broken")
        for _ in range(2):
            with pytest.raises(ModelSelfCheckError, match=r"it is broken.*--engine llamacpp"):
                engine._self_check(runner, tokenizer)
            monkeypatch.setattr(mlx_engine, "check_model", _not_called)
    finally:
        engine._thread.close()


def _not_called(runner: Runner, tokens: list[int]) -> str | None:
    raise AssertionError("the verdict was remembered")
