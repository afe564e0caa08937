"""Which engine serves which model id: created on first use, then resident.

Serving code asks the manager for an engine by model id; the manager validates the id,
looks it up in the store and builds the engine the settings choose. Tests hand it ready
engines instead (e.g. FakeEngine), and then the store is not consulted.
"""

from __future__ import annotations

import asyncio
import logging

from mlxjan.engine.base import Engine, EngineStatus, WorkerStatus
from mlxjan.engine.cache_store import DiskCacheConfig
from mlxjan.engine.protocol import EngineSpec
from mlxjan.engine.scheduler import Admission
from mlxjan.engine.supervisor import WorkerEngine
from mlxjan.errors import ModelNotFoundError
from mlxjan.models.store import Manifest, ModelStore
from mlxjan.settings import Settings
from mlxjan.types import ModelInfo

log = logging.getLogger(__name__)


class EngineManager:
    def __init__(self, settings: Settings, store: ModelStore,
                 engines: dict[str, Engine] | None = None) -> None:
        self._settings = settings
        self._store = store
        self._fixed = engines is not None
        self._engines: dict[str, Engine] = dict(engines or {})
        self._lock = asyncio.Lock()
        self.admission = Admission(settings.max_pending_requests)

    def list_models(self) -> list[ModelInfo]:
        if self._fixed:
            return [ModelInfo(id=model_id, created=0) for model_id in self._engines]
        return [ModelInfo(id=m.id, created=m.created) for m in self._store.list()]

    def get_model(self, model_id: str) -> ModelInfo:
        for info in self.list_models():
            if info.id == model_id:
                return info
        raise ModelNotFoundError(model_id)

    async def get(self, model_id: str) -> Engine:
        engine = self._engines.get(model_id)
        if engine is not None:
            return engine
        if self._fixed:
            raise ModelNotFoundError(model_id)
        async with self._lock:
            engine = self._engines.get(model_id)
            if engine is None:
                manifest = self._store.get(model_id)
                if manifest is None:
                    raise ModelNotFoundError(model_id)
                engine = self._build(manifest)
                self._engines[model_id] = engine
        return engine

    def _build(self, manifest: Manifest) -> Engine:
        return WorkerEngine(self.spec_for(manifest))

    def spec_for(self, manifest: Manifest) -> EngineSpec:
        """What the model's worker builds: an MLX folder can only run on MLX; a GGUF runs on
        either (converted once for MLX)."""
        settings = self._settings
        mlx = manifest.format == "mlx" or settings.resolved_engine() == "mlx"
        return EngineSpec(
            kind="mlx" if mlx else "llamacpp", manifest=manifest,
            weights=self._store.weights_path(manifest), data_dir=settings.data_dir,
            context_length=self.context_length_for(manifest), threads=settings.threads,
            tool_grammar=settings.tool_grammar, prompt_cache_bytes=settings.prompt_cache_bytes,
            max_batch=settings.max_batch_size,
            self_checks_dir=settings.self_checks_dir, disk_cache=self.disk_cache_for(manifest),
            log_level=settings.log_level)

    async def load(self, model_id: str) -> None:
        """Load a model now (by hand: this also clears a model marked failed)."""
        await (await self.get(model_id)).load()

    async def unload(self, model_id: str) -> None:
        """End the model's worker: its memory returns to the system."""
        self.get_model(model_id)
        engine = self._engines.get(model_id)
        if engine is not None:
            await engine.unload()

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
        statuses = {model_id: engine.health() for model_id, engine in self._engines.items()}
        return {model_id: status.worker for model_id, status in statuses.items()
                if status.worker is not None}

    def loaded(self) -> list[EngineStatus]:
        return [engine.health() for engine in self._engines.values()]

    async def aclose(self) -> None:
        for engine in self._engines.values():
            await engine.aclose()
        if not self._fixed:
            self._engines.clear()
