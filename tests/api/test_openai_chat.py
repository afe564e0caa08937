"""The OpenAI chat API driven by the official `openai` SDK against the fake engine."""

from __future__ import annotations

import json

import openai
import pytest

from mlxjan.types import GenerationRequest
from tests.api.conftest import MODEL, Server


def test_models_list_and_retrieve(server: Server) -> None:
    models = server.client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert models.data[0].object == "model"
    assert server.client.models.retrieve(MODEL).id == MODEL


def test_unknown_model_is_404_model_not_found(server: Server) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        server.client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert exc.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        server.client.models.retrieve("no-such-model")


def test_non_streaming_answer_and_usage(server: Server) -> None:
    result = server.client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hello there"}])
    choice = result.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "You said: hello there"
    assert choice.finish_reason == "stop"
    assert result.usage is not None
    assert result.usage.completion_tokens == 4  # one fake token per word
    prompt = server.engine.requests[-1]
    assert result.usage.prompt_tokens == 2 + 3 + 1  # the fake's count: words + 3 + 1
    assert result.usage.total_tokens == result.usage.prompt_tokens + 4
    assert prompt.messages[-1].content == "hello there"


def test_streaming_chunks_match_non_streaming(server: Server) -> None:
    messages = [{"role": "user", "content": "one two three"}]
    whole = server.client.chat.completions.create(model=MODEL, messages=messages)  # type: ignore[arg-type]
    chunks = list(server.client.chat.completions.create(
        model=MODEL, messages=messages, stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    content = [c.choices[0].delta.content for c in chunks if c.choices and
               c.choices[0].delta.content]
    assert len(content) >= 5  # token by token, not one blob
    assert "".join(content) == whole.choices[0].message.content
    finals = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finals[-1] == "stop" and finals.count("stop") == 1
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]


def test_stream_without_include_usage_has_no_usage_chunk(server: Server) -> None:
    chunks = list(server.client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x"}], stream=True))
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_gives_length(server: Server, field: str) -> None:
    result = server.client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "a b c d e f"}],
        **{field: 3})  # type: ignore[call-overload]
    assert result.choices[0].finish_reason == "length"
    assert result.usage.completion_tokens == 3  # type: ignore[union-attr]
    assert result.choices[0].message.content == "You said: a"


def test_stop_string_split_across_tokens_never_appears(server: Server) -> None:
    server.engine.char_tokens = True
    server.engine.script = lambda _req: "alpha END omega"
    for stream in (False, True):
        if stream:
            text = "".join(c.choices[0].delta.content or "" for c in
                           server.client.chat.completions.create(
                               model=MODEL, messages=[{"role": "user", "content": "x"}],
                               stop=["END"], stream=True) if c.choices)
        else:
            result = server.client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "x"}], stop="END")
            assert result.choices[0].finish_reason == "stop"
            text = result.choices[0].message.content or ""
        assert text == "alpha "


def test_messages_reach_engine_in_order(server: Server) -> None:
    server.client.chat.completions.create(model=MODEL, messages=[
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "first "},
                                     {"type": "text", "text": "part"}]},
        {"role": "user", "content": "second user message in a row"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "f", "arguments": "{\"a\": 1}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ])
    request: GenerationRequest = server.engine.requests[-1]
    assert [m.role for m in request.messages] == ["system", "user", "user", "assistant", "tool"]
    assert request.messages[1].content == "first part"
    assert request.messages[3].tool_calls[0].name == "f"
    assert request.messages[4].tool_call_id == "call_1"


def test_sampling_parameters_reach_engine(server: Server) -> None:
    server.client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x"}], temperature=0.0, top_p=0.5,
        seed=7, presence_penalty=0.5, frequency_penalty=0.25,
        extra_body={"top_k": 5, "min_p": 0.1, "repetition_penalty": 1.1})
    sampling = server.engine.requests[-1].sampling
    assert (sampling.temperature, sampling.top_p, sampling.top_k, sampling.min_p) == (
        0.0, 0.5, 5, 0.1)
    assert (sampling.seed, sampling.presence_penalty, sampling.frequency_penalty,
            sampling.repetition_penalty) == (7, 0.5, 0.25, 1.1)


@pytest.mark.parametrize(("body", "param"), [
    ({"n": 2}, "n"),
    ({"temperature": 3}, "temperature"),
    ({"top_p": -1}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:,"}}]}]}, "messages.0.content"),
])
def test_invalid_fields_are_400_with_param(server: Server, body: dict[str, object],
                                           param: str) -> None:
    payload = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], **body}
    response = server.http.post("/v1/chat/completions", json=payload)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"].startswith(param)
    assert error["message"]


def test_malformed_json_is_400_in_openai_shape(server: Server) -> None:
    response = server.http.post("/v1/chat/completions", content=b"{not json",
                                headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_prompt_longer_than_context_is_400_with_numbers(server: Server) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        server.client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "word " * 300}])
    assert exc.value.code == "context_length_exceeded"
    assert "200" in exc.value.message and "304" in exc.value.message


def test_error_after_stream_started_arrives_in_band(server: Server) -> None:
    def explode(_req: GenerationRequest) -> str:
        raise RuntimeError("never reached")

    server.engine.script = explode
    response = server.http.post("/v1/chat/completions", json={
        "model": MODEL, "messages": [{"role": "user", "content": "x"}], "stream": True})
    assert response.status_code == 200
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert "error" in json.loads(events[-1])


def test_health_is_public_and_other_routes_need_the_key(keyed_server: Server) -> None:
    http = keyed_server.http
    assert http.get("/health").status_code == 200
    missing = http.get("/v1/models")
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "invalid_api_key"
    assert http.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert http.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert http.get("/v1/models", headers={"x-api-key": "s3cret"}).status_code == 200
    assert keyed_server.client.models.list().data[0].id == MODEL


def test_foreign_host_header_is_403(server: Server) -> None:
    response = server.http.get("/v1/models", headers={"Host": "evil.example:1337"})
    assert response.status_code == 403
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_oversized_body_is_413(server: Server) -> None:
    big = "x" * (33 * 1024 * 1024)
    response = server.http.post("/v1/chat/completions", json={
        "model": MODEL, "messages": [{"role": "user", "content": big}]})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_client_disconnect_stops_generation(server: Server) -> None:
    server.engine.token_delay = 0.02
    server.engine.script = lambda _req: "tok " * 150
    with server.http.stream("POST", "/v1/chat/completions", json={
            "model": MODEL, "messages": [{"role": "user", "content": "x"}],
            "stream": True}) as response:
        lines = response.iter_lines()
        for _ in range(6):
            next(lines)
    server.engine.token_delay = 0.0
    server.engine.script = lambda _req: "done"
    after = server.client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert after.choices[0].message.content == "done"
    assert server.engine.tokens_produced < 150 + 1
