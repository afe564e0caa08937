"""Embeddings: the wire request checked and turned into an EmbeddingRequest, embedded by the
model's engine (an embedding model, refused otherwise before it loads), and the vectors
written as floats or base64."""

from __future__ import annotations

import asyncio
import base64

import numpy as np

from mlxjan.engine.base import Embedder
from mlxjan.engine.manager import EngineManager
from mlxjan.errors import InvalidRequestError, RequestTimeoutError, WrongModelKindError
from mlxjan.server.keep_alive import requested
from mlxjan.server.openai.embeddings import schemas as s
from mlxjan.settings import Settings
from mlxjan.types import EmbeddingInput, EmbeddingRequest, Embeddings


class EmbeddingServing:
    def __init__(self, manager: EngineManager, settings: Settings) -> None:
        self._manager = manager
        self._settings = settings

    async def create(self, body: s.EmbeddingRequest, keep_alive_header: str | None = None
                     ) -> s.EmbeddingList:
        request = to_embedding_request(body)
        keep_alive = requested(body.keep_alive, keep_alive_header, self._settings)
        ticket = self._manager.admission.enter()
        try:
            async with await self._manager.use(body.model, keep_alive,
                                               kind="embedding") as engine:
                if not isinstance(engine, Embedder):
                    raise WrongModelKindError(body.model, "chat")
                embeddings = await self._within_timeout(engine, request)
        finally:
            ticket.release()
        return embedding_list(body, embeddings)

    async def _within_timeout(self, engine: Embedder, request: EmbeddingRequest
                              ) -> Embeddings:
        seconds = self._settings.request_timeout
        try:
            return await asyncio.wait_for(engine.embed(request), seconds)
        except TimeoutError:
            raise RequestTimeoutError(
                f"embedding did not finish within the {seconds:g} s request timeout") from None


def to_embedding_request(body: s.EmbeddingRequest) -> EmbeddingRequest:
    """The inputs as texts or token tuples; an empty one (or none at all) is refused."""
    items = _items(body.input)
    if not items:
        raise InvalidRequestError("`input` is empty: give a text, a list of texts or "
                                  "token arrays", param="input")
    if len(items) > s.MAX_INPUTS:
        raise InvalidRequestError(f"`input` has {len(items)} items; at most "
                                  f"{s.MAX_INPUTS} a request", param="input")
    for index, item in enumerate(items):
        if len(item) == 0:
            raise InvalidRequestError(f"input {index} is empty: an empty text has no "
                                      "embedding", param="input")
    return EmbeddingRequest(body.model, tuple(items), body.dimensions)


def _items(raw: str | list[str] | list[int] | list[list[int]]) -> list[EmbeddingInput]:
    """A text, texts, one token array or token arrays, as a list of inputs."""
    if isinstance(raw, str):
        return [raw]
    tokens = [t for t in raw if isinstance(t, int)]
    if tokens:  # one token array (the schema admits no list mixing ids with others)
        return [tuple(tokens)]
    return [item if isinstance(item, str) else tuple(item) for item in raw
            if isinstance(item, (str, list))]


def embedding_list(body: s.EmbeddingRequest, embeddings: Embeddings) -> s.EmbeddingList:
    encode = as_base64 if body.encoding_format == "base64" else list
    data = [s.Embedding(index=n, embedding=encode(vector))
            for n, vector in enumerate(embeddings.vectors)]
    tokens = embeddings.prompt_tokens
    return s.EmbeddingList(data=data, model=body.model,
                           usage=s.EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens))


def as_base64(vector: tuple[float, ...]) -> str:
    """Little-endian float32 bytes, as the OpenAI SDK decodes them."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
