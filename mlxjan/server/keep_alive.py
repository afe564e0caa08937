"""A request's keep-alive for its model: the body's `keep_alive` (Ollama's field), else the
`X-Keep-Alive` header (for clients that cannot add body fields, e.g. Claude Code through
ANTHROPIC_CUSTOM_HEADERS), else the service default."""

from __future__ import annotations

from typing import Annotated

from fastapi import Header
from pydantic import Field

from mlxjan.keep_alive import parse_keep_alive
from mlxjan.settings import Settings

DESCRIPTION = ("How long the model stays loaded after this request (Ollama's keep_alive): "
               "seconds, or a duration such as '5m'; 0 unloads it when the request ends, -1 "
               "keeps it loaded. Default: the server's keep_alive setting.")

# The request-body field, shared by every API's schema.
KeepAliveField = Annotated[str | float | None, Field(description=DESCRIPTION)]
KeepAliveHeader = Annotated[str | None, Header(alias="x-keep-alive", description=DESCRIPTION)]


def requested(body: str | float | None, header: str | None, settings: Settings
              ) -> float | None:
    """Seconds the model stays loaded after the request; None: until unloaded."""
    value = body if body is not None else header
    return settings.default_keep_alive() if value is None else parse_keep_alive(value)
