"""Thin OpenAI routes: parse, hand to ChatServing, return."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from mlxjan.server.openai import schemas as s
from mlxjan.server.openai.serving import ChatServing


def _serving(request: Request) -> ChatServing:
    serving: ChatServing = request.app.state.chat_serving
    return serving


router = APIRouter(tags=["openai"])


@router.get("/models", response_model=s.ModelList)
async def list_models(request: Request) -> s.ModelList:
    return _serving(request).models()


@router.get("/models/{model_id}", response_model=s.ModelCard)
async def get_model(model_id: str, request: Request) -> s.ModelCard:
    return _serving(request).model(model_id)


@router.post(
    "/chat/completions",
    response_model=s.ChatCompletion,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def chat_completions(body: s.ChatCompletionRequest, request: Request) -> Response:
    return await _serving(request).create(body)
