"""Protocol-neutral handling of an engine's event stream, shared by every API.

`open_stream` starts generation and waits for the engine's Started event, so errors found
while preparing the prompt (unknown model, prompt too long) are raised before any HTTP
response begins. The rest of the stream is consumed under the request deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Protocol, TypeVar

from mlxjan.engine.base import Engine
from mlxjan.engine.manager import EngineManager
from mlxjan.engine.repeat_guard import RepeatGuard
from mlxjan.errors import EngineError, RequestTimeoutError
from mlxjan.types import (
    Delta,
    Event,
    Finished,
    Generated,
    GenerationRequest,
    Started,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class KeepAlive:
    """Nothing happened for a while: the caller sends a protocol keep-alive."""


@dataclass
class OpenedStream:
    started: Started
    events: AsyncIterator[Generated]


class Hold(Protocol):
    """Something a stream holds until it ends: its admission ticket, its model's lease."""

    def release(self) -> None: ...


async def open_on(manager: EngineManager, request: GenerationRequest,
                  keep_alive: float | None, timeout: float) -> OpenedStream:
    """Admit the request, hold its model (loaded first if need be), and start it there."""
    ticket = manager.admission.enter()
    try:
        lease = await manager.use(request.model, keep_alive)
    except BaseException:
        ticket.release()
        raise
    return await open_stream(lease.engine, request, timeout, holds=(lease, ticket))


async def open_stream(engine: Engine, request: GenerationRequest, timeout: float,
                      holds: tuple[Hold, ...] = ()) -> OpenedStream:
    """Start the request and wait until the engine has accepted the prompt; `holds` are
    released when the stream ends, however it ends."""
    began = time.perf_counter()
    # Every API gets the same answer-in-words fallback for repeated tool calls.
    events = _with_deadline(RepeatGuard(engine).stream(request), timeout)
    try:
        first = await anext(events, None)
        if not isinstance(first, Started):
            raise EngineError("the engine ended the stream before it started")
    except BaseException:
        await events.aclose()
        _release(holds)
        raise
    stream = _after_start(events, request.model, began, holds)
    # Also when the response never iterates the stream (the client left first).
    weakref.finalize(stream, _release, holds)
    return OpenedStream(first, stream)


def _release(holds: tuple[Hold, ...]) -> None:
    for hold in holds:
        hold.release()


async def drain(events: AsyncIterator[Generated]) -> tuple[list[Delta], Finished]:
    """Collect a whole stream: the non-streaming responses use the same events."""
    deltas: list[Delta] = []
    async for event in events:
        if isinstance(event, Finished):
            return deltas, event
        deltas.append(event)
    raise EngineError("the engine ended the stream without finishing")


async def with_keepalive(events: AsyncIterator[T], interval: float
                         ) -> AsyncGenerator[T | KeepAlive, None]:
    """Pass events through, adding a KeepAlive after each `interval` seconds of silence."""
    iterator = aiter(events)
    pending: asyncio.Future[T] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(iterator))
            done, _ = await asyncio.wait({pending}, timeout=interval)
            if not done:
                yield KeepAlive()
                continue
            finished_task, pending = pending, None
            try:
                event = finished_task.result()
            except StopAsyncIteration:
                return
            yield event
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending
        close = getattr(iterator, "aclose", None)
        if close is not None:
            await close()


async def _after_start(events: AsyncGenerator[Event, None], model: str, began: float,
                       holds: tuple[Hold, ...]) -> AsyncIterator[Generated]:
    first_token: float | None = None
    try:
        async for event in events:
            if isinstance(event, Started):
                raise EngineError("the engine started a stream twice")
            if first_token is None:
                first_token = time.perf_counter()
            if isinstance(event, Finished):
                _log_timings(model, event, began, first_token)
            yield event
    finally:
        # `async for` never closes what it iterates: close the engine's stream now (which
        # cancels its job), not whenever the garbage collector finalizes it.
        await events.aclose()
        _release(holds)


def _log_timings(model: str, finished: Finished, began: float, first_output: float) -> None:
    usage = finished.usage
    log.info("%s: prompt %d tokens (%d cached), %d generated (%s); first output after %.2f s, "
             "done after %.2f s", model, usage.prompt_tokens, usage.cached_tokens,
             usage.completion_tokens, finished.reason, first_output - began,
             time.perf_counter() - began)


async def _with_deadline(events: AsyncIterator[Event], seconds: float
                         ) -> AsyncGenerator[Event, None]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    iterator = aiter(events)
    try:
        while True:
            remaining = deadline - loop.time()
            try:
                event = await asyncio.wait_for(anext(iterator), max(remaining, 0.0))
            except StopAsyncIteration:
                return
            except asyncio.TimeoutError:
                raise RequestTimeoutError(
                    f"generation did not finish within the {seconds:g} s request timeout"
                ) from None
            yield event
    finally:
        close = getattr(iterator, "aclose", None)
        if close is not None:
            await close()
