"""Thin OpenAI routes: parse, hand to ChatServing, return."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from mlxjan.server.keep_alive import KeepAliveHeader
from mlxjan.server.openai import schemas as s
from mlxjan.server.openai.serving import ChatServing


def serving(request: Request) -> ChatServing:
    serving: ChatServing = request.app.state.chat_serving
    return serving


router = APIRouter(tags=["openai"], responses=s.ERROR_RESPONSES)


@router.post(
    "/chat/completions",
    response_model=s.ChatCompletion,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def chat_completions(body: s.ChatCompletionRequest, request: Request,
                           keep_alive: KeepAliveHeader = None) -> Response:
    return await serving(request).create(body, keep_alive)
