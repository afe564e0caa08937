"""The prompt cache on the real model: turn two, interleaved A-B-A, a diverging prompt, and
a prefix persisted at shutdown that the next server process reuses."""

from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from mlxjan.settings import DEFAULT_MODEL
from tests.e2e.conftest import serve_process

pytestmark = pytest.mark.e2e
log = logging.getLogger(__name__)
# A fresh opening per run: the session's server persists its cache in the user's data dir,
# so a previous run's A and B would otherwise be found on disk and B would not start cold.
RUN = f"[run {uuid.uuid4().hex[:8]}] "
SYSTEM_A = RUN + "You are a ship's navigator. " + "The sea is calm and the stars are bright. " * 80
SYSTEM_B = RUN + "You are a mountain guide. " + "The trail is steep and the air is thin. " * 80


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
    assert cold_b < 20  # B shares only the template's first tokens (and the run tag) with A
    _, back_to_a = _cached(client, SYSTEM_A, "How far to port?")
    assert back_to_a > prompt_a - 20  # A's prefix came back from the snapshot
    _, back_to_b = _cached(client, SYSTEM_B, "How high is the summit?")
    assert back_to_b > prompt_b - 20


FOG = "The lamp turns and the fog rolls in. "


def _first_token(url: str, messages: list[dict[str, str]]) -> tuple[float, int, int]:
    """Time to first token, prompt tokens and cached tokens of one streamed request."""
    body = {"model": DEFAULT_MODEL, "max_tokens": 4, "temperature": 0.0, "stream": True,
            "stream_options": {"include_usage": True}, "messages": messages}
    first = None
    usage: dict[str, Any] = {}
    start = time.perf_counter()
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=300) as resp:
        for line in resp.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - start
            usage = chunk.get("usage") or usage
    assert first is not None and usage
    return first, usage["prompt_tokens"], usage["prompt_tokens_details"]["cached_tokens"]


def _wait_for_file(folder: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not list(folder.rglob("*.kvc")):
        assert time.monotonic() < deadline, "no prompt-cache file was written"
        time.sleep(0.2)


# SIGTERM after ~1,000 new prompt tokens: the live cache is written on the way out.
# SIGKILL after ~1,200: a prefix that long was already written in the background.
@pytest.mark.parametrize(("stop", "repeats"), [("sigterm", 110), ("sigkill", 130)])
def test_a_persisted_prefix_is_reused_after_a_restart(
        default_model_path: Path, tmp_path: Path, stop: str, repeats: int) -> None:
    env = {"MLXJAN_PROMPT_CACHE_DIR": str(tmp_path / "cache")}
    system = "You are a lighthouse keeper. " + FOG * repeats
    turn1 = [{"role": "system", "content": system},
             {"role": "user", "content": "Is the lamp lit?"}]
    hello = [{"role": "user", "content": "Hello"}]  # loads the model: TTFT is prompt work
    with serve_process(tmp_path, env=env) as server:
        _first_token(server.url, hello)
        cold, prompt1, _ = _first_token(server.url, turn1)
        if stop == "sigkill":
            _wait_for_file(tmp_path / "cache")
            server.proc.kill()
        server.stop()
        assert server.proc.returncode == (0 if stop == "sigterm" else -9)
    assert list((tmp_path / "cache").rglob("*.kvc"))
    turn2 = [*turn1, {"role": "assistant", "content": "Yes."},
             {"role": "user", "content": "And the fog horn?"}]
    with serve_process(tmp_path, env=env) as server:
        _first_token(server.url, hello)
        warm, prompt2, cached = _first_token(server.url, turn2)
    log.info("restart after %s: cold TTFT %.2f s for %d tokens, after restart %.2f s (%.0f%%) with "
             "%d of %d cached", stop, cold, prompt1, warm, 100 * warm / cold, cached, prompt2)
    assert prompt1 > 900
    assert cached > prompt1 - 20  # all of turn one but the tokens the template re-renders
