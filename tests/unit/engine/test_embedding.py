"""The embedding pieces every engine shares: dimensions, length checks, batch packing,
final shape; and the self-check's judgement of embedding probes (fake probes here; the
real ones run against the real model in tests/e2e/test_embeddings_real.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mlxjan.engine.cpu import CpuInfo
from mlxjan.engine.embedding import checked_tokens, dimensions_for, packed, shaped
from mlxjan.engine.footprint import PROCESS_BYTES, estimate
from mlxjan.engine.llamacpp.kernels import PLAIN, REPACKED, KernelCheck, KernelPlan, ProbeResult
from mlxjan.engine.selfcheck import compare_embeddings
from mlxjan.errors import ContextLengthExceededError, InvalidRequestError, ModelSelfCheckError
from mlxjan.models.store import new_manifest
from mlxjan.testing.fake_engine import fake_worker_spec
from tests.unit.engine.test_footprint import _gguf


def test_dimensions_default_to_the_models_own() -> None:
    assert dimensions_for(None, 768, False) == 768
    assert dimensions_for(768, 768, False) == 768
    assert dimensions_for(256, 768, True) == 256


@pytest.mark.parametrize(("requested", "matryoshka"), [(256, False), (769, True), (0, True)])
def test_other_dimensions_are_refused(requested: int, matryoshka: bool) -> None:
    with pytest.raises(InvalidRequestError) as exc:
        dimensions_for(requested, 768, matryoshka)
    assert exc.value.param == "dimensions"


def test_an_input_over_the_context_is_refused_with_its_index() -> None:
    assert checked_tokens([1, 2, 3], 0, 3, 10) == [1, 2, 3]
    with pytest.raises(ContextLengthExceededError) as exc:
        checked_tokens([1] * 4, 2, 3, 10)
    assert (exc.value.code, exc.value.param, exc.value.status) == (
        "context_length_exceeded", "input", 400)
    assert "input 2 has 4 tokens" in exc.value.message


def test_a_token_outside_the_vocabulary_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="vocabulary of 10"):
        checked_tokens([3, 10], 0, 100, 10)


def test_inputs_pack_in_order_within_tokens_and_count() -> None:
    assert packed([3, 3, 3, 3], 6, 10) == [[0, 1], [2, 3]]
    assert packed([1] * 5, 100, 2) == [[0, 1], [2, 3], [4]]
    assert packed([2, 9, 2], 4, 10) == [[0], [1], [2]]  # a long input goes alone
    assert packed([], 4, 10) == []


def test_shaped_cuts_then_normalises() -> None:
    vector = np.array([3, 4, 12], dtype=np.float32)
    assert shaped(vector, 3) == pytest.approx((3 / 13, 4 / 13, 12 / 13))
    assert shaped(vector, 2) == pytest.approx((0.6, 0.8))
    assert shaped(np.zeros(3, np.float32), 3) == (0.0, 0.0, 0.0)


def _units(seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(3, 16))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_embeddings_agree_within_rounding_only() -> None:
    reference = _units(0)
    assert compare_embeddings(reference, reference + 1e-5) is None
    assert "point elsewhere" in str(compare_embeddings(reference, _units(1)))
    assert "shape" in str(compare_embeddings(reference, reference[:2]))
    assert "not finite" in str(compare_embeddings(reference, reference * np.nan))


AVX2 = CpuInfo("AMD EPYC", frozenset({"avx2", "fma"}), 2, 2)
BUILD = frozenset({"AVX2", "REPACK"})


def _check(results: dict[KernelPlan, ProbeResult], tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> tuple[KernelPlan, str]:
    monkeypatch.setattr("mlxjan.engine.llamacpp.kernels.cpu_info", lambda: AVX2)
    check = KernelCheck(tmp_path, lambda weights, plan: results[plan], embedding=True)
    verdict = check.verdict(Path("e.gguf"), "key")
    return verdict.require(), verdict.detail


def test_repacked_embeddings_serve_once_they_match_the_plain_ones(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = ProbeResult(_units(0), (), BUILD)
    same = ProbeResult(_units(0) + 1e-6, (), BUILD)
    assert _check({PLAIN: plain, REPACKED: same}, tmp_path, monkeypatch)[0] == REPACKED
    wrong = ProbeResult(_units(1), (), BUILD)
    plan, why = _check({PLAIN: plain, REPACKED: wrong}, tmp_path / "b", monkeypatch)
    assert plan == PLAIN and "failed the self-check" in why


def test_non_finite_plain_embeddings_refuse_the_model(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    broken = ProbeResult(_units(0) * np.nan, (), BUILD)
    with pytest.raises(ModelSelfCheckError):
        _check({PLAIN: broken}, tmp_path, monkeypatch)


def test_an_embedding_model_is_estimated_without_a_kv_cache(tmp_path: Path) -> None:
    path = _gguf(tmp_path / "e.gguf", arch="nomic-bert")
    manifest = new_manifest(id="e", format="gguf", source="test", file=path.name,
                            sha256="2" * 64, size=path.stat().st_size, kind="embedding")
    spec = replace(fake_worker_spec("e", context_length=2048), kind="llamacpp",
                   manifest=manifest, weights=path)
    need = estimate(spec)
    assert need.kv_cache == 0
    assert need.buffers == PROCESS_BYTES + 2 * 2048 * 2048 * 2 * 4  # scores, softmax (f32)
