"""Typed errors rendered in the caller's protocol."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlxjan.engine.protocol import WireError
from mlxjan.errors import (
    AuthenticationError,
    ContextLengthExceededError,
    ConversionError,
    EngineError,
    InvalidRequestError,
    MlxjanError,
    ModelNotFoundError,
    OverloadedError,
    RequestTimeoutError,
    UnsupportedArchitectureError,
)
from mlxjan.server.anthropic import schemas as s
from mlxjan.server.errors import (
    Protocol,
    error_body,
    error_json,
    error_response,
    error_status,
    http_error,
    protocol_of,
    validation_error,
)

# --- protocol_of -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens",
                                  "/v1/messages/batches"])
def test_messages_paths_are_anthropic(path: str) -> None:
    assert protocol_of(path, {}, "/v1") == "anthropic"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/models", "/v1/completions",
                                  "/health", "/messages", "/v2/messages"])
def test_other_paths_are_openai(path: str) -> None:
    assert protocol_of(path, {}, "/v1") == "openai"


def test_the_api_prefix_is_honoured() -> None:
    assert protocol_of("/api/messages", {}, "/api") == "anthropic"
    assert protocol_of("/v1/messages", {}, "/api") == "openai"


@pytest.mark.parametrize("path", ["/v1/models", "/v1/chat/completions", "/nowhere"])
def test_anthropic_version_header_makes_any_request_anthropic(path: str) -> None:
    assert protocol_of(path, {"anthropic-version": "2023-06-01"}, "/v1") == "anthropic"


def test_header_lookup_is_case_insensitive_on_real_headers() -> None:
    headers = Headers(headers={"Anthropic-Version": "2023-06-01"})
    assert protocol_of("/v1/models", headers, "/v1") == "anthropic"
    assert protocol_of("/v1/models", Headers(headers={"OpenAI-Beta": "x"}), "/v1") == "openai"


# --- error_body / error_status ---------------------------------------------------------------


def test_openai_error_body() -> None:
    err = InvalidRequestError("messages.0: bad", param="messages.0")
    assert error_body(err, "openai") == {"error": {
        "message": "messages.0: bad", "type": "invalid_request_error",
        "param": "messages.0", "code": "invalid_request"}}


def test_anthropic_error_body() -> None:
    err = InvalidRequestError("messages.0: bad", param="messages.0")
    assert error_body(err, "anthropic") == {"type": "error", "error": {
        "type": "invalid_request_error", "message": "messages.0: bad"}}


@pytest.mark.parametrize(("err", "openai_type", "code", "anthropic_type"), [
    (ModelNotFoundError("nope"), "invalid_request_error", "model_not_found", "not_found_error"),
    (AuthenticationError("bad key"), "invalid_request_error", "invalid_api_key",
     "authentication_error"),
    (OverloadedError("busy"), "server_error", "overloaded", "overloaded_error"),
    (EngineError("boom"), "server_error", "engine_error", "api_error"),
    (RequestTimeoutError("slow"), "server_error", "request_timeout", "api_error"),
    (MlxjanError("generic"), "server_error", None, "api_error"),
])
def test_error_types_per_protocol(err: MlxjanError, openai_type: str, code: str | None,
                                  anthropic_type: str) -> None:
    openai = error_body(err, "openai")["error"]
    anthropic = error_body(err, "anthropic")["error"]
    assert isinstance(openai, dict) and isinstance(anthropic, dict)
    assert (openai["type"], openai["code"]) == (openai_type, code)
    assert anthropic["type"] == anthropic_type
    assert set(anthropic) == {"type", "message"}


def test_model_not_found_names_the_model_and_param() -> None:
    body = error_body(ModelNotFoundError("ghost"), "openai")["error"]
    assert isinstance(body, dict)
    assert body["param"] == "model"
    assert "'ghost'" in str(body["message"])


@pytest.mark.parametrize(("err", "openai_status", "anthropic_status"), [
    (OverloadedError("busy"), 503, 529),
    (InvalidRequestError("bad"), 400, 400),
    (ContextLengthExceededError(10, 5), 400, 400),
    (AuthenticationError("no"), 401, 401),
    (ModelNotFoundError("x"), 404, 404),
    (RequestTimeoutError("slow"), 408, 408),
    (EngineError("boom"), 500, 500),
])
def test_error_status(err: MlxjanError, openai_status: int, anthropic_status: int) -> None:
    assert error_status(err, "openai") == openai_status
    assert error_status(err, "anthropic") == anthropic_status


@pytest.mark.parametrize(("protocol", "status"), [("openai", 503), ("anthropic", 529)])
def test_overloaded_response_asks_to_retry(protocol: Protocol, status: int) -> None:
    response = error_response(OverloadedError("busy"), protocol)
    assert response.status_code == status
    assert response.headers["retry-after"] == "1"
    assert json.loads(bytes(response.body)) == error_body(OverloadedError("busy"), protocol)


def test_other_errors_have_no_retry_after() -> None:
    response = error_response(InvalidRequestError("bad"), "anthropic")
    assert response.status_code == 400
    assert "retry-after" not in response.headers


def test_error_json_is_the_same_body() -> None:
    err = EngineError("boom")
    assert json.loads(error_json(err, "openai")) == error_body(err, "openai")
    assert json.loads(error_json(err, "anthropic")) == error_body(err, "anthropic")


# --- context length --------------------------------------------------------------------------


def test_context_length_exceeded_in_each_protocol() -> None:
    err = ContextLengthExceededError(304, 200)
    anthropic = error_body(err, "anthropic")["error"]
    assert anthropic == {"type": "invalid_request_error",
                         "message": "prompt is too long: 304 tokens > 200 maximum"}
    openai = error_body(err, "openai")["error"]
    assert isinstance(openai, dict)
    assert openai["code"] == "context_length_exceeded"
    assert openai["param"] == "messages"
    assert "200" in str(openai["message"]) and "304" in str(openai["message"])
    assert "prompt is too long" not in str(openai["message"])


# --- validation_error ------------------------------------------------------------------------


def real_validation_error(body: dict[str, Any]) -> RequestValidationError:
    """What FastAPI raises for this body: pydantic's errors with `body` before each loc."""
    with pytest.raises(ValidationError) as info:
        s.MessagesRequest.model_validate(body)
    errors = [{**e, "loc": ("body", *e["loc"])} for e in info.value.errors()]
    return RequestValidationError(errors)


def test_validation_error_of_a_missing_field() -> None:
    err = validation_error(real_validation_error(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
    assert err.param == "max_tokens"
    assert err.message.startswith("max_tokens: ")
    assert "required" in err.message.lower()
    assert err.status == 400


def test_validation_error_of_a_nested_field() -> None:
    err = validation_error(real_validation_error(
        {"model": "m", "max_tokens": 5, "messages": [{"role": "robot", "content": "hi"}]}))
    assert err.param == "messages.0.role"
    assert err.message.startswith("messages.0.role: ")


def test_validation_error_keeps_list_indices_and_drops_body() -> None:
    exc = RequestValidationError([{"type": "greater_than_equal",
                                   "loc": ("body", "messages", 2, "content", 0, "text"),
                                   "msg": "bad text"}])
    err = validation_error(exc)
    assert err.param == "messages.2.content.0.text"
    assert err.message == "messages.2.content.0.text: bad text"


def test_validation_error_without_location() -> None:
    err = validation_error(RequestValidationError([{"type": "model_type", "loc": ("body",),
                                                    "msg": "Input should be an object"}]))
    assert err.param is None
    assert err.message == "Input should be an object"


def test_validation_error_of_invalid_json() -> None:
    exc = RequestValidationError([{"type": "json_invalid", "loc": ("body", 7),
                                   "msg": "JSON decode error",
                                   "ctx": {"error": "Expecting value"}}])
    err = validation_error(exc)
    assert err.message == "The request body is not valid JSON: Expecting value"
    assert err.param is None


def test_validation_error_with_no_errors() -> None:
    err = validation_error(RequestValidationError([]))
    assert isinstance(err, InvalidRequestError)
    assert err.message == "invalid request"
    assert err.param is None


# --- http_error -------------------------------------------------------------------------------


def test_http_404_is_not_found_in_both_protocols() -> None:
    err = http_error(StarletteHTTPException(404, "Not Found"))
    assert error_status(err, "openai") == error_status(err, "anthropic") == 404
    assert error_body(err, "anthropic")["error"] == {"type": "not_found_error",
                                                     "message": "Not Found"}
    openai = error_body(err, "openai")["error"]
    assert isinstance(openai, dict) and openai["type"] == "invalid_request_error"


def test_http_405_is_an_invalid_request() -> None:
    err = http_error(StarletteHTTPException(405, "Method Not Allowed"))
    assert err.status == 405
    assert error_body(err, "anthropic")["error"] == {"type": "invalid_request_error",
                                                     "message": "Method Not Allowed"}


def test_http_error_does_not_change_the_error_classes() -> None:
    http_error(StarletteHTTPException(405, "Method Not Allowed"))
    http_error(StarletteHTTPException(404, "Not Found"))
    assert MlxjanError.status == 500
    assert MlxjanError.openai_type == "server_error"
    assert MlxjanError.anthropic_type == "api_error"


@pytest.mark.parametrize("err", [
    UnsupportedArchitectureError("phi3", ("qwen2", "llama")),
    ConversionError("unsupported BPE pre-tokenizer 'mystery'"),
])
def test_a_model_that_cannot_be_converted_is_the_clients_error(err: MlxjanError) -> None:
    # Raised in the worker while it loads a GGUF on the MLX engine, it crosses the
    # connection as a WireError: the client gets a 400 naming the cause, never a 500.
    rebuilt = WireError.of(err).rebuild()
    assert type(rebuilt) is type(err)
    protocols: tuple[Protocol, ...] = ("openai", "anthropic")
    for protocol in protocols:
        response = error_response(rebuilt, protocol)
        assert response.status_code == 400
        body = json.loads(bytes(response.body))
        assert body["error"]["type"] == "invalid_request_error"
    assert error_body(rebuilt, "openai")["error"] == {
        "message": err.message, "type": "invalid_request_error", "param": None,
        "code": err.code}
