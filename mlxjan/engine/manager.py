"""Which engine serves which model id: created on first use, then resident.

Serving code asks the manager for an engine by model id; the manager validates the id,
looks it up in the store and builds the engine the settings choose. Tests hand it ready
engines instead (e.g. FakeEngine), and then the store is not consulted.
"""

from __future__ import annotations

import asyncio
import logging

from mlxjan.engine.base import Engine
from mlxjan.engine.cache_store import DiskCacheConfig
from mlxjan.engine.llamacpp.kernels import KernelCheck
from mlxjan.engine.scheduler import Admission
from mlxjan.engine.selfcheck import Remembered
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
        # An MLX folder can only run on MLX; a GGUF runs on either (converted once for MLX).
        if manifest.format == "mlx" or self._settings.resolved_engine() == "mlx":
            return self._build_mlx(manifest)
        from mlxjan.engine.llamacpp.engine import LlamaCppEngine

        return LlamaCppEngine(
            manifest.id, self._store.weights_path(manifest),
            chat_template=manifest.chat_template,
            context_length=self.context_length_for(manifest),
            threads=self._settings.threads,
            tool_grammar=self._settings.tool_grammar,
            prompt_cache_bytes=self._settings.prompt_cache_bytes,
            disk_cache=self.disk_cache_for(manifest),
            max_batch=self._settings.max_batch_size,
            kernels=KernelCheck(self._settings.self_checks_dir),
            model_key=manifest.sha256,
        )

    def _build_mlx(self, manifest: Manifest) -> Engine:
        from mlxjan.engine.mlx.converted import mlx_model_dir
        from mlxjan.engine.mlx.engine import MlxEngine

        return MlxEngine(
            manifest.id, lambda: mlx_model_dir(self._store, manifest),
            chat_template=manifest.chat_template,
            context_length=self.context_length_for(manifest),
            tool_grammar=self._settings.tool_grammar,
            prompt_cache_bytes=self._settings.prompt_cache_bytes,
            max_batch=self._settings.max_batch_size,
            disk_cache=self.disk_cache_for(manifest),
            self_checks=Remembered(self._settings.self_checks_dir),
            model_key=manifest.sha256,
        )

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

    def loaded(self) -> list[dict[str, object]]:
        return [engine.health() for engine in self._engines.values()]

    async def aclose(self) -> None:
        for engine in self._engines.values():
            await engine.aclose()
        if not self._fixed:
            self._engines.clear()
