"""The server process itself: shutdown, start-up refusals, and the security matrix.

Run against real `mlxjan serve` processes (the security checks need no model loaded).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mlxjan.settings import DEFAULT_MODEL
from tests.e2e.conftest import ServerProcess, e2e_env, serve_process

pytestmark = pytest.mark.e2e
KEY = "e2e-secret-key"
CHAT = {"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 5}


@pytest.fixture(scope="module")
def keyed(default_model_path: Path, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("keyed")
    key_file = folder / "key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o600)
    with serve_process(folder, "--api-key-file", str(key_file)) as server:
        yield server


def _routes(server: ServerProcess) -> list[tuple[str, str]]:
    spec = httpx.get(f"{server.url}/openapi.json", headers={"x-api-key": KEY}).json()
    return [(method.upper(), path.replace("{model_id}", DEFAULT_MODEL))
            for path, item in spec["paths"].items() for method in item]


def test_missing_or_wrong_key_is_401_on_every_route_in_both_shapes(
        keyed: ServerProcess) -> None:
    routes = [*_routes(keyed), ("GET", "/openapi.json"), ("GET", "/docs")]
    assert ("POST", "/v1/messages") in routes and ("POST", "/v1/chat/completions") in routes
    for method, path in routes:
        if path == "/health":
            assert httpx.request(method, f"{keyed.url}{path}").status_code == 200
            continue
        for headers in ({}, {"Authorization": "Bearer nope"}, {"x-api-key": "nope"}):
            response = httpx.request(method, f"{keyed.url}{path}", headers=headers,
                                     json=CHAT if method == "POST" else None)
            assert response.status_code == 401, (method, path, headers)
            body = response.json()
            if "/messages" in path:
                assert body["type"] == "error"
                assert body["error"]["type"] == "authentication_error"
            else:
                assert body["error"]["code"] == "invalid_api_key"
    good = httpx.post(f"{keyed.url}/v1/chat/completions", json=CHAT,
                      headers={"Authorization": f"Bearer {KEY}"}, timeout=120)
    assert good.status_code == 200
    anthropic_style = httpx.post(f"{keyed.url}/v1/messages", headers={"x-api-key": KEY},
                                 json=CHAT, timeout=120)
    assert anthropic_style.status_code == 200


def test_rebinding_host_is_403(keyed: ServerProcess) -> None:
    for host in ("attacker.example", f"attacker.example:{keyed.port}", "127.0.0.1.nip.io"):
        response = httpx.get(f"{keyed.url}/v1/models",
                             headers={"Host": host, "x-api-key": KEY})
        assert response.status_code == 403, host
    assert httpx.get(f"{keyed.url}/v1/models", headers={
        "Host": f"localhost:{keyed.port}", "x-api-key": KEY}).status_code == 200


def test_foreign_origin_gets_no_cors_grant_and_is_refused(keyed: ServerProcess) -> None:
    evil = "https://evil.example"
    preflight = httpx.options(f"{keyed.url}/v1/chat/completions", headers={
        "Origin": evil, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,authorization"})
    assert "access-control-allow-origin" not in preflight.headers
    assert preflight.status_code == 403
    post = httpx.post(f"{keyed.url}/v1/chat/completions", json=CHAT,
                      headers={"Origin": evil, "x-api-key": KEY})
    assert post.status_code == 403
    assert "access-control-allow-origin" not in post.headers
    # A text/plain "simple" request (no preflight in browsers) is refused too.
    simple = httpx.post(f"{keyed.url}/v1/chat/completions", content=b'{"model": "x"}',
                        headers={"content-type": "text/plain", "x-api-key": KEY})
    assert simple.status_code == 415
    local = f"http://localhost:{keyed.port}"
    ok = httpx.options(f"{keyed.url}/v1/chat/completions", headers={
        "Origin": local, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,x-api-key,anthropic-version,"
                                          "anthropic-beta,content-type"})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == local


def test_oversized_body_is_413(keyed: ServerProcess) -> None:
    body = b'{"model": "x", "messages": [], "pad": "' + b"x" * (33 * 1024 * 1024) + b'"}'
    response = httpx.post(f"{keyed.url}/v1/chat/completions", content=body, timeout=60,
                          headers={"content-type": "application/json", "x-api-key": KEY})
    assert response.status_code == 413


def test_traversal_model_id_is_refused(keyed: ServerProcess) -> None:
    for model in ("../../../etc/passwd", "../qwen2.5-coder-0.5b-instruct", "/etc/passwd"):
        response = httpx.post(f"{keyed.url}/v1/chat/completions", headers={"x-api-key": KEY},
                              json={**CHAT, "model": model})
        assert response.status_code == 404, model
        assert response.json()["error"]["code"] == "model_not_found"


def test_non_loopback_bind_without_key_refuses_to_start(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "mlxjan", "serve", "--host", "0.0.0.0",
                           "--port", "1"], capture_output=True, text=True, timeout=60,
                          env=e2e_env({"MLXJAN_API_KEY": ""}))
    assert done.returncode != 0
    assert "without an API key" in done.stderr


def test_second_server_on_a_held_port_exits_zero(keyed: ServerProcess) -> None:
    done = subprocess.run([sys.executable, "-m", "mlxjan", "serve", "--port", str(keyed.port)],
                          capture_output=True, text=True, timeout=60, env=e2e_env())
    assert done.returncode == 0
    assert "already running" in done.stderr


def test_sigterm_mid_stream_exits_cleanly_within_10s(default_model_path: Path,
                                                     tmp_path: Path) -> None:
    with serve_process(tmp_path) as server, httpx.Client(timeout=120) as http, http.stream(
            "POST", f"{server.url}/v1/chat/completions", json={
                **CHAT, "max_tokens": 2000, "stream": True,
                "messages": [{"role": "user", "content": "Write a very long story."}]}) as resp:
        lines = resp.iter_lines()
        chunks = [next(lines) for _ in range(8)]
        assert any(line.startswith("data: ") for line in chunks)
        sent = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        code = server.proc.wait(15)
        elapsed = time.monotonic() - sent
        assert code == 0, server.log.read_text()
        assert elapsed < 10, elapsed
