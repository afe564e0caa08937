"""A dedicated thread that makes every call into one model library.

MLX streams are thread-local and llama.cpp contexts are not thread-safe, so each engine owns
one thread that loads its model and runs every job; asyncio talks to it through futures and
queues fed with `loop.call_soon_threadsafe`. Jobs run one at a time, in order.

Streamed events leave the thread through an Outbox: held while a job or a background step
runs, then handed over together (a batch flushes before each decode too), so a step of four
answers wakes the event loop once, not four times: each wake-up is a syscall on the engine
thread, after which the woken loop usually holds the GIL while the engine thread waits.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import TypeVar

from mlxjan.errors import EngineError, MlxjanError
from mlxjan.types import Event, Finished, ReasoningDelta, Started, TextDelta, ToolCallDelta

log = logging.getLogger(__name__)

T = TypeVar("T")
Emit = Callable[[Event], None]
Producer = Callable[[Emit, threading.Event], None]


@dataclass(frozen=True)
class _Failed:
    error: BaseException


_END = object()
_STOP = object()


Item = Event | _Failed | object


class Outbox:
    """Events on their way from the engine thread to their streams' event loops, held until
    `flush` hands them over together: one wake-up per loop per flush. Engine thread only."""

    def __init__(self) -> None:
        self._held: list[tuple[Sink, Item]] = []

    def put(self, sink: Sink, item: Item) -> None:
        self._held.append((sink, item))

    def flush(self) -> None:
        if not self._held:
            return
        held, self._held = self._held, []
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Sink, Item]]] = {}
        for sink, item in held:
            by_loop.setdefault(sink.loop, []).append((sink, item))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # the loop closed under late events (server shutdown)
                for sink, _ in items:
                    sink.cancelled.set()


def _deliver(items: list[tuple[Sink, Item]]) -> None:
    for sink, item in items:
        sink.events.put_nowait(item)


class Sink:
    """Where an engine-thread producer sends one stream's events, through the thread's
    outbox; the consumer side only sets `cancelled`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, events: asyncio.Queue[Item],
                 outbox: Outbox) -> None:
        self.loop = loop
        self.events = events
        self._outbox = outbox
        self.cancelled = threading.Event()  # set when the consumer has gone
        self.closed = False

    def _put(self, item: Item) -> None:
        self._outbox.put(self, item)

    def emit(self, event: Event) -> None:
        self._put(event)

    def fail(self, error: BaseException) -> None:
        """End the stream with an error: typed ones as they are, others logged and wrapped."""
        if not isinstance(error, MlxjanError):
            # A bug or library failure inside the engine: log it whole, report it typed.
            log.error("engine job failed", exc_info=error)
            error = EngineError(f"the engine failed: {type(error).__name__}: {error}")
        self._put(_Failed(error))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._put(_END)


def prepared(sink: Sink, prepare: Callable[[], T]) -> T | None:
    """`prepare()` (check and tokenize a request, build its constraint), or None once its
    error has ended the sink's stream: an invalid request fails before it joins a batch."""
    try:
        return prepare()
    except Exception as exc:
        sink.fail(exc)
        sink.close()
        return None


class EngineThread:
    def __init__(self, name: str, background: Callable[[], bool] | None = None) -> None:
        """`background` is called between jobs while it returns True (work in progress, e.g.
        a decode step of a batch); every job queued meanwhile runs before the next call, so
        requests that arrive together start in the same step."""
        self._jobs: queue.SimpleQueue[Callable[[], None] | object] = queue.SimpleQueue()
        self._background = background
        self.outbox = Outbox()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        busy = False
        while True:
            for job in self._queued(wait=not busy):
                if job is _STOP:
                    self.outbox.flush()
                    return
                if callable(job):
                    job()
            self.outbox.flush()
            busy = self._background is not None and self._background()
            self.outbox.flush()

    def _queued(self, wait: bool) -> list[Callable[[], None] | object]:
        """Every job queued now (after waiting for one, with `wait`)."""
        jobs = [self._jobs.get()] if wait else []
        while True:
            try:
                jobs.append(self._jobs.get_nowait())
            except queue.Empty:
                return jobs

    async def call(self, fn: Callable[[], T]) -> T:
        """Run fn on the engine thread and return its result (or raise its exception)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(result: T | None, error: BaseException | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)  # type: ignore[arg-type]

        def job() -> None:
            try:
                result = fn()
            except BaseException as exc:  # handed to the awaiting coroutine, not swallowed
                loop.call_soon_threadsafe(settle, None, exc)
            else:
                loop.call_soon_threadsafe(settle, result, None)

        self._jobs.put(job)
        return await future

    def stream(self, produce: Producer) -> AsyncGenerator[Event, None]:
        """Run `produce(emit, cancelled)` on the thread and yield what it emits.

        Closing this generator early (the client left) sets `cancelled`, which the producer
        checks between steps; a job still queued then never starts.
        """
        def start(sink: Sink) -> None:
            def emit(event: Event) -> None:  # a producer that runs a while: each event now
                sink.emit(event)
                self.outbox.flush()

            try:
                produce(emit, sink.cancelled)
            except Exception as exc:
                sink.fail(exc)
            finally:
                sink.close()

        return self.open_stream(start)

    async def open_stream(self, start: Callable[[Sink], None]) -> AsyncGenerator[Event, None]:
        """Call `start(sink)` on the thread; yield what is emitted into the sink until it is
        closed. The sink may outlive `start` (a batch keeps it until the answer is done)."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Item] = asyncio.Queue()
        sink = Sink(loop, events, self.outbox)

        def job() -> None:
            if sink.cancelled.is_set():
                sink.close()
                return
            start(sink)

        self._jobs.put(job)
        try:
            while True:
                item = await events.get()
                if item is _END:
                    return
                if isinstance(item, _Failed):
                    raise item.error
                assert isinstance(item, (Started, ReasoningDelta, TextDelta, ToolCallDelta,
                                         Finished))
                yield item
        finally:
            sink.cancelled.set()

    def close(self, timeout: float = 10.0) -> None:
        self._jobs.put(_STOP)
        self._thread.join(timeout)
