"""The page's pure parts: its config rendering, file table and headers, the same-origin rule,
and the JavaScript modules' pure functions (run under node, without a DOM)."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mlxjan.server.security import same_origin
from mlxjan.server.web.assets import (
    CONFIG_PLACEHOLDER,
    CONTENT_SECURITY_POLICY,
    PageConfig,
    index_template,
    is_page_path,
    not_modified,
    render_index,
    static_assets,
)

STATIC = Path(__file__).parents[3] / "mlxjan" / "server" / "web" / "static"
README = Path(__file__).parents[3] / "README.md"


# --- config and files ------------------------------------------------------------------------

def meta_config(page: str) -> dict[str, Any]:
    match = re.search(r'<meta name="mlxjan-config" content="([^"]*)">', page)
    assert match is not None
    config: dict[str, Any] = json.loads(html.unescape(match[1]))
    return config


def test_the_config_is_rendered_as_escaped_attribute_data() -> None:
    hostile = PageConfig(api_prefix='/v1"><script>x</script>', default_model="a&b<c>",
                         key_required=True, version="1.2")
    page = render_index(index_template(), hostile)
    assert CONFIG_PLACEHOLDER not in page
    assert "<script>x" not in page  # still a single attribute value
    assert meta_config(page) == {"apiPrefix": '/v1"><script>x</script>',
                                 "defaultModel": "a&b<c>", "keyRequired": True,
                                 "version": "1.2"}


def test_the_page_loads_only_its_own_module_and_stylesheet() -> None:
    template = index_template()
    assert re.findall(r'<script[^>]*src="([^"]+)"', template) == ["/static/app.js"]
    assert "<script>" not in template and "style=" not in template  # CSP: nothing inline
    for ref in re.findall(r'(?:src|href)="(/[^"#]*)"', template):
        assert ref.removeprefix("/static/") in static_assets(), ref


def test_static_assets_are_every_shipped_file_with_its_type() -> None:
    assets = static_assets()
    assert set(assets) == {p.name for p in STATIC.iterdir()}
    assert assets["app.js"].media_type.startswith("text/javascript")
    assert assets["style.css"].media_type.startswith("text/css")
    assert assets["icon.svg"].media_type == "image/svg+xml"
    assert len({a.etag for a in assets.values()}) == len(assets)


@pytest.mark.parametrize(("path", "page"), [
    ("/", True), ("/static/app.js", True), ("/static/", True),
    ("/v1/models", False), ("/health", False), ("/staticx", False), ("", False),
])
def test_page_paths(path: str, page: bool) -> None:
    assert is_page_path(path) is page


def test_not_modified() -> None:
    asset = static_assets()["app.js"]
    assert not_modified(asset, asset.etag)
    assert not_modified(asset, f'"other", W/{asset.etag}')
    assert not_modified(asset, "*")
    assert not not_modified(asset, '"other"')
    assert not not_modified(asset, None)


def test_the_policy_allows_this_origin_only_and_no_inline_code() -> None:
    directives = dict(d.split(" ", 1) for d in CONTENT_SECURITY_POLICY.split("; "))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"
    assert directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in CONTENT_SECURITY_POLICY


# --- same origin -----------------------------------------------------------------------------

@pytest.mark.parametrize(("origin", "host", "same"), [
    ("http://box.lan:1337", "box.lan:1337", True),
    ("http://BOX.lan:1337", "box.lan:1337", True),
    ("https://box.lan", "box.lan", True),
    ("http://[::1]:1337", "[::1]:1337", True),
    ("http://box.lan:1338", "box.lan:1337", False),
    ("http://box.lan", "box.lan:1337", False),
    ("http://evil.com:1337", "box.lan:1337", False),
    ("null", "box.lan:1337", False),
    ("file://box.lan", "box.lan", False),
    ("http://[::1", "[::1]:1337", False),
    ("http://box.lan:99999", "box.lan:99999", False),
])
def test_same_origin(origin: str, host: str, same: bool) -> None:
    assert same_origin(origin, host) is same


# --- the JavaScript modules' pure functions, under node ---------------------------------------

def run_js(code: str) -> Any:
    """Run an ES module snippet that may import the page's modules as `./x.js` and
    `console.log`s one JSON value; that value."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    source = code.replace('"./', f'"{STATIC.as_uri()}/')
    result = subprocess.run([node, "--input-type=module", "-e", source], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_markdown_keeps_markup_as_text_and_drops_unsafe_links() -> None:
    tree = run_js("""
import { parse } from "./markdown.js";
console.log(JSON.stringify(parse(
  "Hi <b>x</b> **bold** *em* `a<b`\\n[ok](https://example.com) [bad](javascript:alert(1))")));
""")
    inline = tree[0]["inline"]
    assert tree[0]["type"] == "paragraph"
    assert inline[0] == {"type": "text", "text": "Hi <b>x</b> "}
    assert {"type": "strong", "children": [{"type": "text", "text": "bold"}]} in inline
    assert {"type": "em", "children": [{"type": "text", "text": "em"}]} in inline
    assert {"type": "code", "text": "a<b"} in inline
    links = [n for n in inline if n["type"] in ("link", "span")]
    assert links[0] == {"type": "link", "href": "https://example.com",
                        "children": [{"type": "text", "text": "ok"}]}
    assert links[1] == {"type": "span", "children": [{"type": "text", "text": "bad"}]}


def test_markdown_blocks_and_an_unclosed_fence_while_streaming() -> None:
    tree = run_js("""
import { parse } from "./markdown.js";
console.log(JSON.stringify(parse(
  "# Title\\n\\n- a\\n- b\\n\\n1. one\\n2. two\\n\\n> quoted\\n\\n---\\n```py\\nx = 1\\ny = 2")));
""")
    assert [b["type"] for b in tree] == ["heading", "list", "list", "quote", "rule", "code"]
    assert tree[1]["ordered"] is False and len(tree[1]["items"]) == 2
    assert tree[2]["ordered"] is True and tree[2]["start"] == 1
    assert tree[5] == {"type": "code", "lang": "py", "text": "x = 1\ny = 2"}


def test_markdown_snake_case_is_not_emphasis() -> None:
    tree = run_js("""
import { parse } from "./markdown.js";
console.log(JSON.stringify(parse("call my_func_name now")));
""")
    assert tree[0]["inline"] == [{"type": "text", "text": "call my_func_name now"}]


def test_sse_parser_handles_split_events_comments_and_crlf() -> None:
    events = run_js("""
import { SSEParser } from "./api.js";
const p = new SSEParser();
const out = [];
for (const piece of ['data: {"a"', ': 1}\\n\\n: keep-alive\\n\\n', 'data: x\\r\\n',
                     '\\r\\ndata: [DONE]\\n', '\\n']) out.push(...p.feed(piece));
console.log(JSON.stringify(out));
""")
    assert events == ['{"a": 1}', "x", "[DONE]"]


def test_tool_call_deltas_merge_into_calls() -> None:
    calls = run_js("""
import { mergeToolCalls } from "./chat.js";
const calls = [];
mergeToolCalls(calls, [{index: 0, id: "call_1", type: "function",
                        function: {name: "get_weather", arguments: ""}}]);
mergeToolCalls(calls, [{index: 0, function: {arguments: '{"city": '}}]);
mergeToolCalls(calls, [{index: 0, function: {arguments: '"Paris"}'}}]);
console.log(JSON.stringify(calls));
""")
    assert calls == [{"id": "call_1", "type": "function",
                      "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]


def test_tools_editor_accepts_function_tools_and_explains_errors() -> None:
    out = run_js("""
import { parseTools } from "./chat.js";
console.log(JSON.stringify([
  parseTools(""), parseTools("[{"),
  parseTools('[{"type": "function", "function": {"name": "f"}}]'),
  parseTools('{"name": "g", "parameters": {}}'), parseTools('[{"type": "function"}]')]));
""")
    assert out[0] == {"value": None, "error": None}
    assert out[1]["error"].startswith("Tools are not valid JSON")
    assert out[2]["value"] == [{"type": "function", "function": {"name": "f"}}]
    assert out[3]["value"] == [{"type": "function", "function": {"name": "g", "parameters": {}}}]
    assert out[4]["error"].startswith("Each tool needs a name")


def test_history_sent_to_the_api() -> None:
    messages = run_js("""
import { apiMessages } from "./chat.js";
const call = {id: "c1", type: "function", function: {name: "f", arguments: "{}"}};
console.log(JSON.stringify(apiMessages([
  {role: "user", content: "hi"},
  {role: "assistant", content: "hello", reasoning: "hmm", tool_calls: [], state: "done"},
  {role: "user", content: "again"},
  {role: "assistant", content: "", tool_calls: [], state: "error", error: "boom"},
  {role: "assistant", content: "", tool_calls: [call], state: "done"},
  {role: "tool", tool_call_id: "c1", name: "f", content: "42"},
], "Be brief.")));
""")
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},  # reasoning stays in the page
        {"role": "user", "content": "again"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c1", "type": "function",
                         "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]


def test_stats_line_under_an_answer() -> None:
    lines = run_js("""
import { statsLine } from "./chat.js";
const usage = {prompt_tokens: 40, completion_tokens: 21,
               prompt_tokens_details: {cached_tokens: 12}};
console.log(JSON.stringify([
  statsLine({state: "done", usage, timing: {ttft_s: 0.25, decode_s: 2, deltas: 21}}),
  statsLine({state: "stopped", timing: {ttft_s: 1.5, decode_s: 0.5, deltas: 6}}),
  statsLine({state: "streaming"})]));
""")
    assert lines == [
        "21 tokens · 10.0 tokens/s · first token 250 ms · 12 of 40 prompt tokens cached",
        "6 tokens · 10.0 tokens/s · first token 1.50 s · stopped",
        "Waiting for the first token…",
    ]


def _readme_block(heading: str, lang: str) -> str:
    section = README.read_text().split(f"## {heading}", 1)[1]
    match = re.search(rf"```{lang}\n(.*?)```", section, re.S)
    assert match is not None
    return match[1].rstrip("\n")


def test_connect_snippets_are_the_readmes_blocks_for_this_server() -> None:
    text = run_js("""
import { snippets, anthropicBase } from "./connect.js";
console.log(JSON.stringify({
  open: snippets("http://127.0.0.1:1337", "/v1", "qwen2.5-coder-0.5b-instruct", false),
  keyed: snippets("http://box.lan:8080", "/api/v1", "m", true),
  noV1: anthropicBase("http://h", "/openai")}));
""")
    assert text["open"]["claude"] == _readme_block("Claude Code on local models", "bash")
    assert text["open"]["codex"] == _readme_block("The Responses API", "toml")
    assert 'base_url="http://127.0.0.1:1337/v1"' in text["open"]["openai"]
    keyed = text["keyed"]
    assert "export ANTHROPIC_BASE_URL=http://box.lan:8080/api\n" in keyed["claude"]
    assert "export ANTHROPIC_AUTH_TOKEN=<your api key>\n" in keyed["claude"]
    assert 'base_url = "http://box.lan:8080/api/v1"' in keyed["codex"]
    assert 'api_key="<your api key>"' in keyed["openai"]
    assert text["noV1"] is None
