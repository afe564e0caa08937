"""`mlxjan doctor`: what stands between this machine and a working server."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from mlxjan.engine.cpu import cpu_info
from mlxjan.engine.llamacpp.kernels import KernelCheck
from mlxjan.machine import available_memory
from mlxjan.models.catalog import CATALOG
from mlxjan.models.store import Manifest, ModelStore
from mlxjan.runner import port_state
from mlxjan.service import manager_for
from mlxjan.settings import Settings

# Weights plus the KV cache at the default context and working buffers, roughly.
MEMORY_OVERHEAD = 1.3
KV_AND_BUFFERS = 512 * 1024 * 1024


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def run_checks(settings: Settings) -> list[Check]:
    checks: list[Check] = []
    state = port_state(settings.host, settings.port)
    where = f"{settings.host}:{settings.port}"
    checks.append(Check("port", state != "other", {
        "free": f"{where} is free", "mlxjan": f"mlxjan is serving on {where}",
        "other": f"{where} is held by another program"}[state]))
    service = manager_for("auto")
    installed = service.definition.exists()
    checks.append(Check("service", True, f"installed ({service.definition})" if installed
                        else "not installed (`mlxjan service install` starts it at login)"))
    store = ModelStore(settings.data_dir)
    models = store.list()
    default = store.get(settings.default_model)
    checks.append(Check("models", default is not None or settings.default_model in CATALOG,
                        f"{len(models)} installed in {store.models_dir}; default "
                        f"'{settings.default_model}' "
                        + ("installed" if default else "will be fetched by `mlxjan serve`")))
    checks.append(Check("cpu", True, cpu_info().describe()))
    if default is not None and default.format == "gguf" \
            and settings.resolved_engine() == "llamacpp":
        checks.append(kernel_check(settings, store, default))
    size = default.size if default else CATALOG[settings.default_model].size \
        if settings.default_model in CATALOG else None
    free = available_memory()
    if size is not None and free is not None:
        need = int(size * MEMORY_OVERHEAD) + KV_AND_BUFFERS
        checks.append(Check("memory", free >= need, f"{free / 2**30:.1f} GiB available, the "
                            f"default model needs about {need / 2**30:.1f} GiB"))
    return checks


def kernel_check(settings: Settings, store: ModelStore, manifest: Manifest) -> Check:
    """The load-time self-check the server runs (engine/llamacpp/kernels.py), same verdict cache."""
    verdict = KernelCheck(settings.self_checks_dir).verdict(store.weights_path(manifest),
                                                            manifest.sha256)
    return Check("kernels", verdict.refused is None,
                 f"{manifest.id}: {verdict.refused or verdict.detail}")


def doctor(settings: Settings) -> int:
    checks = run_checks(settings)
    for check in checks:
        print(f"{'ok ' if check.ok else 'BAD'} {check.name:8} {check.detail}", file=sys.stdout)
    return 0 if all(c.ok for c in checks) else 1
