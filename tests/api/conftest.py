from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from mlxjan.engine.base import Engine
from mlxjan.server.app import create_app
from mlxjan.settings import Settings
from mlxjan.testing.fake_engine import FakeEngine
from mlxjan.testing.server import running

MODEL = "fake-model"


@dataclass
class Server:
    url: str
    engine: FakeEngine
    http: httpx.Client
    client: openai.OpenAI
    claude: anthropic.Anthropic


def _serve(settings: Settings, engine: FakeEngine, api_key: str = "unused"
           ) -> Iterator[Server]:
    engines: dict[str, Engine] = {MODEL: engine}
    with running(create_app(settings, engines=engines)) as url, \
            httpx.Client(base_url=url, timeout=30) as http:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=api_key, max_retries=0)
        claude = anthropic.Anthropic(base_url=url, api_key=api_key, max_retries=0,
                                     _strict_response_validation=True)
        try:
            yield Server(url, engine, http, client, claude)
        finally:
            client.close()
            claude.close()


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(MODEL, context_length=200)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, request_timeout=30)


@pytest.fixture
def server(settings: Settings, engine: FakeEngine) -> Iterator[Server]:
    yield from _serve(settings, engine)


@pytest.fixture
def keyed_server(tmp_path: Path, engine: FakeEngine) -> Iterator[Server]:
    yield from _serve(Settings(data_dir=tmp_path, api_key="s3cret"), engine, api_key="s3cret")
