"""`GET /models`: OpenAI's list shape, or Anthropic's when the caller sends anthropic-version."""

from __future__ import annotations

from fastapi import APIRouter, Request

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


@router.get("/models/{model_id}", response_model=openai.ModelCard)
async def get_model(model_id: str, request: Request) -> openai.ModelCard:
    return chat_serving(request).model(model_id)
