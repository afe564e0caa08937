"""Models on demand, for real: three real models in their own worker processes, a memory
budget that fits two, keep-alive unloads whose memory really returns, and Claude's tier
names routed to three models."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from mlxjan.engine.footprint import estimate
from mlxjan.engine.manager import EngineManager
from mlxjan.machine import process_rss
from mlxjan.models.store import ModelStore
from mlxjan.settings import DEFAULT_MODEL, Settings
from tests.e2e.conftest import ServerProcess, e2e_home, pull, serve_process

pytestmark = pytest.mark.e2e
GEMMA, SMOL = "gemma-3-270m", "smollm2-135m-instruct"
MODELS = (DEFAULT_MODEL, GEMMA, SMOL)
CONTEXT = "2048"  # small KV caches: three models load in seconds
HI: Any = [{"role": "user", "content": "Say hi."}]


@pytest.fixture(scope="module")
def models(default_model_path: Path) -> tuple[str, ...]:
    for model_id in MODELS:
        pull(model_id)
    return MODELS


@pytest.fixture(scope="module")
def roomy(models: tuple[str, ...], tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[ServerProcess]:
    """Room for all three; idle models unload after 2 s unless a request says otherwise."""
    env = {"MLXJAN_KEEP_ALIVE": "2s", "MLXJAN_ANTHROPIC_OPUS_MODEL": DEFAULT_MODEL,
           "MLXJAN_ANTHROPIC_SONNET_MODEL": SMOL, "MLXJAN_ANTHROPIC_HAIKU_MODEL": GEMMA}
    with serve_process(tmp_path_factory.mktemp("roomy"), "--context-length", CONTEXT,
                       env=env) as server:
        yield server


def _estimates() -> dict[str, int]:
    """What the server will estimate for each model (the same function, same settings)."""
    settings = Settings(data_dir=e2e_home(), context_length=int(CONTEXT))
    store = ModelStore(e2e_home())
    manager = EngineManager(settings, store)
    found = {m: store.get(m) for m in MODELS}
    return {m: estimate(manager.spec_for(manifest)).total
            for m, manifest in found.items() if manifest is not None}


@pytest.fixture(scope="module")
def two_fit(models: tuple[str, ...], tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[ServerProcess]:
    """A byte budget that holds any two of the three models, never all three."""
    sizes = sorted(_estimates().values())
    budget = sum(sizes) - sizes[0] // 2
    with serve_process(tmp_path_factory.mktemp("two-fit"), "--context-length", CONTEXT,
                       env={"MLXJAN_MEMORY_BUDGET_BYTES": str(budget),
                            "MLXJAN_KEEP_ALIVE": "-1"}) as server:
        yield server


def _client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=300)


def _ask(server: ServerProcess, model: str, **extra: Any) -> str:
    with _client(server) as client:
        answer = client.chat.completions.create(model=model, messages=HI,
                                                max_tokens=4, temperature=0, extra_body=extra)
    return answer.choices[0].message.content or ""


def _status(server: ServerProcess) -> dict[str, dict[str, Any]]:
    models = httpx.get(f"{server.url}/v1/status", timeout=30).json()["models"]
    return {m["model"]: m for m in models}


def _loaded(server: ServerProcess) -> set[str]:
    listed = httpx.get(f"{server.url}/v1/models", params={"loaded": "true"}, timeout=30).json()
    return {card["id"] for card in listed["data"]}


def _wait_until(condition: Any, timeout: float = 30) -> float:
    """Seconds until `condition()` held; fails after `timeout`."""
    began = time.monotonic()
    while not condition():
        assert time.monotonic() - began < timeout, "timed out"
        time.sleep(0.05)
    return time.monotonic() - began


def _resident_bytes(server: ServerProcess) -> int:
    pids = [server.proc.pid] + [m["worker"]["pid"] for m in _status(server).values()
                                if m["worker"] and m["worker"]["pid"]]
    return sum(process_rss(pid) or 0 for pid in pids)


def _starts(server: ServerProcess, model: str) -> int:
    return len(re.findall(rf"{re.escape(model)}: worker \d+ started", server.log.read_text()))


def test_three_models_resident_at_once_answer_concurrently(roomy: ServerProcess) -> None:
    async def three() -> list[str]:
        async with openai.AsyncOpenAI(base_url=f"{roomy.url}/v1", api_key="x",
                                      max_retries=0, timeout=300) as client:
            answers = await asyncio.gather(*(client.chat.completions.create(
                model=m, messages=HI, max_tokens=6, temperature=0,
                extra_body={"keep_alive": -1}) for m in MODELS))
        return [a.model for a in answers if a.choices[0].message.content]

    assert asyncio.run(three()) == list(MODELS)
    assert _loaded(roomy) == set(MODELS)
    status = _status(roomy)
    pids = {status[m]["worker"]["pid"] for m in MODELS}
    assert len(pids) == 3 and roomy.proc.pid not in pids
    for m in MODELS:
        residency = status[m]["residency"]
        assert residency["measured_bytes"] > 50 * 2**20
        # The estimate is the budget's figure: within a third of what the worker holds.
        assert 0.67 < residency["estimated_bytes"] / residency["measured_bytes"] < 1.5, m
        assert residency["keep_alive_s"] is None and residency["expires_at"] is None


def test_keep_alive_two_seconds_unloads_and_the_memory_returns(roomy: ServerProcess) -> None:
    _ask(roomy, GEMMA, keep_alive=-1)
    before = _resident_bytes(roomy)
    pid = _status(roomy)[GEMMA]["worker"]["pid"]
    _ask(roomy, GEMMA, keep_alive=2)
    answered = time.monotonic()
    assert _status(roomy)[GEMMA]["residency"]["expires_at"] is not None
    _wait_until(lambda: GEMMA not in _loaded(roomy))
    took = time.monotonic() - answered
    assert 1.5 < took < 8, took
    _wait_until(lambda: process_rss(pid) is None)  # the worker has exited
    assert _resident_bytes(roomy) < before - 100 * 2**20


def test_keep_alive_zero_unloads_at_once_and_minus_one_keeps(roomy: ServerProcess) -> None:
    _ask(roomy, SMOL, keep_alive=0)
    assert _wait_until(lambda: SMOL not in _loaded(roomy)) < 5
    _ask(roomy, SMOL, keep_alive="-1")
    time.sleep(3)  # past the server's 2 s default
    assert SMOL in _loaded(roomy)
    assert _status(roomy)[SMOL]["residency"]["expires_at"] is None
    _ask(roomy, SMOL)  # the default again: 2 s
    _wait_until(lambda: SMOL not in _loaded(roomy), timeout=15)


def test_ten_concurrent_requests_for_an_unloaded_model_cause_one_load(
        roomy: ServerProcess) -> None:
    httpx.post(f"{roomy.url}/v1/models/{SMOL}/unload", timeout=60).raise_for_status()
    starts = _starts(roomy, SMOL)

    async def ten() -> int:
        async with openai.AsyncOpenAI(base_url=f"{roomy.url}/v1", api_key="x",
                                      max_retries=0, timeout=300) as client:
            answers = await asyncio.gather(*(client.chat.completions.create(
                model=SMOL, messages=HI, max_tokens=2) for _ in range(10)))
        return sum(1 for a in answers if a.choices[0].finish_reason)

    assert asyncio.run(ten()) == 10
    assert _starts(roomy, SMOL) == starts + 1


def test_claude_tier_names_route_to_three_models_in_one_session(roomy: ServerProcess) -> None:
    tiers = {"claude-opus-5-5": DEFAULT_MODEL, "claude-sonnet-5-5": SMOL,
             "claude-haiku-5-5": GEMMA}
    served: dict[str, int] = {}
    with anthropic.Anthropic(base_url=roomy.url, api_key="x", max_retries=0,
                             timeout=300) as claude:
        for name, model in tiers.items():
            with claude.messages.stream(model=name, max_tokens=4, messages=HI,
                                        extra_query={"beta": "true"},
                                        extra_body={"keep_alive": 30}) as stream:
                final = stream.get_final_message()
            assert final.model == name and final.usage.output_tokens > 0
            served[model] = _status(roomy)[model]["worker"]["pid"]
    assert set(served) == set(MODELS) and len(set(served.values())) == 3


def test_a_budget_for_two_evicts_the_least_recently_used_idle_model(
        two_fit: ServerProcess) -> None:
    for model in (DEFAULT_MODEL, GEMMA, DEFAULT_MODEL):  # now gemma is the older
        _ask(two_fit, model)
    assert _loaded(two_fit) == {DEFAULT_MODEL, GEMMA}
    _ask(two_fit, SMOL)
    assert _loaded(two_fit) == {DEFAULT_MODEL, SMOL}
    assert "gemma-3-270m: unloading (to make room for smollm2" in two_fit.log.read_text()


def test_a_busy_model_is_never_evicted_mid_answer(two_fit: ServerProcess) -> None:
    _ask(two_fit, DEFAULT_MODEL)
    _ask(two_fit, SMOL)  # the default model is now the least recently used
    result: dict[str, Any] = {}

    def long_answer() -> None:
        with _client(two_fit) as client:
            stream = client.chat.completions.create(
                model=DEFAULT_MODEL, stream=True, max_tokens=120, temperature=0,
                messages=[{"role": "user", "content": "Count from 1 to 100."}])
            chunks = [c for c in stream if c.choices]
        result["finish"] = chunks[-1].choices[0].finish_reason
        result["text"] = "".join(c.choices[0].delta.content or "" for c in chunks)

    busy = threading.Thread(target=long_answer)
    busy.start()
    _wait_until(lambda: _status(two_fit)[DEFAULT_MODEL]["residency"]["requests"] == 1)
    _ask(two_fit, GEMMA)  # must make room: the idle smollm2 goes, not the busy default
    assert _loaded(two_fit) == {DEFAULT_MODEL, GEMMA}
    busy.join(300)
    assert result["finish"] in ("length", "stop") and result["text"]


def test_a_model_too_large_for_the_budget_gets_the_typed_error(
        models: tuple[str, ...], tmp_path: Path) -> None:
    with serve_process(tmp_path, "--context-length", CONTEXT,
                       env={"MLXJAN_MEMORY_BUDGET_BYTES": str(500 * 2**20)}) as server:
        with _client(server) as client, pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model=DEFAULT_MODEL, messages=HI)
        assert caught.value.code == "model_too_large"
        assert re.search(r"needs about \d+\.\d\d GiB .* than the 0\.49 GiB budget",
                         caught.value.message)
        with anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0) as claude, \
                pytest.raises(anthropic.BadRequestError):
            claude.messages.create(model=DEFAULT_MODEL, max_tokens=4, messages=HI)
        assert _loaded(server) == set() and _starts(server, DEFAULT_MODEL) == 0
        assert _ask(server, SMOL)  # one that fits still loads


# llama-server (the vendored llama.cpp of the pinned llama-cpp-python, `-c 4096 -np 4
# --jinja`) answered this, greedy, for the same request.
RAINBOW: Any = [{"role": "user", "content": "Name three colours of the rainbow."}]
# What llama-server (the vendored llama.cpp, --jinja, greedy) answers, by its -fa on|off:
# attention with and without flash attention rounds differently, and greedy text follows.
LLAMA_SERVER_RAINBOW = {
    True: ("The rainbow is often associated with three colours: blue, red, and yellow. "
           "However, in reality, the rainbow is"),
    False: ("The rainbow is a beautiful and magical sight, but it's not just about the colors "
            "of the rainbow. There are actually"),
}


def test_smollm2_answers_token_for_token_what_llama_server_answers(
        roomy: ServerProcess, pinned_llama_cpp: str) -> None:
    with _client(roomy) as client:
        answer = client.chat.completions.create(model=SMOL, messages=RAINBOW, temperature=0,
                                                max_tokens=24)
    assert answer.usage is not None and answer.usage.prompt_tokens == 37
    flash_attention = _status(roomy)[SMOL]["flash_attention"]
    assert answer.choices[0].message.content == LLAMA_SERVER_RAINBOW[flash_attention]
