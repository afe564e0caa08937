"""Browser fixtures: Debian's Chromium driven by Playwright, against the real `mlxjan serve`
with the real default model (the e2e suite's data dir and server helper).

Playwright only drives the system browser (`executable_path`): nothing is downloaded at run
time (`.ci/run` installs the `chromium` package). Without /usr/bin/chromium these tests skip
on a developer's machine and fail in CI, where a skip would hide that they never ran.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, sync_playwright

from mlxjan.settings import DEFAULT_MODEL
from tests.e2e.conftest import npm_package, pull, serve_process

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
AXE = "axe-core@4.14.1"
API_KEY = "browser-s3cret"
ARTIFACTS = Path(__file__).parents[2] / ".artifacts" / "browser"
WIDE = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 740}


@dataclass
class RealServer:
    url: str
    http: httpx.Client  # straight to the API, for what the page cannot show (status)


@dataclass
class Tab:
    """A page in a fresh browser context, with what its console said."""

    page: Page
    errors: list[str] = field(default_factory=list)

    def open(self, url: str) -> Page:
        self.page.goto(url)
        self.page.wait_for_selector("body[data-ready='true']")
        return self.page


# Package scope, not session: Playwright's sync API keeps an event loop running on this
# thread until it stops, and every later test's asyncio.run() would then refuse to start.
@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium package")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _real_server(tmp: Path, *args: str) -> Iterator[RealServer]:
    pull(DEFAULT_MODEL)
    headers = {"Authorization": f"Bearer {API_KEY}"} if "--api-key" in args else {}
    with serve_process(tmp, *args) as server, \
            httpx.Client(base_url=server.url, headers=headers, timeout=120,
                         trust_env=False) as http:
        yield RealServer(server.url, http)


@pytest.fixture(scope="package")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    yield from _real_server(tmp_path_factory.mktemp("browser-serve"))


@pytest.fixture(scope="package")
def keyed_real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    yield from _real_server(tmp_path_factory.mktemp("browser-serve-keyed"), "--api-key", API_KEY)


def new_tab(browser: Browser, **options: object) -> Iterator[Tab]:
    context: BrowserContext = browser.new_context(**options)  # type: ignore[arg-type]
    page = context.new_page()
    tab = Tab(page)

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            tab.errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: tab.errors.append(f"uncaught: {error}"))
    try:
        yield tab
    finally:
        context.close()


@pytest.fixture
def tab(browser: Browser) -> Iterator[Tab]:
    yield from new_tab(browser, viewport=WIDE)


@pytest.fixture
def phone_tab(browser: Browser) -> Iterator[Tab]:
    yield from new_tab(browser, viewport=PHONE, is_mobile=True, has_touch=True)


@pytest.fixture(scope="session")
def axe_source() -> str:
    return npm_package(AXE, "axe-core/axe.min.js").read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
