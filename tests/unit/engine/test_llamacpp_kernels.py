"""Choosing llama.cpp's kernel path: the rules, the self-check's judgement of probe results,
and remembered verdicts. The probes here are fakes; tests/e2e/test_kernel_check.py runs the
real ones in child processes against the real model."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from mlxjan.engine.cpu import CpuInfo
from mlxjan.engine.llamacpp import kernels
from mlxjan.engine.llamacpp.kernels import (
    PLAIN,
    REPACKED,
    KernelCheck,
    KernelPlan,
    ProbeResult,
    check,
    preferred_plan,
)
from mlxjan.engine.selfcheck import compare
from mlxjan.errors import ModelSelfCheckError

AVX2 = CpuInfo("AMD EPYC", frozenset({"avx2", "fma"}), 2, 2)
AMX = CpuInfo("Intel Xeon Platinum", frozenset({"avx2", "avx512f", "amx_tile", "amx_int8",
                                                "amx_bf16"}), 2, 2)
BUILD = frozenset({"AVX2", "REPACK"})
AMX_BUILD = BUILD | {"AMX_INT8", "AVX512"}
WEIGHTS = Path("model.gguf")


def _rows(seed: int = 0, positions: int = 20, vocab: int = 50) -> np.ndarray:
    """Log-softmax rows of a 'model' that predicts the next token (id = position + 1)."""
    logits = np.random.default_rng(seed).normal(size=(positions, vocab)).astype(np.float32)
    logits[np.arange(positions), np.arange(1, positions + 1) % vocab] += 8
    return logits - np.log(np.exp(logits).sum(-1, keepdims=True))


TOKENS = tuple(range(20))


def _probe(results: dict[KernelPlan, ProbeResult], calls: list[KernelPlan]
           ) -> kernels.Probe:
    def probe(weights: Path, plan: KernelPlan) -> ProbeResult:
        calls.append(plan)
        return results[plan]

    return probe


def _ok(rows: np.ndarray, build: frozenset[str] = BUILD) -> ProbeResult:
    return ProbeResult(rows, TOKENS, build)


def test_amx_cpu_with_amx_build_never_repacks() -> None:
    assert preferred_plan(AMX, AMX_BUILD)[0] == PLAIN
    assert preferred_plan(AMX, BUILD)[0] == REPACKED  # the build has no AMX kernels
    assert preferred_plan(AVX2, AMX_BUILD)[0] == REPACKED  # no AMX on this CPU
    assert preferred_plan(AVX2, frozenset({"AVX2"}))[0] == PLAIN  # nothing to repack for


def test_agreeing_candidate_is_used() -> None:
    reference = _rows()
    nudged = reference + np.float32(0.01)
    calls: list[KernelPlan] = []
    verdict = check(WEIGHTS, _probe({PLAIN: _ok(reference), REPACKED: _ok(nudged)}, calls),
                    AVX2)
    assert verdict.require() == REPACKED and calls == [PLAIN, REPACKED]


@pytest.mark.parametrize("wrong", ["garbage", "crash", "nan"])
def test_wrong_candidate_falls_back_to_plain_with_one_log_line(
        wrong: str, caplog: pytest.LogCaptureFixture) -> None:
    reference = _rows()
    candidate = {"garbage": _ok(_rows(seed=1)[:, ::-1]),
                 "crash": ProbeResult(None, (), frozenset(), "killed by SIGSEGV"),
                 "nan": _ok(np.full_like(reference, np.nan))}[wrong]
    with caplog.at_level(logging.WARNING):
        verdict = check(WEIGHTS, _probe({PLAIN: _ok(reference), REPACKED: candidate}, []),
                        AVX2)
    assert verdict.require() == PLAIN and verdict.refused is None
    lines = [r for r in caplog.records if "failed the self-check" in r.getMessage()]
    assert len(lines) == 1 and "model.gguf" in lines[0].getMessage()


def test_compare_tolerates_rounding_but_not_a_different_answer() -> None:
    reference = _rows()
    assert compare(reference, reference + np.float32(0.05)) is None
    shuffled = reference[np.random.default_rng(3).permutation(len(reference))]
    assert compare(reference, shuffled) is not None
    assert compare(reference, reference[:-1]) is not None


def test_plain_kernels_crashing_refuses_the_model_with_what_to_do() -> None:
    dead = ProbeResult(None, (), frozenset(), "the process was killed by SIGILL")
    verdict = check(WEIGHTS, _probe({PLAIN: dead}, []), AVX2)
    with pytest.raises(ModelSelfCheckError) as caught:
        verdict.require()
    assert "SIGILL" in caught.value.message and "reinstall" in caught.value.message


def test_amx_machine_checks_only_the_plain_path() -> None:
    calls: list[KernelPlan] = []
    verdict = check(WEIGHTS, _probe({PLAIN: _ok(_rows(), AMX_BUILD)}, calls), AMX)
    assert verdict.require() == PLAIN and calls == [PLAIN]
    assert "AMX" in verdict.detail


def test_verdict_is_remembered_per_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    monkeypatch.setattr(kernels, "cpu_info", lambda: AVX2)
    calls: list[KernelPlan] = []
    probe = _probe({PLAIN: _ok(_rows()), REPACKED: _ok(_rows())}, calls)
    first = KernelCheck(tmp_path, probe).verdict(WEIGHTS, "sha-a")
    again = KernelCheck(tmp_path, probe).verdict(WEIGHTS, "sha-a")
    assert first == again and calls == [PLAIN, REPACKED]
    KernelCheck(tmp_path, probe).verdict(WEIGHTS, "sha-b")
    assert len(calls) == 4  # another model is checked anew


def test_another_cpu_is_checked_anew(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[KernelPlan] = []
    probe = _probe({PLAIN: _ok(_rows(), AMX_BUILD), REPACKED: _ok(_rows(), AMX_BUILD)}, calls)
    monkeypatch.setattr(kernels, "cpu_info", lambda: AVX2)
    assert KernelCheck(tmp_path, probe).verdict(WEIGHTS, "sha").plan == REPACKED
    monkeypatch.setattr(kernels, "cpu_info", lambda: AMX)
    assert KernelCheck(tmp_path, probe).verdict(WEIGHTS, "sha").plan == PLAIN
