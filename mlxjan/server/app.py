"""The app factory. Nothing happens at import time; state lives on `app.state`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

from fastapi import FastAPI
from pydantic import BaseModel
from starlette.middleware.cors import CORSMiddleware

from mlxjan import __version__
from mlxjan.engine.base import Engine, WorkerStatus
from mlxjan.engine.manager import EngineManager
from mlxjan.models.store import ModelStore
from mlxjan.server.anthropic.routes import router as anthropic_router
from mlxjan.server.anthropic.serving import MessagesServing
from mlxjan.server.errors import install_error_handlers
from mlxjan.server.models_api import router as models_router
from mlxjan.server.openai.completions.routes import infill_router
from mlxjan.server.openai.completions.routes import router as completions_router
from mlxjan.server.openai.completions.serving import CompletionServing
from mlxjan.server.openai.embeddings.routes import router as embeddings_router
from mlxjan.server.openai.routes import router as openai_router
from mlxjan.server.openai.serving import ChatServing
from mlxjan.server.responses.routes import router as responses_router
from mlxjan.server.responses.serving import ResponsesServing
from mlxjan.server.responses.store import ResponseStore
from mlxjan.server.security import LOOPBACK_ORIGIN_REGEX, SecurityMiddleware
from mlxjan.server.signing import Signer
from mlxjan.server.web.routes import router as web_router
from mlxjan.settings import Settings

CLIENT_HEADERS = ["authorization", "x-api-key", "content-type", "anthropic-version",
                  "anthropic-beta", "x-keep-alive"]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    name: Literal["mlxjan"] = "mlxjan"  # how `mlxjan serve` knows a port is held by mlxjan
    version: str
    models: dict[str, WorkerStatus]


def create_app(settings: Settings, engines: dict[str, Engine] | None = None) -> FastAPI:
    manager = EngineManager(settings, ModelStore(settings.data_dir), engines)
    # Seals reasoning sent to clients; its key file is read or made on first use.
    signer = Signer.for_data_dir(settings.data_dir)
    responses = ResponsesServing(manager, settings, signer, ResponseStore.for_settings(settings))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await responses.aclose()
            await manager.aclose()

    app = FastAPI(title="mlxjan", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    app.state.manager = manager
    app.state.chat_serving = ChatServing(manager, settings)
    app.state.completion_serving = CompletionServing(manager, settings)
    app.state.signer = signer
    app.state.messages_serving = MessagesServing(manager, settings, signer)
    app.state.responses_serving = responses
    install_error_handlers(app, settings.api_prefix)

    @app.get("/health", tags=["server"], response_model=Health)
    async def health() -> Health:
        """The API is up; each model's worker state (a crashed one with its exit cause)."""
        return Health(version=__version__, models=manager.workers())

    app.include_router(models_router, prefix=settings.api_prefix)
    app.include_router(openai_router, prefix=settings.api_prefix)
    app.include_router(embeddings_router, prefix=settings.api_prefix)
    app.include_router(completions_router, prefix=settings.api_prefix)
    # llama-server's /infill at the root, where editor plugins look for it; and beside the rest.
    app.include_router(infill_router)
    if settings.api_prefix:
        app.include_router(infill_router, prefix=settings.api_prefix)
    app.include_router(anthropic_router, prefix=settings.api_prefix)
    app.include_router(responses_router, prefix=settings.api_prefix)
    # The page stays at `/` whatever the prefix; it reads the prefix from its own HTML.
    app.include_router(web_router)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_origin_regex=LOOPBACK_ORIGIN_REGEX,
        allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
        allow_headers=CLIENT_HEADERS,
    )
    app.add_middleware(SecurityMiddleware, settings=settings)
    return app
