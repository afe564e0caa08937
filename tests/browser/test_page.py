"""The page at `/` in headless Chromium against the real server and the real default model.

Answers are kept short (small max_tokens, temperature 0): these tests check what the page
does with real tokens as they stream, not what the model writes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from mlxjan.settings import DEFAULT_MODEL
from tests.browser.conftest import API_KEY, RealServer, Tab

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

ANSWER_TIMEOUT_MS = 120_000  # the first request loads the model; the machine may be busy

# Records the last answer's text length at every change, and whether it was still streaming.
WATCH_ANSWER = """() => {
  window.__growth = [];
  const list = document.getElementById("messages");
  new MutationObserver(() => {
    const answers = list.querySelectorAll(".msg-assistant");
    const last = answers[answers.length - 1];
    if (!last) return;
    const length = last.querySelector(".answer").textContent.length;
    const busy = last.getAttribute("aria-busy") === "true";
    const seen = window.__growth.at(-1);
    if (!seen || seen.length !== length || seen.busy !== busy) {
      window.__growth.push({ length, busy, t: performance.now() });
    }
  }).observe(list, { subtree: true, childList: true, characterData: true, attributes: true });
}"""

# A stored conversation with what answers can hold: reasoning, a tool call, a long code line.
SEEDED = [{
    "id": "seeded", "title": "Markdown and tools", "model": DEFAULT_MODEL, "updated": 1,
    "settings": {"system": "", "temperature": "0", "top_p": "", "max_tokens": "16",
                 "tools": ""},
    "messages": [
        {"role": "user", "content": "Show me **Markdown**, a tool call and some code."},
        {"role": "assistant", "model": DEFAULT_MODEL, "state": "done",
         "reasoning": "The user wants examples of everything.",
         "content": "# Heading\n\nSome *text* with `code` and a "
                    "[link](https://example.com).\n\n- one\n- two\n\n```python\n"
                    "print('" + "a very long line " * 12 + "')\n```\n\n"
                    + "unbreakable" * 12,
         "tool_calls": [{"id": "call_1", "type": "function", "function": {
             "name": "get_weather", "arguments": '{"city": "Paris"}'}}],
         "usage": {"prompt_tokens": 30, "completion_tokens": 60,
                   "prompt_tokens_details": {"cached_tokens": 12}},
         "timing": {"ttft_s": 0.3, "decode_s": 2.0, "deltas": 60}},
        {"role": "tool", "tool_call_id": "call_1", "name": "get_weather",
         "content": '{"temperature": 21}'},
    ],
}]


def seed(page: Page) -> None:
    """Before the page's own scripts run: the seeded conversation in localStorage."""
    page.add_init_script(f"localStorage.setItem('mlxjan.conversations', "
                         f"{json.dumps(json.dumps(SEEDED))});")


def settings(page: Page, *, max_tokens: int, temperature: float = 0) -> None:
    page.click("#request-editor summary")
    page.fill("#max-tokens", str(max_tokens))
    page.fill("#temperature", str(temperature))
    page.click("#request-editor summary")


def wait_for_models(page: Page) -> None:
    page.wait_for_selector(f"#model-select option[value='{DEFAULT_MODEL}']", state="attached")


def send(page: Page, text: str) -> None:
    page.fill("#prompt", text)
    page.click("#send")


def last_answer(page: Page) -> Locator:
    return page.locator(".msg-assistant").last


def wait_until_answered(page: Page) -> None:
    page.wait_for_selector(".msg-assistant:last-child[aria-busy='false']",
                           timeout=ANSWER_TIMEOUT_MS)


def idle(status: dict[str, Any]) -> bool:
    """No request running or waiting, on the server or in any model's batch."""
    batches = [m["batch"] for m in status["models"] if m.get("batch")]
    return status["requests"]["active"] == 0 and all(
        b["running"] == 0 and b["waiting"] == 0 for b in batches)


def ensure_loaded(server: RealServer) -> None:
    response = server.http.post(f"/v1/models/{DEFAULT_MODEL}/load")
    assert response.status_code == 200, response.text


def test_the_page_loads_with_no_console_errors(tab: Tab, real_server: RealServer) -> None:
    page = tab.open(real_server.url)
    wait_for_models(page)
    expect(page.locator("nav a[aria-current='page']")).to_have_text("Chat")
    page.click("nav a[data-view='status']")
    expect(page.locator("#status-summary")).to_contain_text("Requests running or waiting")
    page.click("nav a[data-view='connect']")
    expect(page.locator("#connect-claude")).to_contain_text(
        f"export ANTHROPIC_BASE_URL={real_server.url}\n")
    expect(page.locator("#connect-codex")).to_contain_text('wire_api = "responses"')
    page.click("nav a[data-view='chat']")
    wait_for_models(page)
    assert tab.errors == []


def test_an_answer_streams_token_by_token(tab: Tab, real_server: RealServer,
                                          artifacts: Path) -> None:
    page = tab.open(real_server.url)
    wait_for_models(page)
    settings(page, max_tokens=40)
    page.evaluate(WATCH_ANSWER)
    send(page, "Count from 1 to 30, with the numbers separated by spaces.")
    wait_until_answered(page)
    growth = page.evaluate("window.__growth")
    streaming = [g for g in growth if g["busy"] and g["length"] > 0]
    # Several partial answers painted while the stream was open, over real time.
    assert len({g["length"] for g in streaming}) >= 3, growth
    assert streaming[-1]["t"] - streaming[0]["t"] > 100, growth
    answer = last_answer(page)
    final = answer.locator(".answer").inner_text()
    assert final.strip() and len(final) >= max(g["length"] for g in streaming) - 4
    stats = answer.locator(".stats").inner_text()
    assert "tokens/s" in stats and "first token" in stats, stats
    assert tab.errors == []
    page.screenshot(path=str(artifacts / "chat.png"), full_page=True)


def test_stop_cancels_the_request_on_the_server(tab: Tab, real_server: RealServer) -> None:
    page = tab.open(real_server.url)
    wait_for_models(page)
    settings(page, max_tokens=400, temperature=0.7)
    send(page, "Write a long story about a lighthouse keeper and the sea.")
    page.wait_for_function(
        "() => document.querySelector('.msg-assistant:last-child .answer')"
        "?.textContent.length > 20", timeout=ANSWER_TIMEOUT_MS)
    assert not idle(real_server.http.get("/v1/status").json())
    page.click("#stop")
    stopped = time.monotonic()
    while not idle(real_server.http.get("/v1/status").json()):
        assert time.monotonic() - stopped < 1.0, "the server still runs the stopped request"
        time.sleep(0.05)
    wait_until_answered(page)
    expect(last_answer(page).locator(".stats")).to_contain_text("stopped")
    expect(page.locator("#stop")).to_be_hidden()
    expect(page.locator("#send")).to_be_enabled()
    assert tab.errors == []


def test_a_keyed_server_asks_for_the_key(tab: Tab, keyed_real_server: RealServer) -> None:
    page = tab.page
    api_calls: list[str] = []
    page.on("request", lambda r: api_calls.append(r.url) if "/v1/" in r.url else None)
    tab.open(keyed_real_server.url)
    dialog = page.locator("#key-dialog")
    expect(dialog).to_be_visible()
    assert api_calls == []  # asked first: no call sent bound to fail
    page.fill("#key-input", "not-the-key")
    page.press("#key-input", "Enter")
    expect(page.locator("#key-error")).to_be_visible()  # refused (401), asked again
    page.fill("#key-input", API_KEY)
    page.press("#key-input", "Enter")
    expect(dialog).to_be_hidden()
    wait_for_models(page)
    settings(page, max_tokens=8)
    send(page, "Say hello.")
    wait_until_answered(page)
    answer = last_answer(page)
    expect(answer.locator(".error")).to_be_hidden()
    assert answer.locator(".answer").inner_text().strip()
    assert page.evaluate("sessionStorage.getItem('mlxjan.apiKey')") == API_KEY
    assert API_KEY not in page.evaluate("JSON.stringify(localStorage)")


def test_the_status_view_shows_the_loaded_model(tab: Tab, real_server: RealServer,
                                                artifacts: Path) -> None:
    ensure_loaded(real_server)
    page = tab.open(f"{real_server.url}/#status")
    card = page.locator(".model-card", has_text=DEFAULT_MODEL)
    expect(card.locator(".badge")).to_have_text("loaded")
    for term in ("Memory", "Keep-alive", "Requests running", "Prompt cache", "Cache hit rate"):
        expect(card.locator("dt", has_text=term).first).to_be_visible()
    expect(page.locator("#installed-models tr", has_text=DEFAULT_MODEL)).to_contain_text(
        "loaded")
    page.wait_for_timeout(1600)  # one more poll: the view stays live without errors
    expect(page.locator("#status-error")).to_be_hidden()
    assert tab.errors == []
    page.screenshot(path=str(artifacts / "status.png"), full_page=True)


def no_horizontal_overflow(page: Page) -> None:
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], widths


def test_a_phone_width_has_no_horizontal_overflow(phone_tab: Tab, real_server: RealServer,
                                                  artifacts: Path) -> None:
    ensure_loaded(real_server)
    page = phone_tab.page
    seed(page)
    phone_tab.open(real_server.url)
    wait_for_models(page)
    expect(page.locator(".tool-call")).to_contain_text("get_weather")
    no_horizontal_overflow(page)
    page.click("#request-editor summary")
    page.click("#toggle-conversations")
    expect(page.locator("#conversation-list")).to_contain_text("Markdown and tools")
    no_horizontal_overflow(page)
    page.screenshot(path=str(artifacts / "chat-phone.png"), full_page=True)
    for view in ("status", "connect"):
        page.click(f"nav a[data-view='{view}']")
        expect(page.locator(f"#view-{view}")).to_be_visible()
        page.wait_for_timeout(300)
        no_horizontal_overflow(page)
    page.click("nav a[data-view='status']")
    expect(page.locator(".model-card").first).to_be_visible()
    page.screenshot(path=str(artifacts / "status-phone.png"), full_page=True)
    assert phone_tab.errors == []


def serious_violations(page: Page, axe_source: str) -> list[dict[str, Any]]:
    """axe-core's serious and critical findings for the page as it is now."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(axe_source)  # through the debugger protocol: the page's CSP stays on
    found: list[dict[str, Any]] = page.evaluate("""async () => {
      const result = await axe.run(document, { resultTypes: ["violations"] });
      return result.violations.filter((v) => ["serious", "critical"].includes(v.impact))
        .map((v) => ({ id: v.id, impact: v.impact, help: v.help,
                       nodes: v.nodes.map((n) => n.target.join(" ")) }));
    }""")
    return found


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_accessibility(browser: Any, real_server: RealServer, keyed_real_server: RealServer,
                       axe_source: str, scheme: str) -> None:
    ensure_loaded(real_server)
    context = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme=scheme)
    try:
        page = context.new_page()
        seed(page)
        page.goto(real_server.url)
        page.wait_for_selector("body[data-ready='true']")
        wait_for_models(page)
        page.click("#request-editor summary")
        page.click(".reasoning summary")
        assert serious_violations(page, axe_source) == [], "chat"
        for view in ("status", "connect"):
            page.click(f"nav a[data-view='{view}']")
            expect(page.locator(f"#view-{view}")).to_be_visible()
            if view == "status":
                expect(page.locator(".model-card").first).to_be_visible()
            assert serious_violations(page, axe_source) == [], view
        page.goto(keyed_real_server.url)
        page.wait_for_selector("#key-dialog[open]")
        assert serious_violations(page, axe_source) == [], "key dialog"
    finally:
        context.close()
