"""`GET /models` (OpenAI's list shape, or Anthropic's with anthropic-version), `/status`,
and loading or unloading a model by hand."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from mlxjan.engine.base import EngineStatus
from mlxjan.engine.manager import EngineManager
from mlxjan.server.anthropic import schemas as anthropic
from mlxjan.server.anthropic.routes import serving as messages_serving
from mlxjan.server.openai import schemas as openai
from mlxjan.server.openai.routes import serving as chat_serving

router = APIRouter(tags=["models"], responses=openai.ERROR_RESPONSES)


@router.get("/models", response_model=openai.ModelList | anthropic.ModelListOut)
async def list_models(request: Request) -> openai.ModelList | anthropic.ModelListOut:
    if "anthropic-version" in request.headers:
        return messages_serving(request).models()
    return chat_serving(request).models()


class RequestsStatus(BaseModel):
    active: int  # running or waiting
    limit: int


class ServerStatus(BaseModel):
    models: list[EngineStatus]
    requests: RequestsStatus


@router.get("/status", tags=["server"], response_model=ServerStatus)
async def status(request: Request) -> ServerStatus:
    """What the server holds now: each model asked for (its engine, batch, prompt cache and
    worker process) and the requests running or waiting."""
    manager: EngineManager = request.app.state.manager
    return ServerStatus(models=manager.loaded(), requests=RequestsStatus(
        active=manager.admission.active, limit=manager.admission.limit))


@router.get("/models/{model_id}", response_model=openai.ModelCard)
async def get_model(model_id: str, request: Request) -> openai.ModelCard:
    return chat_serving(request).model(model_id)


@router.post("/models/{model_id}/load", tags=["server"])
async def load_model(model_id: str, request: Request) -> dict[str, object]:
    """Start the model's worker now (also clears a model marked failed after crashes)."""
    manager: EngineManager = request.app.state.manager
    await manager.load(model_id)
    return {"id": model_id, "loaded": True}


@router.post("/models/{model_id}/unload", tags=["server"])
async def unload_model(model_id: str, request: Request) -> dict[str, object]:
    """End the model's worker; its memory returns to the system."""
    manager: EngineManager = request.app.state.manager
    await manager.unload(model_id)
    return {"id": model_id, "loaded": False}
