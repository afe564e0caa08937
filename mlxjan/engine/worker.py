"""A dedicated thread that makes every call into one model library.

MLX streams are thread-local and llama.cpp contexts are not thread-safe, so each engine owns
one thread that loads its model and runs every job; asyncio talks to it through futures and
queues fed with `loop.call_soon_threadsafe`. Jobs run one at a time, in order.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import TypeVar

from mlxjan.engine.base import Event, Finished, Started, TextDelta, ToolCallDelta
from mlxjan.errors import EngineError, MlxjanError

log = logging.getLogger(__name__)

T = TypeVar("T")
Emit = Callable[[Event], None]
Producer = Callable[[Emit, threading.Event], None]


@dataclass(frozen=True)
class _Failed:
    error: BaseException


_END = object()
_STOP = object()


class Sink:
    """Where an engine-thread producer sends one stream's events; thread-safe."""

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 events: asyncio.Queue[Event | _Failed | object]) -> None:
        self._loop = loop
        self._events = events
        self.cancelled = threading.Event()  # set when the consumer has gone
        self.closed = False

    def _put(self, item: Event | _Failed | object) -> None:
        try:
            self._loop.call_soon_threadsafe(self._events.put_nowait, item)
        except RuntimeError:  # the loop closed under a late event (server shutdown)
            self.cancelled.set()

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


class EngineThread:
    def __init__(self, name: str, background: Callable[[], bool] | None = None) -> None:
        """`background` is called between jobs while it returns True (work in progress, e.g.
        a decode step of a batch); jobs queued meanwhile run between its calls."""
        self._jobs: queue.SimpleQueue[Callable[[], None] | object] = queue.SimpleQueue()
        self._background = background
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        busy = False
        while True:
            try:
                job = self._jobs.get_nowait() if busy else self._jobs.get()
            except queue.Empty:
                job = None
            if job is _STOP:
                return
            if callable(job):
                job()
            busy = self._background is not None and self._background()

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
            try:
                produce(sink.emit, sink.cancelled)
            except Exception as exc:
                sink.fail(exc)
            finally:
                sink.close()

        return self.open_stream(start)

    async def open_stream(self, start: Callable[[Sink], None]) -> AsyncGenerator[Event, None]:
        """Call `start(sink)` on the thread; yield what is emitted into the sink until it is
        closed. The sink may outlive `start` (a batch keeps it until the answer is done)."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event | _Failed | object] = asyncio.Queue()
        sink = Sink(loop, events)

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
                assert isinstance(item, (Started, TextDelta, ToolCallDelta, Finished))
                yield item
        finally:
            sink.cancelled.set()

    def close(self, timeout: float = 10.0) -> None:
        self._jobs.put(_STOP)
        self._thread.join(timeout)
