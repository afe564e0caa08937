"""Thin embeddings route: parse, hand to EmbeddingServing, return."""

from __future__ import annotations

from fastapi import APIRouter, Request

from mlxjan.server.keep_alive import KeepAliveHeader
from mlxjan.server.openai import schemas as openai
from mlxjan.server.openai.embeddings import schemas as s
from mlxjan.server.openai.embeddings.serving import EmbeddingServing

router = APIRouter(tags=["openai"], responses=openai.ERROR_RESPONSES)


def serving(request: Request) -> EmbeddingServing:
    # Stateless: built from the app's manager and settings for each request.
    return EmbeddingServing(request.app.state.manager, request.app.state.settings)


@router.post("/embeddings", response_model=s.EmbeddingList)
async def embeddings(body: s.EmbeddingRequest, request: Request,
                     keep_alive: KeepAliveHeader = None) -> s.EmbeddingList:
    """Embed texts or token arrays with an embedding model (e.g. nomic-embed-text-v1.5)."""
    return await serving(request).create(body, keep_alive)
