"""What this machine's processor is: its instruction-set flags and its physical cores.

Read from the operating system, never from a model library, so the API process can decide
kernel paths and thread counts without importing llama.cpp or MLX.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# llama.cpp's AMX kernels need all three (ggml-cpu/amx); the flags as /proc/cpuinfo names them.
AMX_FLAGS = frozenset({"amx_tile", "amx_int8"})


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: frozenset[str]
    physical_cores: int
    logical_cores: int

    @property
    def has_amx(self) -> bool:
        return self.flags >= AMX_FLAGS

    def fingerprint(self) -> str:
        """Identifies the processor for remembered kernel checks: its model and flags."""
        text = self.model + "\n" + " ".join(sorted(self.flags))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def describe(self) -> str:
        wide = sorted(f for f in self.flags if f.startswith(("avx512f", "amx", "avx2")))
        return (f"{self.model}, {self.physical_cores} physical cores "
                f"({self.logical_cores} logical), {' '.join(wide) or 'no AVX2'}")


@functools.cache  # the processor does not change while the process runs
def cpu_info() -> CpuInfo:
    logical = os.cpu_count() or 1
    if sys.platform == "linux":
        return _linux(Path("/proc/cpuinfo").read_text(errors="replace"), logical)
    if sys.platform == "darwin":
        return _darwin(logical)
    return CpuInfo(platform.processor() or platform.machine(), frozenset(), logical, logical)


def _linux(cpuinfo: str, logical: int) -> CpuInfo:
    """From /proc/cpuinfo: a core is a distinct (physical id, core id) pair; machines that
    report neither (some ARM boards, some VMs) count each processor as a core."""
    model, flags, cores = "", frozenset[str](), set[tuple[str, str]]()
    for block in cpuinfo.split("\n\n"):
        fields = dict(_field(line) for line in block.splitlines() if ":" in line)
        model = model or fields.get("model name", "") or fields.get("Hardware", "")
        flags = flags or frozenset((fields.get("flags") or fields.get("Features", "")).split())
        if "core id" in fields:
            cores.add((fields.get("physical id", "0"), fields["core id"]))
    physical = len(cores) or logical
    return CpuInfo(model or platform.machine(), flags, min(physical, logical), logical)


def _field(line: str) -> tuple[str, str]:
    key, _, value = line.partition(":")
    return key.strip(), value.strip()


def _darwin(logical: int) -> CpuInfo:
    """Apple Silicon: the performance cores (perflevel0), which llama.cpp and MLX run best
    on; Intel Macs: the physical cores."""
    def sysctl(name: str) -> str:
        try:
            return subprocess.run(["sysctl", "-n", name], capture_output=True, text=True,
                                  check=True, timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    cores = sysctl("hw.perflevel0.physicalcpu") or sysctl("hw.physicalcpu")
    flags = frozenset(sysctl("machdep.cpu.features").lower().split()
                      + sysctl("machdep.cpu.leaf7_features").lower().split())
    return CpuInfo(sysctl("machdep.cpu.brand_string") or platform.machine(), flags,
                   int(cores) if cores.isdigit() else logical, logical)
