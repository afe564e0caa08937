"""The Anthropic Messages API driven by the official `anthropic` SDK (strict validation)."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import pytest

from mlxjan.settings import Settings
from mlxjan.testing.fake_engine import FakeEngine
from mlxjan.types import GenerationRequest, ReasoningOptions
from tests.api.conftest import MODEL, Server

USER = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def settings(tmp_path: Any) -> Settings:
    # claude-* names map to the fake model through the tier settings.
    return Settings(data_dir=tmp_path, request_timeout=30, default_model=MODEL,
                    anthropic_haiku_model=MODEL, keepalive_interval=0.05)


def _events(server: Server, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    response = server.http.post("/v1/messages?beta=true", json={**body, "stream": True},
                                headers={"anthropic-version": "2023-06-01",
                                         "anthropic-beta": "whatever-2099"})
    assert response.status_code == 200, response.text
    out: list[tuple[str, dict[str, Any]]] = []
    name = ""
    for line in response.text.splitlines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            payload = json.loads(line[6:])
            assert payload["type"] == name
            out.append((name, payload))
    return out


def test_non_streaming_message(server: Server) -> None:
    message = server.claude.messages.create(model=MODEL, max_tokens=100, messages=USER)  # type: ignore[arg-type]
    assert message.role == "assistant" and message.type == "message"
    assert message.content[0].type == "text"
    assert message.content[0].text == "You said: hello there"
    assert message.stop_reason == "end_turn"
    usage = message.usage
    assert usage.output_tokens == 4
    assert usage.input_tokens + (usage.cache_read_input_tokens or 0) + (
        usage.cache_creation_input_tokens or 0) == 2 + 3 + 1


def test_streaming_matches_and_is_well_formed(server: Server) -> None:
    with server.claude.messages.stream(model=MODEL, max_tokens=100, messages=USER) as stream:  # type: ignore[arg-type]
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(texts) >= 3
    assert "".join(texts) == "You said: hello there"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 4


def test_event_sequence(server: Server) -> None:
    events = _events(server, {"model": MODEL, "max_tokens": 50, "messages": USER})
    names = [n for n, _ in events if n != "ping"]
    assert names[0] == "message_start"
    assert names[1] == "content_block_start"
    assert set(names[2:-3]) == {"content_block_delta"}
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    start = events[0][1]["message"]
    assert start["usage"]["input_tokens"] == 6 and start["content"] == []
    delta = next(p for n, p in events if n == "message_delta")
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] == 4 and delta["usage"]["input_tokens"] == 6
    indices = {p["index"] for n, p in events if n.startswith("content_block")}
    assert indices == {0}


def test_ping_while_waiting_for_tokens(server: Server) -> None:
    server.engine.token_delay = 0.2
    events = _events(server, {"model": MODEL, "max_tokens": 3, "messages": USER})
    assert "ping" in [n for n, _ in events]
    assert events[-1][0] == "message_stop"


def test_stop_sequence_and_max_tokens(server: Server) -> None:
    message = server.claude.messages.create(model=MODEL, max_tokens=100, messages=USER,  # type: ignore[arg-type]
                                            stop_sequences=["hello"])
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == "hello"
    assert message.content[0].text == "You said: "  # type: ignore[union-attr]
    capped = server.claude.messages.create(model=MODEL, max_tokens=2, messages=USER)  # type: ignore[arg-type]
    assert capped.stop_reason == "max_tokens" and capped.usage.output_tokens == 2


def test_huge_max_tokens_is_clamped_not_refused(server: Server) -> None:
    # Claude Code asks for 128000 on a model whose context here is 200 tokens.
    with server.claude.messages.stream(model=MODEL, max_tokens=128000, messages=USER) as stream:  # type: ignore[arg-type]
        message = stream.get_final_message()
    assert message.stop_reason == "end_turn"


def test_claude_names_map_to_tiers_and_unknown_names_404(server: Server) -> None:
    message = server.claude.messages.create(model="claude-haiku-4-5-20251001", max_tokens=10,
                                            messages=USER)  # type: ignore[arg-type]
    assert message.model == "claude-haiku-4-5-20251001"
    assert server.engine.requests[-1].model == MODEL
    with pytest.raises(anthropic.NotFoundError) as exc:
        server.claude.messages.create(model="gpt-4o", max_tokens=10, messages=USER)  # type: ignore[arg-type]
    assert exc.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]


def test_claude_code_shaped_request_converts(server: Server) -> None:
    body = {
        "model": "claude-sonnet-4-5", "max_tokens": 128000, "stream": True,
        "system": [
            {"type": "text",
             "text": "x-anthropic-billing-header: cc_version=2.1.3; cc_entrypoint=cli;"},
            {"type": "text", "text": "You are Claude Code.",
             "cache_control": {"type": "ephemeral"}},
        ],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "list files",
                                          "cache_control": {"type": "ephemeral"}}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "text", "text": "Calling ls."},
                {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"cmd": "ls"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [
                    {"type": "text", "text": "a.txt"}]},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "boom",
                 "is_error": True},
                {"type": "text", "text": "thanks"}]},
            {"role": "system", "content": "Reminder: be brief."},
            {"role": "user", "content": "and now?"},
        ],
        "tools": [{"name": "Bash", "description": "run", "input_schema": {"type": "object"},
                   "defer_loading": False, "cache_control": {"type": "ephemeral"}}],
        "tool_choice": {"type": "auto"},
        "context_management": {"edits": []}, "output_config": {"effort": "low"},
        "metadata": {"user_id": "u"}, "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    events = _events(server, body)
    assert events[-1][0] == "message_stop"
    request: GenerationRequest = server.engine.requests[-1]
    roles = [m.role for m in request.messages]
    assert roles == ["system", "user", "assistant", "tool", "tool", "user", "system", "user"]
    assert request.messages[0].content == "You are Claude Code."
    # A thinking block this server did not sign is plain text of its turn, never reasoning.
    assert request.messages[2].content == "hmm\n\nCalling ls."
    assert request.messages[2].reasoning == ""
    assert request.messages[2].tool_calls[0].name == "Bash"
    assert json.loads(request.messages[2].tool_calls[0].arguments) == {"cmd": "ls"}
    assert request.messages[3].tool_call_id == "toolu_1" and request.messages[3].content == "a.txt"
    assert request.messages[4].content.startswith("Error") and "boom" in request.messages[4].content
    assert request.tools[0].name == "Bash"
    assert request.sampling.max_tokens == 128000
    assert request.reasoning == ReasoningOptions(enabled=True, effort="low", budget_tokens=1024)


def test_tool_round_trip_through_the_sdk(server: Server) -> None:
    tools = [{"name": "get_weather", "description": "Weather for a city",
              "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    reply = server.claude.messages.create(model=MODEL, max_tokens=50, tools=tools, messages=[  # type: ignore[arg-type]
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_9",
                                           "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9",
                                      "content": "18C and sunny"}]},
    ])
    assert reply.stop_reason == "end_turn"
    request = server.engine.requests[-1]
    assert [m.role for m in request.messages] == ["user", "assistant", "tool"]
    assert request.messages[2].content == "18C and sunny"


def test_count_tokens(server: Server) -> None:
    counted = server.claude.messages.count_tokens(model=MODEL, messages=USER)  # type: ignore[arg-type]
    created = server.claude.messages.create(model=MODEL, max_tokens=5, messages=USER)  # type: ignore[arg-type]
    assert counted.input_tokens == created.usage.input_tokens + (
        created.usage.cache_read_input_tokens or 0)


def test_models_in_anthropic_shape(server: Server) -> None:
    page = server.claude.models.list()
    assert [m.id for m in page.data] == [MODEL]
    assert page.data[0].type == "model"
    plain = server.http.get("/v1/models").json()
    assert plain["object"] == "list"


def test_errors_in_anthropic_shape(server: Server, engine: FakeEngine) -> None:
    with pytest.raises(anthropic.BadRequestError) as too_long:
        server.claude.messages.create(model=MODEL, max_tokens=5, messages=[  # type: ignore[arg-type]
            {"role": "user", "content": "word " * 300}])
    assert too_long.value.body["error"]["message"] == (  # type: ignore[index]
        "prompt is too long: 304 tokens > 200 maximum")
    with pytest.raises(anthropic.BadRequestError) as image:
        server.claude.messages.create(model=MODEL, max_tokens=5, messages=[{  # type: ignore[arg-type]
            "role": "user", "content": [{"type": "image", "source": {
                "type": "base64", "media_type": "image/png", "data": "AAAA"}}]}])
    assert "vision" in image.value.message
    response = server.http.post("/v1/messages", content=b"{oops",
                                headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "invalid_request_error"
    missing = server.http.post("/v1/messages", json={"model": MODEL, "messages": USER})
    assert missing.status_code == 400 and "max_tokens" in missing.json()["error"]["message"]


def test_error_after_start_is_an_error_event(server: Server) -> None:
    def explode(_req: GenerationRequest) -> str:
        raise RuntimeError("kaput")

    server.engine.script = explode
    events = _events(server, {"model": MODEL, "max_tokens": 5, "messages": USER})
    assert events[0][0] == "message_start"
    assert events[-1][0] == "error"
    assert events[-1][1]["error"]["type"] == "api_error"


def test_auth_in_anthropic_shape(keyed_server: Server) -> None:
    response = keyed_server.http.post("/v1/messages", json={
        "model": MODEL, "max_tokens": 5, "messages": USER})
    assert response.status_code == 401
    assert response.json() == {"type": "error", "error": {
        "type": "authentication_error", "message": response.json()["error"]["message"]}}
    ok = keyed_server.http.post("/v1/messages", headers={"x-api-key": "s3cret"}, json={
        "model": MODEL, "max_tokens": 5, "messages": USER})
    assert ok.status_code == 200
    assert keyed_server.claude.messages.create(model=MODEL, max_tokens=5, messages=USER)  # type: ignore[arg-type]
