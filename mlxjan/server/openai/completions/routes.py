"""Thin routes: `/v1/completions` (under the API prefix) and `/infill` (at the root, where
llama.vim and llama.vscode look for it, and under the prefix too)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from mlxjan.server.keep_alive import KeepAliveHeader
from mlxjan.server.openai.completions import schemas as s
from mlxjan.server.openai.completions.serving import CompletionServing
from mlxjan.server.openai.schemas import ERROR_RESPONSES


def serving(request: Request) -> CompletionServing:
    serving: CompletionServing = request.app.state.completion_serving
    return serving


router = APIRouter(tags=["openai"], responses=ERROR_RESPONSES)
infill_router = APIRouter(tags=["llama-server"], responses=ERROR_RESPONSES)


@router.post("/completions", response_model=s.Completion,
             responses={200: {"content": {"text/event-stream": {}}}})
async def completions(body: s.CompletionRequest, request: Request,
                      keep_alive: KeepAliveHeader = None) -> Response:
    return await serving(request).create(body, keep_alive)


@infill_router.post("/infill", response_model=s.InfillResult | dict[str, Any],
                    responses={200: {"content": {"text/event-stream": {}}}})
async def infill(body: s.InfillRequest, request: Request,
                 keep_alive: KeepAliveHeader = None) -> Response:
    return await serving(request).infill(body, keep_alive)
