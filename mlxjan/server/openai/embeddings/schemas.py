"""OpenAI embeddings wire types. Unknown request fields are ignored."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from mlxjan.server.keep_alive import KeepAliveField

# OpenAI's own bounds: 2048 inputs a request.
MAX_INPUTS = 2048
TokenId = Annotated[int, Field(ge=0, lt=2**31)]


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    input: str | list[str] | list[TokenId] | list[list[TokenId]] = Field(
        description="A text, a list of texts, a token array or a list of token arrays (ids "
                    "of the model's own vocabulary, used as they are). Texts for "
                    "nomic-embed-text start with a task prefix: 'search_query: ', "
                    "'search_document: ', 'clustering: ' or 'classification: '.")
    encoding_format: Literal["float", "base64"] = Field(
        default="float", description="base64: each vector's little-endian float32 bytes")
    dimensions: int | None = Field(
        default=None, ge=1, le=65536,
        description="Fewer dimensions than the model's own, for models trained for it "
                    "(Matryoshka): each vector cut to this length and normalised again.")
    user: str | None = None
    keep_alive: KeepAliveField = None


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
