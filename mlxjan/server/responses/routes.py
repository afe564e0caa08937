"""Thin Responses API routes: parse, hand to ResponsesServing, return."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from mlxjan.server.keep_alive import KeepAliveHeader
from mlxjan.server.openai.schemas import ERROR_RESPONSES
from mlxjan.server.responses import schemas as s
from mlxjan.server.responses.serving import ResponsesServing

ResponseId = Annotated[str, Path(min_length=1, max_length=128)]


def serving(request: Request) -> ResponsesServing:
    found: ResponsesServing = request.app.state.responses_serving
    return found


router = APIRouter(tags=["responses"], responses=ERROR_RESPONSES)


@router.post(
    "/responses",
    response_model=s.ResponseOut,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def create_response(body: s.ResponsesRequest, request: Request,
                          keep_alive: KeepAliveHeader = None) -> Response:
    return await serving(request).create(body, keep_alive)


@router.post("/responses/input_tokens", response_model=s.InputTokensOut)
async def input_tokens(body: s.InputTokensRequest, request: Request,
                       keep_alive: KeepAliveHeader = None) -> s.InputTokensOut:
    return await serving(request).input_tokens(body, keep_alive)


@router.get("/responses/{response_id}", response_model=s.ResponseOut)
async def get_response(response_id: ResponseId, request: Request) -> s.ResponseOut:
    return await serving(request).get(response_id)


@router.delete("/responses/{response_id}", response_model=s.DeletedOut)
async def delete_response(response_id: ResponseId, request: Request) -> s.DeletedOut:
    return await serving(request).delete(response_id)


@router.post("/responses/{response_id}/cancel", response_model=s.ResponseOut)
async def cancel_response(response_id: ResponseId, request: Request) -> s.ResponseOut:
    return await serving(request).cancel(response_id)


@router.get("/responses/{response_id}/input_items", response_model=s.InputItemList)
async def list_input_items(
        response_id: ResponseId, request: Request,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        order: Annotated[Literal["asc", "desc"], Query()] = "desc",
        after: Annotated[str | None, Query(max_length=128)] = None) -> s.InputItemList:
    return await serving(request).input_items(response_id, limit, order, after)
