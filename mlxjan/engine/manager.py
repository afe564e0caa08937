"""Which engine serves which model id, and for how long it stays loaded.

Serving code asks the manager for a model by id (`use`); the manager validates the id,
looks it up in the store, builds the engine the settings choose (a worker process, started by
its first request) and holds it for the request under the memory budget and keep-alive of
`residency.py`. A request names the kind of model it needs (chat or embedding): a model of
the other kind is refused before anything is loaded or made room for. Tests hand it ready
engines instead (e.g. FakeEngine), and then the store is not consulted.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

from mlxjan.engine.base import BudgetStatus, Engine, EngineStatus, WorkerStatus, kind_of
from mlxjan.engine.cache_store import DiskCacheConfig
from mlxjan.engine.footprint import estimate
from mlxjan.engine.protocol import EngineSpec
from mlxjan.engine.residency import Lease, Residency, Resident
from mlxjan.engine.scheduler import Admission
from mlxjan.engine.supervisor import WorkerEngine
from mlxjan.errors import EmbeddingFormatError, ModelNotFoundError, WrongModelKindError
from mlxjan.models.store import Manifest, ModelStore
from mlxjan.settings import Settings
from mlxjan.types import ModelInfo, ModelKind

log = logging.getLogger(__name__)


class EngineManager:
    def __init__(self, settings: Settings, store: ModelStore,
                 engines: dict[str, Engine] | None = None) -> None:
        self._settings = settings
        self._store = store
        self._fixed = engines is not None
        self._lock = asyncio.Lock()
        self.admission = Admission(settings.max_pending_requests)
        self.residency = Residency(settings.memory_budget(), settings.max_loaded_models,
                                   settings.when_full, settings.request_timeout)
        for model_id, engine in (engines or {}).items():
            self.residency.residents[model_id] = self._resident(model_id, engine, 0)

    def list_models(self) -> list[ModelInfo]:
        """Installed models (or the ones handed in), each with whether it is loaded."""
        if self._fixed:
            known = [(model_id, 0, kind_of(r.engine))
                     for model_id, r in self.residency.residents.items()]
        else:
            known = [(m.id, m.created, m.kind) for m in self._store.list()]
        return [self._info(*model) for model in known]

    def _info(self, model_id: str, created: int, kind: ModelKind) -> ModelInfo:
        resident = self.residency.residents.get(model_id)
        if resident is None:
            return ModelInfo(id=model_id, created=created, kind=kind)
        loaded = resident.is_loaded()
        memory = (resident.measured() if loaded else None) or resident.estimated or None
        return ModelInfo(id=model_id, created=created, kind=kind, loaded=loaded,
                         memory_bytes=memory, expires_at=resident.expires_at)

    def get_model(self, model_id: str) -> ModelInfo:
        for info in self.list_models():
            if info.id == model_id:
                return info
        raise ModelNotFoundError(model_id)

    async def use(self, model_id: str, keep_alive: float | None,
                  kind: ModelKind | None = "chat") -> Lease:
        """Hold `model_id` for one request (loaded by its first use, within the budget);
        `keep_alive` is how long it stays loaded after its last request (None: until
        unloaded by hand). A model not of `kind` (None: any) is refused first."""
        if kind is not None and (found := self._kind(model_id)) not in (None, kind):
            raise WrongModelKindError(model_id, found)
        return await self.residency.lease(await self._known(model_id), keep_alive)

    def _kind(self, model_id: str) -> ModelKind | None:
        """What the model serves; None for a model unknown here."""
        found = self.residency.residents.get(model_id)
        if found is not None:
            return kind_of(found.engine)
        manifest = None if self._fixed else self._store.get(model_id)
        return manifest.kind if manifest is not None else None

    async def _known(self, model_id: str) -> Resident:
        found = self.residency.residents.get(model_id)
        if found is not None:
            return found
        if self._fixed:
            raise ModelNotFoundError(model_id)
        async with self._lock:
            found = self.residency.residents.get(model_id)
            if found is None:
                manifest = self._store.get(model_id)
                if manifest is None:
                    raise ModelNotFoundError(model_id)
                spec = self.spec_for(manifest)
                need = await asyncio.to_thread(estimate, spec)
                found = self._resident(model_id, WorkerEngine(spec), need.total)
                self.residency.residents[model_id] = found
        return found

    def _resident(self, model_id: str, engine: Engine, estimated: int) -> Resident:
        return Resident(model_id, engine, estimated,
                        pinned=model_id in self._settings.pinned_models,
                        keep_alive=self._settings.default_keep_alive())

    def spec_for(self, manifest: Manifest) -> EngineSpec:
        """What the model's worker builds: an MLX folder can only run on MLX; a GGUF runs on
        either (converted once for MLX)."""
        settings = self._settings
        if manifest.kind == "embedding" and manifest.format != "gguf":
            raise EmbeddingFormatError(manifest.id, manifest.format)
        # Embeddings run on llama.cpp, on a Mac too.
        mlx = manifest.format == "mlx" or (settings.resolved_engine() == "mlx"
                                           and manifest.kind == "chat")
        return EngineSpec(
            kind="mlx" if mlx else "llamacpp", manifest=manifest,
            weights=self._store.weights_path(manifest), data_dir=settings.data_dir,
            context_length=self.context_length_for(manifest), threads=settings.threads,
            tool_grammar=settings.tool_grammar, prompt_cache_bytes=settings.prompt_cache_bytes,
            max_batch=settings.max_batch_size,
            self_checks_dir=settings.self_checks_dir, disk_cache=self.disk_cache_for(manifest),
            log_level=settings.log_level, flash_attention=settings.flash_attention)

    async def load(self, model_id: str, keep_alive: float | None) -> None:
        """Load a model now (by hand: this also clears a model marked failed); it then stays
        for `keep_alive` like a model a request loaded."""
        async with await self.use(model_id, keep_alive, kind=None) as engine:
            await engine.load()

    async def unload(self, model_id: str) -> None:
        """End the model's worker (after its requests in flight): its memory returns."""
        self.get_model(model_id)
        resident = self.residency.residents.get(model_id)
        if resident is not None:
            await self.residency.unload(resident, "by hand")

    def disk_cache_for(self, manifest: Manifest) -> DiskCacheConfig | None:
        """Where this model's prompt-cache entries persist; None when that is off."""
        if not self._settings.prompt_cache_disk_bytes:
            return None
        return DiskCacheConfig(self._settings.cache_dir, manifest.sha256,
                               self._settings.prompt_cache_disk_bytes)

    def context_length_for(self, manifest: Manifest) -> int:
        if self._settings.context_length is not None:
            return self._settings.context_length
        trained = manifest.context_length or 4096
        return min(trained, self._settings.max_context_length)

    def workers(self) -> dict[str, WorkerStatus]:
        """Per model asked for so far that runs in a worker: that worker's state."""
        statuses = {model_id: r.engine.health() for model_id, r in self._residents()}
        return {model_id: status.worker for model_id, status in statuses.items()
                if status.worker is not None}

    def loaded(self) -> list[EngineStatus]:
        """Each model asked for so far: its engine's status and how it stands with the
        budget."""
        return [replace(r.engine.health(), residency=self.residency.status(r))
                for _, r in self._residents()]

    def budget(self) -> BudgetStatus:
        return self.residency.budget_status()

    def _residents(self) -> list[tuple[str, Resident]]:
        return list(self.residency.residents.items())

    async def aclose(self) -> None:
        await self.residency.aclose()
        for _, resident in self._residents():
            await resident.engine.aclose()
        if not self._fixed:
            self.residency.residents.clear()
