"""The protocol-neutral event plumbing: start, deadline, keep-alives, draining."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence

import pytest

from mlxjan.errors import ContextLengthExceededError, EngineError, RequestTimeoutError
from mlxjan.server.events import KeepAlive, drain, open_stream, with_keepalive
from mlxjan.testing.fake_engine import FakeEngine
from mlxjan.types import (
    ChatMessage,
    Event,
    Finished,
    GenerationRequest,
    SamplingParams,
    Started,
    TextDelta,
    Usage,
)

FINISHED = Finished("stop", Usage(3, 2))


def gen_request(text: str = "hello there", max_tokens: int | None = None) -> GenerationRequest:
    return GenerationRequest(model="fake", messages=(ChatMessage("user", text),),
                             sampling=SamplingParams(max_tokens=max_tokens))


class Source:
    """An async generator of events with scripted pauses that records how it ended."""

    def __init__(self, items: Sequence[tuple[float, TextDelta | Finished]]) -> None:
        self.items = items
        self.sent = 0
        self.closed = False

    async def events(self) -> AsyncIterator[TextDelta | Finished]:
        try:
            for pause, event in self.items:
                if pause:
                    await asyncio.sleep(pause)
                self.sent += 1
                yield event
        finally:
            self.closed = True


async def collect(events: AsyncIterator[TextDelta | Finished | KeepAlive]
                  ) -> list[TextDelta | Finished | KeepAlive]:
    return [event async for event in events]


# --- with_keepalive --------------------------------------------------------------------------


def test_keepalive_passes_events_through_in_order() -> None:
    items: list[TextDelta | Finished] = [TextDelta("a"), TextDelta("b"), TextDelta(""),
                                         TextDelta("c"), FINISHED]
    source = Source([(0.0, e) for e in items])
    out = asyncio.run(collect(with_keepalive(source.events(), interval=10)))
    assert out == items
    assert source.closed


def test_keepalive_for_an_empty_source() -> None:
    source = Source([])
    assert asyncio.run(collect(with_keepalive(source.events(), interval=10))) == []
    assert source.closed


def test_keepalive_fills_silences_longer_than_the_interval() -> None:
    source = Source([(0.0, TextDelta("fast")), (0.25, TextDelta("slow")), (0.0, FINISHED)])
    out = asyncio.run(collect(with_keepalive(source.events(), interval=0.04)))
    assert [e for e in out if not isinstance(e, KeepAlive)] == [
        TextDelta("fast"), TextDelta("slow"), FINISHED]
    assert out[0] == TextDelta("fast")
    gap = out[1:out.index(TextDelta("slow"))]
    assert gap, "a silence longer than the interval gets keep-alives"
    assert all(isinstance(e, KeepAlive) for e in gap)
    assert out[-2:] == [TextDelta("slow"), FINISHED]


def test_keepalive_before_the_first_event() -> None:
    source = Source([(0.15, TextDelta("late")), (0.0, FINISHED)])
    out = asyncio.run(collect(with_keepalive(source.events(), interval=0.03)))
    assert isinstance(out[0], KeepAlive)
    assert out[-2:] == [TextDelta("late"), FINISHED]


def test_keepalive_does_not_lose_the_pending_event() -> None:
    # Each wait times out several times over the same in-flight read: it is reused, not
    # restarted, so nothing is skipped or duplicated.
    items: list[TextDelta | Finished] = [TextDelta(str(i)) for i in range(4)]
    source = Source([(0.07, e) for e in items])
    out = asyncio.run(collect(with_keepalive(source.events(), interval=0.02)))
    assert [e for e in out if not isinstance(e, KeepAlive)] == items
    assert source.sent == 4


def test_keepalive_closes_the_source_when_the_consumer_stops_after_an_event() -> None:
    source = Source([(0.0, TextDelta("a")), (0.0, TextDelta("b")), (0.0, FINISHED)])

    async def main() -> None:
        stream = with_keepalive(source.events(), interval=10)
        assert await anext(stream) == TextDelta("a")
        await stream.aclose()

    asyncio.run(main())
    assert source.closed
    assert source.sent == 1


def test_keepalive_closes_the_source_when_the_consumer_stops_during_a_silence() -> None:
    source = Source([(0.0, TextDelta("a")), (30.0, TextDelta("never")), (0.0, FINISHED)])

    async def main() -> None:
        stream = with_keepalive(source.events(), interval=0.02)
        assert await anext(stream) == TextDelta("a")
        assert isinstance(await anext(stream), KeepAlive)  # a read is in flight now
        await stream.aclose()

    asyncio.run(asyncio.wait_for(main(), 5))
    assert source.closed
    assert source.sent == 1


def test_keepalive_closes_the_source_when_the_consumer_breaks() -> None:
    source = Source([(0.0, TextDelta(str(i))) for i in range(10)])

    async def main() -> list[TextDelta | Finished | KeepAlive]:
        seen = []
        stream = with_keepalive(source.events(), interval=10)
        try:
            async for event in stream:
                seen.append(event)
                if len(seen) == 3:
                    break
        finally:
            await stream.aclose()
        return seen

    assert asyncio.run(main()) == [TextDelta("0"), TextDelta("1"), TextDelta("2")]
    assert source.closed
    assert source.sent == 3


def test_keepalive_passes_source_errors_after_earlier_events() -> None:
    async def failing() -> AsyncIterator[TextDelta | Finished]:
        yield TextDelta("a")
        raise RequestTimeoutError("too slow")

    async def main() -> list[TextDelta | Finished | KeepAlive]:
        seen = []
        with pytest.raises(RequestTimeoutError):
            async for event in with_keepalive(failing(), interval=10):
                seen.append(event)
        return seen

    assert asyncio.run(main()) == [TextDelta("a")]


# --- open_stream and drain with the fake engine ---------------------------------------------


def test_open_stream_then_drain() -> None:
    async def main() -> None:
        engine = FakeEngine("fake")
        try:
            opened = await open_stream(engine, gen_request("hello there"), timeout=10)
            assert isinstance(opened.started, Started)
            assert opened.started.prompt_tokens == await engine.count_tokens(gen_request())
            deltas, finished = await drain(opened.events)
            assert "".join(d.text for d in deltas) == "You said: hello there"
            assert finished.reason == "stop"
            assert finished.usage.prompt_tokens == opened.started.prompt_tokens
        finally:
            await engine.aclose()

    asyncio.run(main())


def test_open_stream_raises_the_engines_error_before_returning() -> None:
    async def main() -> None:
        engine = FakeEngine("fake", context_length=5)
        try:
            with pytest.raises(ContextLengthExceededError) as info:
                await open_stream(engine, gen_request("far too many words for it"), timeout=10)
            assert info.value.context_length == 5
            assert info.value.prompt_tokens >= 5
            assert len(engine.requests) == 1
            assert engine.tokens_produced == 0
        finally:
            await engine.aclose()

    asyncio.run(main())


def test_request_deadline_raises_request_timeout() -> None:
    async def main() -> None:
        engine = FakeEngine("fake", script=lambda _: " ".join(["word"] * 200),
                            token_delay=0.02)
        try:
            opened = await open_stream(engine, gen_request(), timeout=0.2)
            with pytest.raises(RequestTimeoutError) as info:
                await drain(opened.events)
            assert "0.2 s" in info.value.message
            stopped_at = engine.tokens_produced
            assert 0 < stopped_at < 200
            await asyncio.sleep(0.1)
            assert engine.tokens_produced <= stopped_at + 1, "generation was cancelled"
        finally:
            await engine.aclose()

    asyncio.run(main())


def test_request_deadline_through_keepalive_reaches_the_consumer() -> None:
    async def main() -> list[TextDelta | Finished | KeepAlive]:
        engine = FakeEngine("fake", script=lambda _: " ".join(["word"] * 200),
                            token_delay=0.02)
        seen: list[TextDelta | Finished | KeepAlive] = []
        try:
            opened = await open_stream(engine, gen_request(), timeout=0.2)
            with pytest.raises(RequestTimeoutError):
                async for event in with_keepalive(opened.events, interval=0.01):
                    seen.append(event)
        finally:
            await engine.aclose()
        return seen

    seen = asyncio.run(main())
    assert any(isinstance(e, TextDelta) for e in seen)
    assert not any(isinstance(e, Finished) for e in seen)


# --- open_stream with engines that break the contract ----------------------------------------


class ScriptedEngine:
    """Yields the given events, optionally after a pause; records whether it was closed."""

    model_id = "scripted"

    def __init__(self, events: Sequence[Event], delay: float = 0.0) -> None:
        self.events = events
        self.delay = delay
        self.closed = False

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Event]:
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            for event in self.events:
                yield event
        finally:
            self.closed = True


def test_deadline_applies_before_the_start() -> None:
    engine = ScriptedEngine([Started(3), FINISHED], delay=30)
    with pytest.raises(RequestTimeoutError):
        asyncio.run(asyncio.wait_for(open_stream(engine, gen_request(), timeout=0.05), 5))
    assert engine.closed


@pytest.mark.parametrize("events", [[], [TextDelta("x"), FINISHED], [FINISHED]])
def test_a_stream_that_does_not_start_is_an_engine_error(events: list[Event]) -> None:
    engine = ScriptedEngine(events)
    with pytest.raises(EngineError, match="before it started"):
        asyncio.run(open_stream(engine, gen_request(), timeout=10))
    assert engine.closed


def test_a_second_start_is_an_engine_error() -> None:
    engine = ScriptedEngine([Started(3), TextDelta("a"), Started(3), FINISHED])

    async def main() -> None:
        opened = await open_stream(engine, gen_request(), timeout=10)
        with pytest.raises(EngineError, match="twice"):
            await drain(opened.events)

    asyncio.run(main())


def test_drain_without_finished_is_an_engine_error() -> None:
    engine = ScriptedEngine([Started(3), TextDelta("a")])

    async def main() -> None:
        opened = await open_stream(engine, gen_request(), timeout=10)
        with pytest.raises(EngineError, match="without finishing"):
            await drain(opened.events)

    asyncio.run(main())


def test_drain_stops_at_finished() -> None:
    engine = ScriptedEngine([Started(3), TextDelta("a"), TextDelta("b"), FINISHED,
                             TextDelta("ignored")])

    async def main() -> tuple[list[TextDelta], Finished]:
        opened = await open_stream(engine, gen_request(), timeout=10)
        return await drain(opened.events)

    assert asyncio.run(main()) == ([TextDelta("a"), TextDelta("b")], FINISHED)


def test_keepalive_closes_the_source_when_the_consumer_task_is_cancelled() -> None:
    # A client disconnect cancels the task that is waiting on the next event.
    source = Source([(0.0, TextDelta("a")), (30.0, TextDelta("never")), (0.0, FINISHED)])

    async def consume() -> None:
        async for _ in with_keepalive(source.events(), interval=0.02):
            pass

    async def main() -> None:
        task = asyncio.create_task(consume())
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(main(), 5))
    assert source.closed
    assert source.sent == 1


# --- closing an opened stream early -----------------------------------------------------------


def test_closing_the_opened_stream_closes_the_engine_stream_at_once() -> None:
    engine = ScriptedEngine([Started(3), TextDelta("a"), TextDelta("b"), FINISHED])

    async def main() -> None:
        opened = await open_stream(engine, gen_request(), timeout=10)
        stream = with_keepalive(opened.events, interval=10)
        assert await anext(stream) == TextDelta("a")
        await stream.aclose()
        # Not left to the garbage collector's finalizer on some later loop turn.
        assert engine.closed

    asyncio.run(main())


def test_closing_the_opened_stream_stops_generation() -> None:
    async def main() -> None:
        engine = FakeEngine("fake", script=lambda _: " ".join(["word"] * 200),
                            token_delay=0.01)
        try:
            opened = await open_stream(engine, gen_request(), timeout=10)
            stream = with_keepalive(opened.events, interval=10)
            assert isinstance(await anext(stream), TextDelta)
            await stream.aclose()
            stopped_at = engine.tokens_produced
            await asyncio.sleep(0.15)
            assert engine.tokens_produced <= stopped_at + 1
            assert engine.tokens_produced < 200
        finally:
            await engine.aclose()

    asyncio.run(main())


def test_finished_logs_one_timing_line(caplog: pytest.LogCaptureFixture) -> None:
    engine = ScriptedEngine([Started(3), TextDelta("a"), TextDelta("b"),
                             Finished("stop", Usage(3, 2, 1))])

    async def main() -> None:
        opened = await open_stream(engine, gen_request(), timeout=10)
        await drain(opened.events)

    with caplog.at_level(logging.INFO, logger="mlxjan.server.events"):
        asyncio.run(main())
    lines = [r.getMessage() for r in caplog.records if r.name == "mlxjan.server.events"]
    assert len(lines) == 1
    assert lines[0].startswith("fake: prompt 3 tokens (1 cached), 2 generated (stop)")


def test_timing_line_reports_counts_and_times(
        caplog: pytest.LogCaptureFixture) -> None:
    engine = ScriptedEngine([Started(3), Finished("length", Usage(3, 0))])

    async def main() -> None:
        opened = await open_stream(engine, gen_request(), timeout=10)
        await drain(opened.events)

    with caplog.at_level(logging.INFO, logger="mlxjan.server.events"):
        asyncio.run(main())
    (line,) = [r.getMessage() for r in caplog.records if r.name == "mlxjan.server.events"]
    assert "prompt 3 tokens (0 cached), 0 generated (length)" in line
    assert "first output after" in line and "done after" in line
