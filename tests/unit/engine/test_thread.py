"""The engine thread: jobs in order, streams through sinks, background steps between jobs."""

from __future__ import annotations

import asyncio
import threading

import pytest

from mlxjan.engine.thread import EngineThread, Sink
from mlxjan.errors import EngineError, InvalidRequestError
from mlxjan.types import Event, Finished, Started, TextDelta, Usage


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


def test_requests_queued_during_a_step_all_start_before_the_next() -> None:
    """Answers that arrive while a step runs join the very next step together."""
    started: list[Sink] = []
    seen: list[int] = []
    in_step, release = threading.Event(), threading.Event()

    def step() -> bool:
        if not seen:
            in_step.set()
            release.wait(10)
        seen.append(len(started))
        for sink in started:
            if not sink.closed:
                sink.emit(_done())
                sink.close()
        return len(seen) < 3

    thread = EngineThread("t", background=step)

    async def three() -> None:
        first = asyncio.ensure_future(_collect(thread.open_stream(started.append)))
        await asyncio.to_thread(in_step.wait, 10)  # the thread is inside a step now
        rest = [asyncio.ensure_future(_collect(thread.open_stream(started.append)))
                for _ in range(3)]
        await asyncio.sleep(0.1)  # all three queued behind the step
        release.set()
        await asyncio.gather(first, *rest)

    try:
        asyncio.run(three())
    finally:
        thread.close()
    assert seen[:2] == [1, 4]


def test_a_step_s_events_reach_the_loop_in_one_wake_up() -> None:
    """Each hand-off wakes the event loop; a step emitting for several answers wakes it once."""
    waiting: list[Sink] = []

    def step() -> bool:
        if len(waiting) < 2:
            return True  # the second stream is still on its way
        for sink in waiting:
            sink.emit(TextDelta("a"))
            sink.emit(TextDelta("b"))
            sink.emit(_done())
            sink.close()
        waiting.clear()
        return False

    thread = EngineThread("t", background=step)

    def start(sink: Sink) -> None:
        waiting.append(sink)

    async def two_streams() -> int:
        loop = asyncio.get_running_loop()
        wake_ups = 0
        original = loop.call_soon_threadsafe

        def counted(*args: object) -> object:
            nonlocal wake_ups
            wake_ups += 1
            return original(*args)  # type: ignore[arg-type]

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
        results = await asyncio.gather(_collect(thread.open_stream(start)),
                                       _collect(thread.open_stream(start)))
        assert all(r == [TextDelta("a"), TextDelta("b"), _done()] for r in results)
        return wake_ups

    try:
        wake_ups = asyncio.run(two_streams())
    finally:
        thread.close()
    assert wake_ups == 1
