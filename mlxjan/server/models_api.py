"""`GET /models` (OpenAI's list shape, or Anthropic's with anthropic-version), `/status`,
and loading or unloading a model by hand."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from mlxjan.engine.base import BudgetStatus, EngineStatus
from mlxjan.engine.manager import EngineManager
from mlxjan.server.anthropic import schemas as anthropic
from mlxjan.server.anthropic.routes import serving as messages_serving
from mlxjan.server.keep_alive import DESCRIPTION as KEEP_ALIVE
from mlxjan.server.keep_alive import requested
from mlxjan.server.openai import schemas as openai
from mlxjan.server.openai.routes import serving as chat_serving
from mlxjan.settings import Settings

router = APIRouter(tags=["models"], responses=openai.ERROR_RESPONSES)


@router.get("/models", response_model=openai.ModelList | anthropic.ModelListOut)
async def list_models(request: Request, loaded: bool = Query(
        default=False, description="only the models loaded now")
                      ) -> openai.ModelList | anthropic.ModelListOut:
    """Installed models; each OpenAI card also says whether it is loaded, its memory and
    when it unloads."""
    if "anthropic-version" in request.headers:
        return messages_serving(request).models(loaded)
    return chat_serving(request).models(loaded)


class RequestsStatus(BaseModel):
    active: int  # running or waiting
    limit: int


class ServerStatus(BaseModel):
    models: list[EngineStatus]
    requests: RequestsStatus
    budget: BudgetStatus


class LoadState(BaseModel):
    id: str
    loaded: bool


@router.get("/status", tags=["server"], response_model=ServerStatus)
async def status(request: Request) -> ServerStatus:
    """What the server holds now: each model asked for (its engine, batch, prompt cache,
    worker process, memory and keep-alive), the requests running or waiting, and the memory
    budget."""
    manager: EngineManager = request.app.state.manager
    return ServerStatus(models=manager.loaded(), requests=RequestsStatus(
        active=manager.admission.active, limit=manager.admission.limit),
        budget=manager.budget())


@router.get("/models/{model_id}", response_model=openai.ModelCard)
async def get_model(model_id: str, request: Request) -> openai.ModelCard:
    return chat_serving(request).model(model_id)


@router.post("/models/{model_id}/load", tags=["server"], response_model=LoadState)
async def load_model(model_id: str, request: Request, keep_alive: str | None = Query(
        default=None, description=KEEP_ALIVE)) -> LoadState:
    """Start the model's worker now (also clears a model marked failed after crashes),
    making room within the memory budget as a request would."""
    manager: EngineManager = request.app.state.manager
    settings: Settings = request.app.state.settings
    await manager.load(model_id, requested(keep_alive, None, settings))
    return LoadState(id=model_id, loaded=True)


@router.post("/models/{model_id}/unload", tags=["server"], response_model=LoadState)
async def unload_model(model_id: str, request: Request) -> LoadState:
    """End the model's worker once its requests in flight finish; its memory returns."""
    manager: EngineManager = request.app.state.manager
    await manager.unload(model_id)
    return LoadState(id=model_id, loaded=False)
