"""Render typed errors once, at the edge, in the caller's protocol."""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlxjan.errors import (
    InvalidRequestError,
    MlxjanError,
    NotFoundError,
)

log = logging.getLogger(__name__)


def openai_error_body(err: MlxjanError) -> dict[str, object]:
    return {"error": {"message": err.message, "type": err.openai_type,
                      "param": err.param, "code": err.code}}


def error_response(err: MlxjanError) -> JSONResponse:
    if err.status >= 500:
        log.error("%s: %s", type(err).__name__, err.message)
    return JSONResponse(openai_error_body(err), status_code=err.status)


def sse_error_payload(err: MlxjanError) -> str:
    """An error after a 200 stream has begun goes out in-band, in the same shape."""
    return json.dumps(openai_error_body(err))


def validation_error(exc: RequestValidationError) -> InvalidRequestError:
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    if first.get("type") == "json_invalid":
        return InvalidRequestError("The request body is not valid JSON: "
                                   f"{first.get('ctx', {}).get('error', 'parse error')}")
    param = ".".join(loc) or None
    message = str(first.get("msg", "invalid request"))
    return InvalidRequestError(f"{param}: {message}" if param else message, param=param)


def install_error_handlers(app: FastAPI) -> None:
    async def on_mlxjan_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, MlxjanError)
        return error_response(exc)

    async def on_validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(validation_error(exc))

    async def on_http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        err = NotFoundError(str(exc.detail)) if exc.status_code == 404 else MlxjanError(
            str(exc.detail))
        err.status = exc.status_code
        if exc.status_code < 500:
            err.openai_type = "invalid_request_error"
        return error_response(err)

    app.add_exception_handler(MlxjanError, on_mlxjan_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
