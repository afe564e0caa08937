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


class EngineThread:
    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            assert callable(job)
            job()

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

    async def stream(self, produce: Producer) -> AsyncGenerator[Event, None]:
        """Run `produce(emit, cancelled)` on the thread and yield what it emits.

        Closing this generator early (the client left) sets `cancelled`, which the producer
        checks between steps; a job still queued then never starts.
        """
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event | _Failed | object] = asyncio.Queue()
        cancelled = threading.Event()

        def put(item: Event | _Failed | object) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, item)
            except RuntimeError:  # the loop closed under a late event (server shutdown)
                cancelled.set()

        def job() -> None:
            if cancelled.is_set():
                put(_END)
                return
            try:
                produce(put, cancelled)
            except MlxjanError as exc:
                put(_Failed(exc))
            except Exception as exc:
                # A bug or library failure inside the engine: log it whole, report it typed.
                log.exception("engine job failed")
                put(_Failed(EngineError(f"the engine failed: {type(exc).__name__}: {exc}")))
            finally:
                put(_END)

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
            cancelled.set()

    def close(self, timeout: float = 10.0) -> None:
        self._jobs.put(_STOP)
        self._thread.join(timeout)
