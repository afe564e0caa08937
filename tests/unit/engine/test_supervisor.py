"""The supervisor with real worker processes serving the scripted engine ("fake" kind):
events cross typed, a crash ends in-flight requests with a typed error and the next request
restarts the worker, repeated crashes mark the model failed, unload ends the process."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import pytest

from mlxjan.engine import supervisor
from mlxjan.engine.base import WorkerStatus
from mlxjan.engine.protocol import EngineSpec, WireError
from mlxjan.engine.supervisor import WorkerEngine, exit_cause
from mlxjan.errors import (
    ContextLengthExceededError,
    EngineError,
    InvalidRequestError,
    ModelFailedError,
    WorkerCrashedError,
    WrongModelKindError,
)
from mlxjan.testing.fake_engine import FakeEngine, fake_worker_spec
from mlxjan.types import (
    ChatMessage,
    EmbeddingRequest,
    Event,
    Finished,
    GenerationRequest,
    SamplingParams,
    TextDelta,
)

T = TypeVar("T")
MODEL = "fake-model"


def _spec(token_delay: float = 0.0, context_length: int = 4096) -> EngineSpec:
    return fake_worker_spec(MODEL, token_delay=token_delay, context_length=context_length)


def _ask(text: str, max_tokens: int | None = None) -> GenerationRequest:
    return GenerationRequest(model=MODEL, messages=(ChatMessage("user", text),),
                             sampling=SamplingParams(max_tokens=max_tokens))


def _run(engine: WorkerEngine, test: Callable[[WorkerEngine], Awaitable[T]]) -> T:
    async def main() -> T:
        try:
            return await asyncio.wait_for(test(engine), 60)  # a lost event fails, not hangs
        finally:
            await engine.aclose()

    return asyncio.run(main())


def _text(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def _pid(engine: WorkerEngine) -> int:
    pid = _worker(engine).pid
    assert pid is not None
    return pid


def _worker(engine: WorkerEngine) -> WorkerStatus:
    worker = engine.health().worker
    assert worker is not None
    return worker


def test_an_answer_crosses_the_worker_as_the_engine_gave_it() -> None:
    async def test(engine: WorkerEngine) -> None:
        request = _ask("hello there")
        remote = [e async for e in engine.stream(request)]
        local_engine = FakeEngine(MODEL)
        try:
            local = [e async for e in local_engine.stream(request)]
            assert remote == local
            assert await engine.count_tokens(request) == await local_engine.count_tokens(
                request)
        finally:
            await local_engine.aclose()
        assert _pid(engine) != os.getpid()

    _run(WorkerEngine(_spec()), test)


def test_a_typed_error_keeps_its_class_and_fields() -> None:
    async def test(engine: WorkerEngine) -> None:
        with pytest.raises(ContextLengthExceededError) as caught:
            [e async for e in engine.stream(_ask("word " * 50))]
        assert caught.value.prompt_tokens > caught.value.context_length == 20
        assert "prompt is too long" in caught.value.anthropic_message

    _run(WorkerEngine(_spec(context_length=20)), test)


def test_a_crash_mid_answer_ends_it_typed_and_the_next_request_restarts_the_worker() -> None:
    async def test(engine: WorkerEngine) -> None:
        stream = engine.stream(_ask("one two three four five six seven eight"))
        first = await anext(stream)
        crashed = _pid(engine)
        os.kill(crashed, signal.SIGSEGV)
        with pytest.raises(WorkerCrashedError, match="killed by SIGSEGV"):
            async for _ in stream:
                pass
        assert first is not None
        assert _worker(engine).state == "crashed"
        assert _worker(engine).last_exit == "killed by SIGSEGV"
        events = [e async for e in engine.stream(_ask("again"))]
        assert _text(events) == "You said: again"
        assert _pid(engine) != crashed

    _run(WorkerEngine(_spec(token_delay=0.05)), test)


def test_repeated_crashes_mark_the_model_failed_until_loaded_by_hand(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor, "BACKOFF_S", (0.0, 0.0, 0.0))

    async def test(engine: WorkerEngine) -> None:
        for _ in range(supervisor.CRASHES_TO_FAIL):
            await engine.load()
            pid = _pid(engine)
            os.kill(pid, signal.SIGKILL)
            while _worker(engine).pid == pid:
                await asyncio.sleep(0.01)
        assert _worker(engine).state == "failed"
        with pytest.raises(ModelFailedError, match="killed by SIGKILL"):
            [e async for e in engine.stream(_ask("hi"))]
        await engine.load()
        assert _text([e async for e in engine.stream(_ask("hi"))]) == "You said: hi"

    _run(WorkerEngine(_spec()), test)


def test_a_client_that_leaves_stops_the_answer_in_the_worker() -> None:
    async def test(engine: WorkerEngine) -> None:
        stream = engine.stream(_ask(" ".join(["word"] * 200)))
        await anext(stream)
        await anext(stream)
        await stream.aclose()  # type: ignore[attr-defined]
        # The worker reports the engine's record when the stream ends there: at once when
        # cancelled, after all 200 tokens (4 s) when not.
        while not engine.health().tokens_generated:
            await asyncio.sleep(0.01)
        produced = engine.health().tokens_generated
        assert produced is not None and produced < 50
        assert _worker(engine).requests_in_flight == 0

    _run(WorkerEngine(_spec(token_delay=0.02)), test)


def test_the_engines_record_is_reported_while_an_answer_runs() -> None:
    async def test(engine: WorkerEngine) -> None:
        stream = engine.stream(_ask(" ".join(["word"] * 200)))  # 4 s of tokens
        for _ in range(10):
            await anext(stream)
        # What the worker reports as it changes, not only when a stream ends: a status
        # page sees an answer advance (and a cancelled one leave the batch) within a second.
        deadline = asyncio.get_running_loop().time() + 1.0
        while not engine.health().tokens_generated:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.02)
        produced = engine.health().tokens_generated
        assert produced is not None and produced < 200
        await stream.aclose()  # type: ignore[attr-defined]

    _run(WorkerEngine(_spec(token_delay=0.02)), test)


def test_unload_ends_the_worker_process_and_a_request_starts_a_new_one() -> None:
    async def test(engine: WorkerEngine) -> None:
        await engine.load()
        pid = _pid(engine)
        await engine.unload()
        assert not Path(f"/proc/{pid}").exists() or _zombie_or_gone(pid)
        assert _worker(engine).state == "stopped"
        assert _text([e async for e in engine.stream(_ask("back"))]) == "You said: back"
        assert _pid(engine) != pid

    _run(WorkerEngine(_spec()), test)


def _zombie_or_gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in status


def test_requests_that_arrive_together_start_one_worker() -> None:
    async def test(engine: WorkerEngine) -> None:
        async def answer(i: int) -> str:
            return _text([e async for e in engine.stream(_ask(f"n{i}"))])

        answers = await asyncio.gather(*(answer(i) for i in range(6)))
        assert answers == [f"You said: n{i}" for i in range(6)]
        assert _worker(engine).crashes_recent == 0

    starts: list[int] = []
    original = supervisor._Worker.__init__

    def counting(self: supervisor._Worker, *args: object) -> None:
        original(self, *args)  # type: ignore[arg-type]
        starts.append(self.pid)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(supervisor._Worker, "__init__", counting)
        _run(WorkerEngine(_spec()), test)
    assert len(starts) == 1


def test_wire_errors_rebuild_their_class_or_fall_back_to_an_engine_error() -> None:
    error = WireError.of(ContextLengthExceededError(9000, 4096)).rebuild()
    assert isinstance(error, ContextLengthExceededError)
    assert (error.prompt_tokens, error.context_length, error.param) == (9000, 4096, "messages")
    assert str(error) == error.message
    unknown = WireError("NoSuchError", "boom").rebuild()
    assert type(unknown) is EngineError and unknown.message == "boom"


def test_exit_causes_name_the_signal() -> None:
    assert exit_cause(-signal.SIGSEGV) == "killed by SIGSEGV"
    assert exit_cause(-signal.SIGKILL) == "killed by SIGKILL"
    assert exit_cause(3) == "exited with status 3"


async def _drain(stream: AsyncIterator[Event]) -> list[Event]:
    return [e async for e in stream]


def test_finished_arrives_last_with_usage() -> None:
    async def test(engine: WorkerEngine) -> None:
        events = await _drain(engine.stream(_ask("a b c", max_tokens=2)))
        assert isinstance(events[-1], Finished)
        assert events[-1].reason == "length" and events[-1].usage.completion_tokens == 2

    _run(WorkerEngine(_spec()), test)


def test_unload_lets_the_answers_in_flight_finish_first() -> None:
    async def test(engine: WorkerEngine) -> None:
        stream = engine.stream(_ask(" ".join(["word"] * 20)))
        await anext(stream)
        pid = _pid(engine)
        unloading = asyncio.ensure_future(engine.unload())
        events = [e async for e in stream]
        assert isinstance(events[-1], Finished) and events[-1].reason == "stop"
        await unloading
        assert _zombie_or_gone(pid)

    _run(WorkerEngine(_spec(token_delay=0.02)), test)


def test_a_client_that_leaves_during_the_load_does_not_cut_it_short() -> None:
    async def test(engine: WorkerEngine) -> None:
        gone = asyncio.ensure_future(_drain(engine.stream(_ask("first"))))
        await asyncio.sleep(0.1)  # the worker is still starting (a new Python process)
        assert _worker(engine).state == "starting"
        starting = _pid(engine)
        gone.cancel()
        answer = await _drain(engine.stream(_ask("second")))
        assert _text(answer) == "You said: second"
        assert _pid(engine) == starting

    _run(WorkerEngine(_spec()), test)


def test_the_workers_log_lines_arrive_in_the_servers_logging(
        caplog: pytest.LogCaptureFixture) -> None:
    async def test(engine: WorkerEngine) -> None:
        await engine.load()
        while not any("fake-model loaded" in r.getMessage() for r in caplog.records):
            await asyncio.sleep(0.01)
        (line,) = [r for r in caplog.records if "fake-model loaded" in r.getMessage()]
        assert line.name == "mlxjan.engine.worker" and line.levelno == logging.INFO
        assert line.getMessage() == f"[worker {_pid(engine)}] fake-model loaded (fake engine)"

    with caplog.at_level(logging.INFO):
        _run(WorkerEngine(replace(_spec(), log_level="INFO")), test)


def test_embeddings_cross_to_a_worker_and_back_typed() -> None:
    engine = WorkerEngine(fake_worker_spec("embedder", kind="embedding", context_length=5))
    assert engine.kind == "embedding"

    async def test(engine: WorkerEngine) -> None:
        result = await engine.embed(EmbeddingRequest("embedder", ("a b", (1, 2)), 8))
        assert [len(v) for v in result.vectors] == [8, 8]
        assert result.prompt_tokens == 4 + 4
        with pytest.raises(ContextLengthExceededError) as exc:
            await engine.embed(EmbeddingRequest("embedder", ("a b c d",)))
        assert exc.value.param == "input"
        with pytest.raises(InvalidRequestError):
            await engine.embed(EmbeddingRequest("embedder", ("a",), 17))
        with pytest.raises(WrongModelKindError):
            await engine.count_tokens(_ask("hi"))
        assert not engine._calls  # every answer settled

    _run(engine, test)


def test_a_chat_worker_refuses_to_embed() -> None:
    async def test(engine: WorkerEngine) -> None:
        with pytest.raises(WrongModelKindError):
            await engine.embed(EmbeddingRequest(MODEL, ("a",)))

    _run(WorkerEngine(_spec()), test)
