"""POST /v1/embeddings driven by the official `openai` SDK against the fake engine (its
embeddings: a fixed vector per word, so texts sharing words are near), and the refusals
between chat and embedding models in every caller's protocol."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import numpy as np
import openai
import pytest

from mlxjan.engine.base import Engine
from mlxjan.models.mlx_meta import read_mlx_info
from mlxjan.models.store import ModelStore, new_manifest
from mlxjan.server.app import create_app
from mlxjan.settings import Settings
from mlxjan.testing.fake_engine import FakeEngine
from mlxjan.testing.server import running
from tests.api.conftest import MODEL

EMBED = "fake-embed"
FIXED = "fake-embed-fixed"  # an embedding model whose vectors cannot be cut short
DOCUMENTS = ["search_document: the cat sat on the mat",
             "search_document: stock markets fell sharply today",
             "search_document: a recipe for tomato soup",
             "search_document: the rocket reached orbit",
             "search_document: rain is expected tomorrow"]


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    engines: dict[str, Engine] = {
        MODEL: FakeEngine(MODEL),
        EMBED: FakeEngine(EMBED, kind="embedding", dimensions=32, matryoshka=True,
                          context_length=12),
        FIXED: FakeEngine(FIXED, kind="embedding", dimensions=8),
    }
    settings = Settings(data_dir=tmp_path_factory.mktemp("home"), request_timeout=30)
    with running(create_app(settings, engines=engines)) as base:
        yield base


@pytest.fixture(scope="module")
def client(url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0) as sdk:
        yield sdk


def _matrix(result: openai.types.CreateEmbeddingResponse) -> np.ndarray:
    return np.array([item.embedding for item in result.data], dtype=np.float64)


def test_a_list_of_texts_gives_unit_vectors_in_order_with_usage(client: openai.OpenAI) -> None:
    result = client.embeddings.create(model=EMBED, input=DOCUMENTS, encoding_format="float",
                                      user="someone")
    vectors = _matrix(result)
    assert vectors.shape == (5, 32)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-6)
    assert [item.index for item in result.data] == list(range(5))
    assert result.model == EMBED and result.object == "list"
    words = sum(len(d.split()) for d in DOCUMENTS)
    assert result.usage.prompt_tokens == result.usage.total_tokens == words + 2 * 5


def test_the_query_ranks_the_document_sharing_its_words_first(client: openai.OpenAI) -> None:
    docs = _matrix(client.embeddings.create(model=EMBED, input=DOCUMENTS))
    query = _matrix(client.embeddings.create(model=EMBED, input="search_query: rocket orbit"))
    assert int(np.argmax(docs @ query[0])) == 3


def test_base64_is_the_float_vectors_as_little_endian_float32(client: openai.OpenAI,
                                                              url: str) -> None:
    floats = _matrix(client.embeddings.create(model=EMBED, input=DOCUMENTS[:2],
                                              encoding_format="float"))
    raw = httpx.post(f"{url}/v1/embeddings", json={
        "model": EMBED, "input": DOCUMENTS[:2], "encoding_format": "base64"}).json()
    decoded = np.array([np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
                        for item in raw["data"]])
    assert np.allclose(decoded, floats, atol=1e-7)
    # The SDK asks for base64 by default and decodes it itself.
    sdk = _matrix(client.embeddings.create(model=EMBED, input=DOCUMENTS[:2]))
    assert np.allclose(sdk, floats, atol=1e-7)


def test_token_arrays_are_embedded_like_texts(client: openai.OpenAI) -> None:
    one = client.embeddings.create(model=EMBED, input=[5, 6, 7])
    several = client.embeddings.create(model=EMBED, input=[[5, 6, 7], [8]])
    assert len(one.data) == 1 and len(several.data) == 2
    assert np.allclose(_matrix(one)[0], _matrix(several)[0])
    assert several.usage.prompt_tokens == (3 + 2) + (1 + 2)


def test_dimensions_cut_a_matryoshka_vector_and_normalise_it(client: openai.OpenAI) -> None:
    full = _matrix(client.embeddings.create(model=EMBED, input=DOCUMENTS))
    cut = _matrix(client.embeddings.create(model=EMBED, input=DOCUMENTS, dimensions=8))
    assert cut.shape == (5, 8)
    prefix = full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True)
    assert np.allclose(cut, prefix, atol=1e-6)


def test_dimensions_are_refused_for_a_model_not_trained_for_them(client: openai.OpenAI
                                                                  ) -> None:
    assert len(client.embeddings.create(model=FIXED, input="a", dimensions=8).data[0]
               .embedding) == 8  # its own size is accepted
    with pytest.raises(openai.BadRequestError) as exc:
        client.embeddings.create(model=FIXED, input="a", dimensions=4)
    assert exc.value.body["param"] == "dimensions"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=EMBED, input="a", dimensions=33)


@pytest.mark.parametrize("bad", [[], "", ["fine", ""], [[]]])
def test_empty_input_is_a_clear_400(client: openai.OpenAI, bad: object) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.embeddings.create(model=EMBED, input=bad)  # type: ignore[arg-type]
    assert exc.value.body["param"] == "input"  # type: ignore[index]
    assert "empty" in exc.value.message


def test_an_input_longer_than_the_context_is_refused_not_cut(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.embeddings.create(model=EMBED, input=["short", " ".join(["word"] * 11)])
    assert exc.value.code == "context_length_exceeded"
    assert exc.value.body["param"] == "input"  # type: ignore[index]
    assert "input 1 has 13 tokens" in exc.value.message


def test_models_list_says_each_models_kind(url: str) -> None:
    cards = {card["id"]: card for card in httpx.get(f"{url}/v1/models").json()["data"]}
    assert cards[MODEL]["kind"] == "chat"
    assert cards[EMBED]["kind"] == cards[FIXED]["kind"] == "embedding"
    anthropic_list = httpx.get(f"{url}/v1/models", headers={"anthropic-version": "2023-06-01"})
    assert [m["id"] for m in anthropic_list.json()["data"]] == [MODEL]  # chat models only


def test_a_chat_model_is_refused_by_embeddings(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.embeddings.create(model=MODEL, input="hello")
    assert exc.value.code == "wrong_model_kind"
    assert exc.value.body["param"] == "model"  # type: ignore[index]


def test_every_chat_route_refuses_an_embedding_model(client: openai.OpenAI, url: str) -> None:
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model=EMBED, messages=messages)  # type: ignore[arg-type]
    assert exc.value.code == "wrong_model_kind"
    with pytest.raises(openai.BadRequestError) as exc:
        client.responses.create(model=EMBED, input="hi")
    assert exc.value.code == "wrong_model_kind"
    with anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0) as claude:
        with pytest.raises(anthropic.BadRequestError) as refused:
            claude.messages.create(model=EMBED, max_tokens=8, messages=messages)  # type: ignore[arg-type]
        assert refused.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
        assert "embedding model" in refused.value.message
        with pytest.raises(anthropic.BadRequestError):
            claude.messages.count_tokens(model=EMBED, messages=messages)  # type: ignore[arg-type]


def _install(store: ModelStore, model_id: str, kind: str) -> None:
    with store.staging(model_id) as stage:
        (stage / "m.gguf").write_bytes(b"GGUF" + bytes(60))
        store.install(stage, new_manifest(id=model_id, format="gguf", source="test",
                                          file="m.gguf", sha256="0" * 64, size=64, kind=kind))


def test_an_mlx_format_embedding_model_is_refused_before_it_loads(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    with store.staging("mlx-embedder") as stage:
        (stage / "config.json").write_text('{"model_type": "bert"}')
        info = read_mlx_info(stage)
        assert info.kind == "embedding"
        store.install(stage, new_manifest(id="mlx-embedder", format="mlx", source="test",
                                          file=".", sha256="0" * 64, size=22, kind=info.kind))
    app = create_app(Settings(data_dir=tmp_path, request_timeout=30))
    with running(app) as base:
        reply = httpx.post(f"{base}/v1/embeddings", json={"model": "mlx-embedder", "input": "a"})
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "embedding_format_unsupported"
    assert app.state.manager.residency.residents == {}


def test_the_refusals_come_before_any_worker_or_budget_is_touched(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    _install(store, "an-embedder", "embedding")
    _install(store, "a-chatter", "chat")
    app = create_app(Settings(data_dir=tmp_path, request_timeout=30))
    with running(app) as base, httpx.Client(base_url=base) as http:
        chat = http.post("/v1/chat/completions", json={
            "model": "an-embedder", "messages": [{"role": "user", "content": "hi"}]})
        embed = http.post("/v1/embeddings", json={"model": "a-chatter", "input": "hi"})
        assert (chat.status_code, embed.status_code) == (400, 400)
        assert chat.json()["error"]["code"] == embed.json()["error"]["code"] == "wrong_model_kind"
        assert app.state.manager.residency.residents == {}  # no worker, no estimate, no room
        kinds = {card["id"]: card["kind"] for card in http.get("/v1/models").json()["data"]}
        assert kinds == {"an-embedder": "embedding", "a-chatter": "chat"}
