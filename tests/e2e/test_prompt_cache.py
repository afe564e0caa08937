"""The prompt cache on the real model: turn two, interleaved A-B-A, a diverging prompt."""

from __future__ import annotations

import openai
import pytest

from mlxjan.settings import DEFAULT_MODEL

pytestmark = pytest.mark.e2e
SYSTEM_A = "You are a ship's navigator. " + "The sea is calm and the stars are bright. " * 80
SYSTEM_B = "You are a mountain guide. " + "The trail is steep and the air is thin. " * 80


def _cached(client: openai.OpenAI, system: str, question: str) -> tuple[int, int]:
    usage = client.chat.completions.create(
        model=DEFAULT_MODEL, max_tokens=4, temperature=0.0,
        messages=[{"role": "system", "content": system},
                  {"role": "user", "content": question}]).usage
    assert usage is not None and usage.prompt_tokens_details is not None
    return usage.prompt_tokens, usage.prompt_tokens_details.cached_tokens or 0


def test_interleaved_conversations_each_find_their_prefix(client: openai.OpenAI) -> None:
    prompt_a, _ = _cached(client, SYSTEM_A, "Where are we?")
    _, turn_two = _cached(client, SYSTEM_A, "Which way is north?")
    assert turn_two > prompt_a - 20  # all but the new question
    prompt_b, cold_b = _cached(client, SYSTEM_B, "Where are we?")
    assert cold_b < 20  # B shares only the template's first tokens with A
    _, back_to_a = _cached(client, SYSTEM_A, "How far to port?")
    assert back_to_a > prompt_a - 20  # A's prefix came back from the snapshot
    _, back_to_b = _cached(client, SYSTEM_B, "How high is the summit?")
    assert back_to_b > prompt_b - 20
