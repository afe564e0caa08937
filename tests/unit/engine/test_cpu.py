"""Reading the processor from /proc/cpuinfo: flags, and physical cores against logical;
what the llama.cpp context makes of them."""

from __future__ import annotations

from mlxjan.engine.cpu import _linux, cpu_info
from mlxjan.engine.llamacpp.decode import context_params, flash_attention_default


def _block(n: int, core: int, flags: str = "fpu avx2 amx_tile amx_int8") -> str:
    return (f"processor\t: {n}\nmodel name\t: Intel Xeon\nphysical id\t: 0\n"
            f"core id\t\t: {core}\nflags\t\t: {flags}\n")


def test_hyperthread_pairs_count_as_one_core() -> None:
    info = _linux("\n".join(_block(n, n // 2) for n in range(4)), logical=4)
    assert (info.physical_cores, info.logical_cores) == (2, 4)
    assert info.has_amx and info.model == "Intel Xeon"


def test_one_thread_per_core() -> None:
    info = _linux("\n".join(_block(n, n, "avx2") for n in range(2)), logical=2)
    assert info.physical_cores == 2 and not info.has_amx


def test_no_core_ids_counts_processors() -> None:
    text = "processor\t: 0\nFeatures\t: fp asimd\n\nprocessor\t: 1\nFeatures\t: fp asimd\n"
    info = _linux(text, logical=2)
    assert info.physical_cores == 2 and "asimd" in info.flags


def test_this_machine() -> None:
    info = cpu_info()
    assert 1 <= info.physical_cores <= info.logical_cores
    assert info.fingerprint() == cpu_info().fingerprint()


def test_flash_attention_where_it_pays() -> None:
    xeon = _linux("\n".join(_block(n, n, "avx2 avx512f avx512bw") for n in range(2)), 2)
    zen3 = _linux("\n".join(_block(n, n, "avx2 fma") for n in range(2)), 2)
    assert not flash_attention_default(xeon) and flash_attention_default(zen3)
    assert context_params(4096, 2, 1)["flash_attn"] is flash_attention_default(cpu_info())
    assert context_params(4096, 2, 1, flash_attention=True)["flash_attn"] is True
    assert context_params(4096, 2, 1, flash_attention=False)["flash_attn"] is False
