"""Thin Anthropic routes. `?beta=true` and any anthropic-version/-beta header are accepted."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from mlxjan.server.anthropic import schemas as s
from mlxjan.server.anthropic.serving import MessagesServing
from mlxjan.server.keep_alive import KeepAliveHeader


def serving(request: Request) -> MessagesServing:
    found: MessagesServing = request.app.state.messages_serving
    return found


router = APIRouter(tags=["anthropic"], responses=s.ERROR_RESPONSES)


@router.post(
    "/messages",
    response_model=s.MessageOut,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def create_message(body: s.MessagesRequest, request: Request,
                         keep_alive: KeepAliveHeader = None) -> Response:
    return await serving(request).create(body, keep_alive)


@router.post("/messages/count_tokens", response_model=s.CountTokensOut)
async def count_tokens(body: s.CountTokensRequest, request: Request,
                       keep_alive: KeepAliveHeader = None) -> s.CountTokensOut:
    return await serving(request).count_tokens(body, keep_alive)
