"""Render typed errors once, at the edge, in the caller's protocol.

The protocol is decided from the request: the Anthropic routes (`/messages...`) and any
request carrying an `anthropic-version` header get Anthropic's shape, all others OpenAI's.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match

from mlxjan.errors import InvalidRequestError, MlxjanError, NotFoundError

log = logging.getLogger(__name__)
Protocol = Literal["openai", "anthropic"]


def protocol_of(path: str, headers: Mapping[str, str], api_prefix: str) -> Protocol:
    if path.startswith(f"{api_prefix}/messages") or "anthropic-version" in headers:
        return "anthropic"
    return "openai"


def error_body(err: MlxjanError, protocol: Protocol) -> dict[str, object]:
    if protocol == "anthropic":
        return {"type": "error",
                "error": {"type": err.anthropic_type, "message": err.anthropic_message}}
    return {"error": {"message": err.message, "type": err.openai_type,
                      "param": err.param, "code": err.code}}


def error_status(err: MlxjanError, protocol: Protocol) -> int:
    if protocol == "anthropic" and err.anthropic_status is not None:
        return err.anthropic_status
    return err.status


def error_response(err: MlxjanError, protocol: Protocol) -> JSONResponse:
    if err.status >= 500:
        log.error("%s: %s", type(err).__name__, err.message)
    headers = {"Retry-After": "1"} if error_status(err, protocol) in (503, 529) else None
    return JSONResponse(error_body(err, protocol), status_code=error_status(err, protocol),
                        headers=headers)


def error_json(err: MlxjanError, protocol: Protocol) -> str:
    """An error after a 200 stream has begun goes out in-band, in the same shape."""
    return json.dumps(error_body(err, protocol))


def validation_error(exc: RequestValidationError) -> InvalidRequestError:
    errors = exc.errors()
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return InvalidRequestError("The request body is not valid JSON: "
                                   f"{first.get('ctx', {}).get('error', 'parse error')}")
    # Of a union's errors (one per member), the one reaching deepest into the body.
    located = [(_param_path(error.get("loc", ()), exc.body), error) for error in errors]
    path, chosen = max(located, key=lambda pair: len(pair[0]), default=([], first))
    param = ".".join(path) or None
    message = str(chosen.get("msg", "invalid request"))
    return InvalidRequestError(f"{param}: {message}" if param else message, param=param)


def _param_path(loc: Sequence[object], body: object) -> list[str]:
    """The location as a path into the request body. pydantic puts a union member's name
    or tag in the location ('str', 'list[...]', 'message'); the body tells those apart from
    the fields and indices: a part that does not lead into it is left out, but for a field
    missing from the object the location ends in."""
    parts = [part for part in loc if part != "body"]
    if body is None:  # nothing to walk: keep the location as it is
        return [str(part) for part in parts]
    path: list[str] = []
    node = body
    for position, part in enumerate(parts):
        inside = (isinstance(node, dict) and isinstance(part, str) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node))
        if inside:
            node = node[part]  # type: ignore[index]
        elif not (position == len(parts) - 1 and isinstance(node, dict)):
            continue
        path.append(str(part))
    return path


def http_error(exc: StarletteHTTPException) -> MlxjanError:
    err = NotFoundError(str(exc.detail)) if exc.status_code == 404 else MlxjanError(
        str(exc.detail))
    err.status = exc.status_code
    if exc.status_code < 500:
        err.openai_type = err.anthropic_type = "invalid_request_error"
        if exc.status_code == 404:
            err.anthropic_type = "not_found_error"
    return err


def allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """Every method some route takes at this path: Starlette's 405 names only those of the
    first route matching it (`/responses/{id}` has a GET route and a DELETE route)."""
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches(request.scope)
        if match == Match.PARTIAL and isinstance(route, BaseRoute):
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


def install_error_handlers(app: FastAPI, api_prefix: str) -> None:
    def render(request: Request, err: MlxjanError) -> JSONResponse:
        return error_response(err, protocol_of(request.url.path, request.headers, api_prefix))

    async def on_mlxjan_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, MlxjanError)
        return render(request, exc)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return render(request, validation_error(exc))

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        response = render(request, http_error(exc))
        response.headers.update(exc.headers or {})  # e.g. Allow on a 405
        if exc.status_code == 405:
            response.headers["Allow"] = ", ".join(allowed_methods(app, request))
        return response

    app.add_exception_handler(MlxjanError, on_mlxjan_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
