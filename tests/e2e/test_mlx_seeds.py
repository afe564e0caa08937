"""A seeded MLX answer is the same text whatever else is decoding beside it in the batch
(tiny model, random weights: near-uniform distributions, so any change in the random
stream changes the text at once)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from tests.e2e.conftest import TINY_MLX_MODEL

pytestmark = pytest.mark.e2e
QUESTIONS = {11: "Invent a name for a dragon.", 22: "Name a colour.", 33: "Say something."}


@pytest.fixture(scope="module")
def mlx_client(mlx_server_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{mlx_server_url}/v1", api_key="none", max_retries=0,
                       timeout=300) as client:
        yield client


def _sample(client: openai.OpenAI, question: str, seed: int | None,
            max_tokens: int = 16) -> str:
    result = client.chat.completions.create(
        model=TINY_MLX_MODEL, messages=[{"role": "user", "content": question}],
        temperature=1.0, max_tokens=max_tokens, seed=seed)
    text = result.choices[0].message.content
    assert text
    return text


def _at_once(client: openai.OpenAI, *asks: tuple[str, int | None, int]) -> list[str]:
    with ThreadPoolExecutor(len(asks)) as pool:
        return list(pool.map(lambda ask: _sample(client, *ask), asks))


def test_seeded_answers_in_one_batch_match_lone_ones(mlx_client: openai.OpenAI) -> None:
    alone = {seed: _sample(mlx_client, q, seed) for seed, q in QUESTIONS.items()}
    assert len(set(alone.values())) == len(alone), "seeds should give different texts"
    pairs = [(11, 22), (22, 33), (33, 11)]
    together = [_at_once(mlx_client, (QUESTIONS[a], a, 16), (QUESTIONS[b], b, 16))
                for a, b in pairs]
    assert together == [[alone[a], alone[b]] for a, b in pairs]


def test_the_same_seed_twice_at_once_gives_the_same_text(mlx_client: openai.OpenAI) -> None:
    alone = _sample(mlx_client, QUESTIONS[11], 11)
    assert _at_once(mlx_client, *[(QUESTIONS[11], 11, 16)] * 2) == [alone, alone]


def test_an_unseeded_answer_beside_leaves_the_seeded_one_alone(
        mlx_client: openai.OpenAI) -> None:
    alone = _sample(mlx_client, QUESTIONS[22], 22)
    # The unseeded answer runs longer, so it samples beside every token of the seeded one.
    seeded, unseeded = _at_once(mlx_client, (QUESTIONS[22], 22, 16),
                                (QUESTIONS[33], None, 48))
    assert seeded == alone
    # Unseeded answers draw fresh entropy: two of them do not repeat each other.
    assert unseeded != _sample(mlx_client, QUESTIONS[33], None, 48)
