"""Which llama.cpp kernels serve a model on this CPU: chosen by rule, then proven by a check.

llama.cpp can repack a model's weights at load into layouts for faster kernels (its "extra
buffer types": AMX tiles on recent Xeons, interleaved blocks for AVX2 and AVX-512). Those
kernels are newer and less exercised than its plain ones, and the AMX path crashes or
computes garbage on some Sapphire-Rapids-class CPUs (ggml-org/llama.cpp#20824): the first
chat request killed the server with SIGSEGV, and bare llama-cpp-python answered "hello"
with "mpegmpegmpeg". So:

- by rule, repacking is off where both the CPU and the build have AMX (known wrong), and a
  candidate elsewhere;
- a candidate path is used only after a self-check: a fixed text is evaluated by the
  candidate and by the plain kernels, each in a child process (a crash there costs a child,
  not the server), and their next-token distributions must agree; otherwise the plain
  kernels serve and one log line says why;
- when even the plain kernels crash or give non-finite logits (a llama-cpp-python built for
  another CPU), the model is refused with a typed error that says what to do.

The verdict is remembered per CPU, llama.cpp build and model, so later loads cost nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib.metadata import version
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np

from mlxjan.engine.cpu import CpuInfo, cpu_info
from mlxjan.engine.selfcheck import (
    Remembered,
    Rows,
    compare,
    compare_embeddings,
    plausibility,
)
from mlxjan.errors import ModelSelfCheckError

log = logging.getLogger(__name__)
PROBE_TIMEOUT_S = 600
# The plain kernels must predict the probe text's counting tail at least this often.
MIN_PLAUSIBLE = 0.5


@dataclass(frozen=True)
class KernelPlan:
    """How llama.cpp loads a model's weights."""

    repack: bool  # llama.cpp's `use_extra_bufts`: weights repacked for its faster kernels

    def describe(self) -> str:
        return "repacked weights" if self.repack else "plain kernels (no repacking)"

    def apply(self, params: Any) -> Any:
        """llama.cpp's model params (`llama_model_params`) set to load under this plan."""
        params.use_extra_bufts = self.repack
        return params


PLAIN = KernelPlan(repack=False)
REPACKED = KernelPlan(repack=True)


@dataclass(frozen=True)
class ProbeResult:
    """What one plan computed on the probe text (rows: log-softmax per position), or how
    it failed."""

    rows: Rows | None
    tokens: tuple[int, ...]
    build: frozenset[str]  # the build's CPU features, from llama_print_system_info
    failure: str | None = None


Probe = Callable[[Path, KernelPlan], ProbeResult]


@dataclass(frozen=True)
class Verdict:
    plan: KernelPlan
    detail: str  # why this plan, in one line
    refused: str | None = None  # set when no plan is right: the model must not serve

    def require(self) -> KernelPlan:
        if self.refused is not None:
            raise ModelSelfCheckError(self.refused)
        return self.plan


def preferred_plan(cpu: CpuInfo, build: frozenset[str]) -> tuple[KernelPlan, str]:
    """The plan the rules choose before any check, and why."""
    if cpu.has_amx and "AMX_INT8" in build:
        return PLAIN, ("repacking off: this CPU and build use llama.cpp's AMX kernels, which "
                       "crash or miscompute on some Xeons (llama.cpp#20824)")
    if "REPACK" not in build:
        return PLAIN, "this llama.cpp build has no repacked kernels"
    return REPACKED, "repacked weights"


def check(weights: Path, probe: Probe, cpu: CpuInfo, *, embedding: bool = False) -> Verdict:
    """Run the probes and judge them (uncached). `embedding`: the rows are unit vectors of
    the probe texts (an embedding model has no next-token distribution to judge)."""
    reference = probe(weights, PLAIN)
    if reference.failure is not None or reference.rows is None \
            or not np.isfinite(reference.rows).all():
        failure = reference.failure or "non-finite logits"
        return Verdict(PLAIN, "plain kernels failed", refused=(
            f"llama.cpp's plain kernels fail on this CPU ({failure}) for {weights.name}. "
            "llama-cpp-python may have been built for another processor: reinstall it here "
            "with `pip install --force-reinstall --no-cache-dir "
            f"llama-cpp-python=={version('llama-cpp-python')}`."))
    plausible = 1.0 if embedding else plausibility(reference.rows, reference.tokens)
    if plausible < MIN_PLAUSIBLE:
        log.warning("%s: the plain kernels predict the self-check text poorly (%.0f%%); "
                    "the model may be unusual or its weights damaged", weights.name,
                    100 * plausible)
    plan, why = preferred_plan(cpu, reference.build)
    if plan == PLAIN:
        return Verdict(PLAIN, why)
    candidate = probe(weights, plan)
    if candidate.failure is not None or candidate.rows is None:
        cause: str | None = candidate.failure or "no logits"
    else:
        cause = (compare_embeddings if embedding else compare)(reference.rows, candidate.rows)
    if cause is not None:
        log.warning("%s: %s failed the self-check (%s); serving with the plain kernels",
                    weights.name, plan.describe(), cause)
        return Verdict(PLAIN, f"{plan.describe()} failed the self-check ({cause})")
    return Verdict(plan, f"{why}, checked against the plain kernels")


class KernelCheck:
    """Verdicts per CPU, llama.cpp build and model, remembered in `cache_dir` (or not)."""

    def __init__(self, cache_dir: Path | None, probe: Probe | None = None, *,
                 embedding: bool = False) -> None:
        self._remembered = Remembered(cache_dir)
        self._embedding = embedding
        self._probe = probe or (embedding_probe_in_child if embedding else probe_in_child)

    def verdict(self, weights: Path, model_key: str) -> Verdict:
        cpu = cpu_info()
        key = ["llamacpp", cpu.fingerprint(), build_fingerprint(), model_key,
               *(["embedding"] if self._embedding else [])]
        data = self._remembered.get(key)
        if data is not None:
            try:
                return Verdict(KernelPlan(**data["plan"]), data["detail"], data.get("refused"))
            except (KeyError, TypeError):
                pass  # from another version: check again
        verdict = check(weights, self._probe, cpu, embedding=self._embedding)
        self._remembered.put(key, asdict(verdict))
        return verdict


def build_fingerprint() -> str:
    """Identifies the installed llama.cpp build without importing it: the package version
    and the size and time of each of its shared libraries."""
    spec = find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return "absent"
    root = Path(next(iter(spec.submodule_search_locations)))
    libs = sorted((p.name, p.stat().st_size, int(p.stat().st_mtime))
                  for p in root.rglob("*") if p.suffix in (".so", ".dylib", ".dll"))
    return hashlib.sha256(json.dumps([version("llama-cpp-python"), libs]).encode()
                          ).hexdigest()[:16]


def probe_in_child(weights: Path, plan: KernelPlan, embedding: bool = False) -> ProbeResult:
    """Evaluate the probe text under `plan` in a child process (probe.py); `embedding`:
    embed the embedding probes instead."""
    with tempfile.TemporaryDirectory(prefix="mlxjan-probe-") as tmp:
        out = Path(tmp) / "rows.npy"
        cmd = [sys.executable, "-m", "mlxjan.engine.llamacpp.probe", str(weights),
               "--repack", str(int(plan.repack)), "--out", str(out),
               *(["--embedding"] if embedding else [])]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True,
                                  timeout=PROBE_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            return ProbeResult(None, (), frozenset(), f"no answer in {PROBE_TIMEOUT_S} s")
        if done.returncode != 0:
            return ProbeResult(None, (), frozenset(), _exit_cause(done))
        facts = json.loads(done.stdout.strip().splitlines()[-1])
        return ProbeResult(np.load(out), tuple(facts["tokens"]), frozenset(facts["build"]))


def embedding_probe_in_child(weights: Path, plan: KernelPlan) -> ProbeResult:
    return probe_in_child(weights, plan, embedding=True)


def _exit_cause(done: subprocess.CompletedProcess[str]) -> str:
    if done.returncode < 0:
        return f"the process was killed by {signal.Signals(-done.returncode).name}"
    last = (done.stderr.strip().splitlines() or ["no message"])[-1]
    return f"the process exited with status {done.returncode}: {last[:200]}"
