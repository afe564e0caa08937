"""Makes a llama.cpp kernel path wrong on purpose, for tests/e2e/test_kernel_check.py.

Python imports this at start-up in every process whose PYTHONPATH holds this folder (the
server and the self-check's probe children). MLXJAN_TEST_FAULT says what breaks:

- `repacked-garbage`: models loaded with repacking (use_extra_bufts) compute noise: every
  logits row llama_decode leaves is overwritten, so the sampler and the self-check see it;
- `repacked-crash`: loading a model with repacking kills the process with SIGSEGV, as
  llama.cpp's AMX path does on some Xeons;
- `all-crash`: the same for every load, the plain kernels too.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import signal
import sys
from types import ModuleType
from typing import Any

FAULT = os.environ.get("MLXJAN_TEST_FAULT", "")


def _break(llama_cpp: Any) -> None:
    import ctypes

    import numpy as np

    broken_models: set[int] = set()
    broken_contexts: set[int] = set()
    load_model = llama_cpp.llama_model_load_from_file
    new_context = llama_cpp.llama_init_from_model
    decode = llama_cpp.llama_decode

    def address(pointer: Any) -> int:
        return ctypes.cast(pointer, ctypes.c_void_p).value or 0

    def faulty_load(path: bytes, params: Any) -> Any:
        broken = FAULT == "all-crash" or bool(params.use_extra_bufts)
        if broken and FAULT.endswith("crash") and not params.vocab_only:
            os.kill(os.getpid(), signal.SIGSEGV)
        model = load_model(path, params)
        if broken:
            broken_models.add(address(model))
        return model

    def faulty_context(model: Any, params: Any) -> Any:
        ctx = new_context(model, params)
        if address(model) in broken_models:
            broken_contexts.add(address(ctx))
        return ctx

    def faulty_decode(ctx: Any, batch: Any) -> int:
        code: int = decode(ctx, batch)
        if address(ctx) in broken_contexts:
            outputs = sum(bool(batch.logits[i]) for i in range(batch.n_tokens))
            vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(
                llama_cpp.llama_get_model(ctx)))
            rows = np.ctypeslib.as_array(llama_cpp.llama_get_logits(ctx),
                                         shape=(outputs * vocab,))
            rows[:] = np.random.default_rng().normal(0, 5, rows.shape)
        return code

    # The package re-exports its `llama_cpp.llama_cpp` bindings, and _internals calls them
    # through that module: replace them in both.
    for module in (llama_cpp, llama_cpp.llama_cpp):
        module.llama_model_load_from_file = faulty_load
        module.llama_init_from_model = faulty_context
        module.llama_decode = faulty_decode


class _Patcher(importlib.abc.MetaPathFinder):
    """Breaks `llama_cpp` right after it is first imported."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != "llama_cpp":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_and_break(module: ModuleType) -> None:
            exec_module(module)
            _break(module)

        loader.exec_module = exec_and_break  # type: ignore[method-assign]
        return spec


if FAULT:
    sys.meta_path.insert(0, _Patcher())
