"""POST /v1/embeddings on the real server with the real nomic-embed-text-v1.5 (pulled once
into the suite's data dir), through the OpenAI SDK and LangChain, checked against
llama.cpp's own embeddings of the same GGUF. One server for the module."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from mlxjan.settings import DEFAULT_MODEL
from tests.e2e.conftest import llama_tokenize, planned_llama, pull, serve_process

pytestmark = pytest.mark.e2e
MODEL = "nomic-embed-text-v1.5"
DOCUMENTS = [
    "search_document: The Eiffel Tower is a wrought-iron lattice tower in Paris, France.",
    "search_document: Photosynthesis turns sunlight, water and carbon dioxide into glucose "
    "and oxygen in green plants.",
    "search_document: Python is a programming language whose blocks are marked by "
    "indentation.",
    "search_document: The Great Barrier Reef off Queensland is the largest coral reef system.",
    "search_document: Sourdough bread rises with a fermented starter of flour and water.",
]
QUERIES = [  # query n matches document n
    "search_query: a famous landmark in Paris",
    "search_query: how do plants make food from light?",
    "search_query: which programming language uses indentation for blocks",
    "search_query: where is the biggest coral reef",
    "search_query: how is sourdough leavened",
]


@pytest.fixture(scope="module")
def nomic_path() -> Path:
    return pull(MODEL)


@pytest.fixture(scope="module")
def url(nomic_path: Path, default_model_path: Path,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve_process(tmp_path_factory.mktemp("serve-embeddings")) as server:
        yield server.url


@pytest.fixture(scope="module")
def sdk(url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0,
                       timeout=300) as client:
        yield client


def _vectors(sdk: openai.OpenAI, texts: list[str], **options: object) -> np.ndarray:
    result = sdk.embeddings.create(model=MODEL, input=texts, **options)  # type: ignore[arg-type]
    return np.array([item.embedding for item in result.data], dtype=np.float64)


def test_the_sdk_gets_768_dimension_unit_vectors(sdk: openai.OpenAI) -> None:
    result = sdk.embeddings.create(model=MODEL, input=DOCUMENTS)
    vectors = np.array([item.embedding for item in result.data])
    assert vectors.shape == (5, 768)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert result.usage.prompt_tokens == result.usage.total_tokens > 5 * 10


def test_each_query_ranks_its_document_first(sdk: openai.OpenAI) -> None:
    similarity = _vectors(sdk, QUERIES) @ _vectors(sdk, DOCUMENTS).T
    assert similarity.argmax(axis=1).tolist() == [0, 1, 2, 3, 4]


def test_float_and_base64_agree(sdk: openai.OpenAI, url: str) -> None:
    floats = _vectors(sdk, DOCUMENTS[:2], encoding_format="float")
    body = httpx.post(f"{url}/v1/embeddings", timeout=300, json={
        "model": MODEL, "input": DOCUMENTS[:2], "encoding_format": "base64"}).json()
    decoded = np.array([np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
                        for item in body["data"]])
    assert np.array_equal(decoded.astype(np.float32), floats.astype(np.float32))


def test_the_vectors_are_llama_cpps_own(sdk: openai.OpenAI, nomic_path: Path,
                                        pinned_llama_cpp: str) -> None:
    """Batched in the server (several inputs a llama_decode) or not, the same numbers as
    llama-cpp-python's `Llama(embedding=True)` on the same GGUF, normalised."""
    texts = [*QUERIES[:2], *DOCUMENTS]
    ours = _vectors(sdk, texts)
    with planned_llama(nomic_path, embedding=True, n_ctx=2048) as llama:
        theirs = np.array(llama.embed(texts, normalize=True))
    assert np.abs(ours - theirs).max() < 1e-4


def test_token_arrays_embed_as_their_text_does(sdk: openai.OpenAI, nomic_path: Path) -> None:
    tokens = [llama_tokenize(nomic_path, text, add_bos=True, special=False)
              for text in DOCUMENTS[:2]]
    assert tokens[0][0] == 101 and tokens[0][-1] == 102  # [CLS] ... [SEP], as the server adds
    by_text = _vectors(sdk, DOCUMENTS[:2])
    result = sdk.embeddings.create(model=MODEL, input=tokens)
    by_tokens = np.array([item.embedding for item in result.data])
    assert np.abs(by_tokens - by_text).max() < 1e-6
    assert result.usage.prompt_tokens == sum(len(t) for t in tokens)
    one = sdk.embeddings.create(model=MODEL, input=tokens[0])  # one token array
    # Alone in its batch, not with another: llama.cpp's sums round a little differently.
    assert np.abs(np.array(one.data[0].embedding) - by_text[0]).max() < 1e-4
    with pytest.raises(openai.BadRequestError) as exc:
        sdk.embeddings.create(model=MODEL, input=[[101, 10**6, 102]])
    assert "vocabulary" in exc.value.message


def test_dimensions_256_are_the_normalised_prefix(sdk: openai.OpenAI) -> None:
    full = _vectors(sdk, DOCUMENTS)
    cut = _vectors(sdk, DOCUMENTS, dimensions=256)
    assert cut.shape == (5, 256)
    assert np.allclose(np.linalg.norm(cut, axis=1), 1, atol=1e-5)
    prefix = full[:, :256] / np.linalg.norm(full[:, :256], axis=1, keepdims=True)
    assert np.abs(cut - prefix).max() < 1e-5


def test_an_input_over_the_context_is_refused(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        sdk.embeddings.create(model=MODEL, input=["short", "word " * 3000])
    assert exc.value.code == "context_length_exceeded"
    assert "input 1 has" in exc.value.message


def test_chat_and_embeddings_refuse_each_others_models(sdk: openai.OpenAI, url: str) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert exc.value.code == "wrong_model_kind"
    with pytest.raises(openai.BadRequestError) as exc:
        sdk.embeddings.create(model=DEFAULT_MODEL, input="hi")
    assert exc.value.code == "wrong_model_kind"
    asked = [m["model"] for m in httpx.get(f"{url}/v1/status").json()["models"]]
    assert DEFAULT_MODEL not in asked  # refused before its worker was even set up
    kinds = {m.id: m.kind for m in sdk.models.list().data}  # type: ignore[attr-defined]
    assert (kinds[MODEL], kinds[DEFAULT_MODEL]) == ("embedding", "chat")


def test_langchain_embeds_and_ranks_the_same(url: str) -> None:
    from langchain_openai import OpenAIEmbeddings

    # Its token-length check would download tiktoken's encoding: none can be had offline.
    # Our own HTTP client, closed at the end: LangChain never closes the one it makes.
    with httpx.Client(timeout=300) as http:
        embeddings = OpenAIEmbeddings(model=MODEL, base_url=f"{url}/v1", api_key="none",
                                      check_embedding_ctx_length=False, max_retries=0,
                                      http_client=http)
        documents = np.array(embeddings.embed_documents(DOCUMENTS))
        query = np.array(embeddings.embed_query(QUERIES[1]))
    assert documents.shape == (5, 768)
    assert int(np.argmax(documents @ query)) == 1


def test_the_load_time_self_check_embeds_the_probes(nomic_path: Path) -> None:
    """The kernel check's embedding probes, run fresh (nothing remembered): unit vectors,
    the question nearer its answer than the unrelated probe text is, and a plan to serve."""
    from mlxjan.engine.llamacpp.kernels import PLAIN, KernelCheck, probe_in_child

    result = probe_in_child(nomic_path, PLAIN, embedding=True)
    assert result.failure is None and result.rows is not None
    rows = result.rows
    assert np.allclose(np.linalg.norm(rows, axis=1), 1, atol=1e-5)
    assert rows[1] @ rows[2] > rows[0] @ rows[2] + 0.1
    verdict = KernelCheck(None, embedding=True).verdict(nomic_path, "fresh")
    assert verdict.refused is None
