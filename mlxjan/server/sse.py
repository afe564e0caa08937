"""The only place Server-Sent Events text is produced."""

from __future__ import annotations

from pydantic import BaseModel

DONE = "data: [DONE]\n\n"
# For every event stream: no caching, and no buffering by a proxy (nginx) on the way.
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def data(payload: BaseModel | str) -> str:
    body = payload if isinstance(payload, str) else payload.model_dump_json(exclude_none=True)
    return f"data: {body}\n\n"


def named(event: str, payload: BaseModel | str) -> str:
    """An `event:` + `data:` pair, as Anthropic streams; nulls are kept (it sends them)."""
    body = payload if isinstance(payload, str) else payload.model_dump_json()
    return f"event: {event}\ndata: {body}\n\n"


def comment(text: str = "keep-alive") -> str:
    """A comment line: ignored by clients, keeps proxies and idle timers from closing."""
    return f": {text}\n\n"
