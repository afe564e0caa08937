"""The engine thread: jobs in order, streams through sinks, background steps between jobs."""

from __future__ import annotations

import asyncio
import threading

import pytest

from mlxjan.engine.base import Event, Finished, Started, TextDelta, Usage
from mlxjan.engine.worker import EngineThread, Sink
from mlxjan.errors import EngineError, InvalidRequestError


def _done() -> Finished:
    return Finished("stop", Usage(1, 1))


async def _collect(stream: object) -> list[Event]:
    return [event async for event in stream]  # type: ignore[attr-defined]


def test_call_runs_on_the_engine_thread() -> None:
    thread = EngineThread("t")
    try:
        name = asyncio.run(thread.call(lambda: threading.current_thread().name))
        assert name == "t"
    finally:
        thread.close()


def test_stream_yields_events_then_ends() -> None:
    thread = EngineThread("t")

    def produce(emit: object, cancelled: threading.Event) -> None:
        emit(Started(1))  # type: ignore[operator]
        emit(TextDelta("hi"))  # type: ignore[operator]
        emit(_done())  # type: ignore[operator]

    try:
        events = asyncio.run(_collect(thread.stream(produce)))
    finally:
        thread.close()
    assert events == [Started(1), TextDelta("hi"), _done()]


def test_errors_are_typed_whatever_the_engine_raised() -> None:
    thread = EngineThread("t")

    def typed(emit: object, cancelled: threading.Event) -> None:
        raise InvalidRequestError("bad", param="x")

    def bug(emit: object, cancelled: threading.Event) -> None:
        raise KeyError("oops")

    try:
        with pytest.raises(InvalidRequestError):
            asyncio.run(_collect(thread.stream(typed)))
        with pytest.raises(EngineError, match="KeyError"):
            asyncio.run(_collect(thread.stream(bug)))
    finally:
        thread.close()


def test_background_steps_run_between_jobs_and_feed_open_sinks() -> None:
    """A batch-like engine: start() only registers the sink; background steps finish it."""
    waiting: list[Sink] = []
    steps = 0

    def step() -> bool:
        nonlocal steps
        steps += 1
        for sink in list(waiting):
            sink.emit(TextDelta(f"step{steps}"))
            sink.emit(_done())
            sink.close()
            waiting.remove(sink)
        return bool(waiting)

    thread = EngineThread("t", background=step)

    def start(sink: Sink) -> None:
        sink.emit(Started(1))
        waiting.append(sink)

    async def two_streams() -> list[list[Event]]:
        return list(await asyncio.gather(_collect(thread.open_stream(start)),
                                         _collect(thread.open_stream(start))))

    try:
        first, second = asyncio.run(two_streams())
    finally:
        thread.close()
    for events in (first, second):
        assert events[0] == Started(1) and events[-1] == _done()
        assert isinstance(events[1], TextDelta)
