"""The page with an embedding model installed: left out of the chat picker, marked in the
status view's installed list."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from mlxjan.settings import DEFAULT_MODEL
from tests.browser.conftest import RealServer, Tab
from tests.browser.test_page import wait_for_models
from tests.e2e.conftest import pull

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
EMBEDDING_MODEL = "nomic-embed-text-v1.5"


def test_embedding_models_stay_out_of_the_chat_picker(tab: Tab, real_server: RealServer
                                                      ) -> None:
    pull(EMBEDDING_MODEL)  # /v1/models reads the store on each call: the server sees it
    page = tab.open(real_server.url)
    wait_for_models(page)
    options = page.locator("#model-select option").evaluate_all(
        "options => options.map(o => o.value)")
    assert DEFAULT_MODEL in options and EMBEDDING_MODEL not in options
    page.click("nav a[data-view='status']")
    expect(page.locator("#installed-models tr", has_text=EMBEDDING_MODEL)).to_contain_text(
        f"{EMBEDDING_MODEL} (embeddings)")
    assert tab.errors == []
