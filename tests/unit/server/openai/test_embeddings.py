"""The embeddings request and response converters: every input shape, empty inputs,
base64 as the OpenAI SDK decodes it."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from pydantic import ValidationError

from mlxjan.errors import InvalidRequestError
from mlxjan.server.openai.embeddings import schemas as s
from mlxjan.server.openai.embeddings.serving import (
    as_base64,
    embedding_list,
    to_embedding_request,
)
from mlxjan.types import Embeddings


def _request(**fields: object) -> s.EmbeddingRequest:
    return s.EmbeddingRequest.model_validate({"model": "m", **fields})


@pytest.mark.parametrize(("given", "inputs"), [
    ("one text", ("one text",)),
    (["a", "b"], ("a", "b")),
    ([1, 2, 3], ((1, 2, 3),)),
    ([[1, 2], [3]], ((1, 2), (3,))),
])
def test_each_input_shape_becomes_texts_or_token_tuples(given: object,
                                                        inputs: tuple[object, ...]) -> None:
    request = to_embedding_request(_request(input=given, dimensions=64, user="u"))
    assert request.inputs == inputs
    assert (request.model, request.dimensions) == ("m", 64)


@pytest.mark.parametrize("given", ["", [], [""], ["a", ""], [[]], [[1], []]])
def test_empty_inputs_are_refused(given: object) -> None:
    with pytest.raises(InvalidRequestError) as exc:
        to_embedding_request(_request(input=given))
    assert exc.value.param == "input"


def test_too_many_inputs_are_refused() -> None:
    with pytest.raises(InvalidRequestError, match="at most 2048"):
        to_embedding_request(_request(input=["x"] * 2049))


@pytest.mark.parametrize("fields", [{"input": [-1]}, {"input": "a", "dimensions": 0},
                                    {"input": "a", "encoding_format": "int8"},
                                    {"input": [1.5]}])
def test_out_of_range_fields_fail_validation(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        _request(**fields)


def test_base64_is_little_endian_float32() -> None:
    vector = (0.25, -1.0, 3.5e-3)
    raw = base64.b64decode(as_base64(vector))
    assert raw[:4] == bytes.fromhex("0000803e")  # 0.25 as <f4
    assert np.frombuffer(raw, dtype="<f4").tolist() == pytest.approx(vector)


def test_the_response_has_an_item_per_vector_and_the_usage() -> None:
    embeddings = Embeddings(((1.0, 0.0), (0.0, 1.0)), prompt_tokens=7)
    floats = embedding_list(_request(input=["a", "b"]), embeddings)
    assert [(d.index, d.embedding) for d in floats.data] == [(0, [1.0, 0.0]), (1, [0.0, 1.0])]
    assert (floats.usage.prompt_tokens, floats.usage.total_tokens) == (7, 7)
    assert floats.model == "m" and floats.object == "list"
    encoded = embedding_list(_request(input=["a", "b"], encoding_format="base64"), embeddings)
    assert encoded.data[1].embedding == as_base64((0.0, 1.0))
