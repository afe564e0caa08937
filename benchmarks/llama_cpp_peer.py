"""llama-cpp-python's own server as a benchmark peer, loading under the kernel plan the
engine's self-check chose for this CPU (so it neither crashes on AMX Xeons nor gets kernels
mlxjan is denied).

    python -m benchmarks.llama_cpp_peer --repack 0|1 [llama_cpp.server arguments]
"""

from __future__ import annotations

import runpy
import sys
from typing import Any

from mlxjan.engine.llamacpp.kernels import KernelPlan


def main() -> None:
    import llama_cpp.llama_cpp as bindings

    flag = sys.argv.index("--repack")
    repack = sys.argv[flag + 1] == "1"
    del sys.argv[flag:flag + 2]
    defaults = bindings.llama_model_default_params
    plan = KernelPlan(repack)

    def planned() -> Any:
        return plan.apply(defaults())

    bindings.llama_model_default_params = planned  # what `Llama` builds its params from
    runpy.run_module("llama_cpp.server", run_name="__main__")


if __name__ == "__main__":
    main()
