"""The page at `/` over a real uvicorn server with the fake engine: what is served, with which
headers, under which security rules, and what the shipped files may contain."""

from __future__ import annotations

import html
import json
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlxjan.server.web.assets import static_assets
from mlxjan.settings import Settings
from mlxjan.testing.fake_engine import FakeEngine
from tests.api.conftest import MODEL, Server, _serve

serve = contextmanager(_serve)
STATIC = Path(__file__).parents[2] / "mlxjan" / "server" / "web" / "static"
MAX_PAGE_BYTES = 300 * 1024
# Not fetched: the namespace name every SVG file declares.
NAMESPACES = {"http://www.w3.org/2000/svg"}


def page_config(page: str) -> dict[str, Any]:
    match = re.search(r'<meta name="mlxjan-config" content="([^"]*)">', page)
    assert match is not None, page[:500]
    config: dict[str, Any] = json.loads(html.unescape(match[1]))
    return config


def assert_page_headers(response: httpx.Response) -> None:
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "unsafe-eval" not in policy
    assert "connect-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"


def chat_body(content: str = "hi") -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}],
            "stream": True, "stream_options": {"include_usage": True}}


def test_the_page_is_served_at_root(server: Server) -> None:
    response = server.http.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert_page_headers(response)
    config = page_config(response.text)
    assert config["apiPrefix"] == "/v1"
    assert config["defaultModel"] == "qwen2.5-coder-0.5b-instruct"
    assert config["keyRequired"] is False
    assert server.http.head("/").status_code == 200


def test_every_file_the_page_references_is_served(server: Server) -> None:
    page = server.http.get("/").text
    refs = re.findall(r'(?:src|href)="(/static/[^"]+)"', page)
    assert "/static/app.js" in refs and "/static/style.css" in refs
    # Modules import each other by relative path: every file in static/ is reachable.
    for name in static_assets():
        response = server.http.get(f"/static/{name}")
        assert response.status_code == 200, name
        assert_page_headers(response)
        assert response.content == (STATIC / name).read_bytes()
    assert server.http.get("/static/app.js").headers["content-type"].startswith(
        "text/javascript")


def test_static_files_revalidate_with_their_etag(server: Server) -> None:
    first = server.http.get("/static/chat.js")
    again = server.http.get("/static/chat.js", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


@pytest.mark.parametrize("path", ["/static/nope.js", "/static/index.html",
                                  "/static/%2e%2e%2fapp.py", "/static/..%2f..%2fsettings.py"])
def test_only_the_shipped_files_are_served(server: Server, path: str) -> None:
    response = server.http.get(path)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_the_page_is_not_part_of_the_api_schema(server: Server) -> None:
    paths = server.http.get("/openapi.json").json()["paths"]
    assert "/" not in paths and not any(p.startswith("/static") for p in paths)


def test_the_page_speaks_to_the_api_under_its_prefix(tmp_path: Path, engine: FakeEngine
                                                      ) -> None:
    settings = Settings(data_dir=tmp_path, api_prefix="/api/v1", default_model=MODEL)
    with serve(settings, engine) as server:
        config = page_config(server.http.get("/").text)
        assert config["apiPrefix"] == "/api/v1" and config["defaultModel"] == MODEL
        assert server.http.get("/static/app.js").status_code == 200
        assert server.http.get("/api/v1/models").json()["data"][0]["id"] == MODEL
        assert server.http.get("/v1/models").status_code == 404


def test_a_keyed_server_serves_the_page_without_the_key(keyed_server: Server) -> None:
    keyed = keyed_server
    page = keyed.http.get("/")
    assert page.status_code == 200
    assert page_config(page.text)["keyRequired"] is True
    assert keyed.http.get("/static/app.js").status_code == 200
    assert keyed.http.head("/static/style.css").status_code == 200


def test_a_keyed_server_still_needs_the_key_for_the_api(keyed_server: Server) -> None:
    keyed = keyed_server
    assert keyed.http.get("/v1/models").status_code == 401
    assert keyed.http.get("/v1/status").status_code == 401
    assert keyed.http.post("/v1/chat/completions", json=chat_body()).status_code == 401
    bearer = {"Authorization": "Bearer s3cret"}
    assert keyed.http.get("/v1/models", headers=bearer).status_code == 200
    # Public means reading the page: other methods on its paths still need the key.
    assert keyed.http.post("/", json={}).status_code == 401
    assert keyed.http.get("/static/nope.js").status_code == 404


def test_the_host_allowlist_applies_to_the_page(server: Server) -> None:
    for path in ("/", "/static/app.js"):
        response = server.http.get(path, headers={"Host": "evil.example:1337"})
        assert response.status_code == 403, path


def test_the_pages_own_requests_pass_the_origin_check(tmp_path: Path, engine: FakeEngine
                                                      ) -> None:
    # Served to the LAN under a trusted name, the page's POSTs carry that origin.
    settings = Settings(data_dir=tmp_path, trusted_hosts=["box.lan"], api_key="k")
    with serve(settings, engine) as server:
        port = server.url.rsplit(":", 1)[1]
        own = {"Host": f"box.lan:{port}", "Origin": f"http://box.lan:{port}",
               "Authorization": "Bearer k"}
        with server.http.stream("POST", "/v1/chat/completions", json=chat_body("a b c"),
                                headers=own) as response:
            assert response.status_code == 200
            text = response.read().decode()
        assert '"content":" c"' in text and text.endswith("data: [DONE]\n\n")
        for origin in (f"http://evil.example:{port}", f"http://box.lan:{int(port) + 1}", "null"):
            refused = server.http.post("/v1/chat/completions", json=chat_body(),
                                       headers={**own, "Origin": origin})
            assert refused.status_code == 403, origin


def test_with_any_host_trusted_only_listed_origins_pass(tmp_path: Path, engine: FakeEngine
                                                        ) -> None:
    # trusted_hosts "*" lets any Host in: a DNS-rebinding page would then look same-origin.
    with serve(Settings(data_dir=tmp_path, trusted_hosts=["*"]), engine) as server:
        headers = {"Host": "rebound.example:80", "Origin": "http://rebound.example:80"}
        assert server.http.get("/v1/models", headers=headers).status_code == 403
        assert server.http.get("/", headers={"Host": "rebound.example"}).status_code == 200


def test_a_loopback_page_streams_a_chat(server: Server) -> None:
    headers = {"Origin": server.url}
    with server.http.stream("POST", "/v1/chat/completions", json=chat_body("one two"),
                            headers=headers) as response:
        assert response.status_code == 200
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[-2][6:])["usage"]["completion_tokens"] == 4


# --- what the shipped files may contain ------------------------------------------------------

def shipped() -> dict[str, str]:
    files = {p.name: p.read_text(encoding="utf-8") for p in STATIC.iterdir()}
    files["index.html"] = (STATIC.parent / "index.html").read_text(encoding="utf-8")
    return files


def test_no_external_urls_in_the_page() -> None:
    for name, text in shipped().items():
        urls = set(re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"'`)]*", text))
        # Links in the page's own help text are written as text, never fetched; none today.
        assert urls <= NAMESPACES, (name, urls - NAMESPACES)
        if name.endswith(".css"):
            assert "@import" not in text and "url(" not in text, name
        if name.endswith(".js"):  # modules import only each other
            for module in re.findall(r'^import .*? from "([^"]+)";', text, re.M):
                assert re.fullmatch(r"\./[a-z]+\.js", module), (name, module)


def test_no_html_parsing_or_eval_in_the_scripts() -> None:
    forbidden = ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                 "new Function", "setTimeout(\"", "javascript:")
    for name, text in shipped().items():
        if name.endswith(".js"):
            for word in forbidden:
                assert word not in text, (name, word)


def test_the_page_is_small() -> None:
    total = sum(len(text.encode()) for text in shipped().values())
    assert total < MAX_PAGE_BYTES, total


def test_package_data_ships_the_page() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["mlxjan"]
    root = Path(__file__).parents[2] / "mlxjan"
    packaged = {p for g in globs for p in root.glob(g)}
    assert set(shipped()) <= {p.name for p in packaged}
