"""One worker process per loaded model, started and watched from the API process.

`WorkerEngine` is the Engine serving code talks to; the model itself lives in a worker
process (engine/worker.py) that it spawns on the first request and talks to over a socket
pair (engine/protocol.py). The API process never imports llama.cpp or MLX, so a native crash
costs one worker: its in-flight requests end with a typed error (`WorkerCrashedError`), its
exit cause shows in the status, and the next request starts a new worker, after a backoff
that grows with each crash in the window. `CRASHES_TO_FAIL` crashes within `CRASH_WINDOW_S`
mark the model failed: requests then get `ModelFailedError` naming the cause until it is
loaded again by hand (`load()`; requests start workers through `_running`). Unloading ends
the worker, so its memory returns.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from typing import Any, Generic, TypeVar

from mlxjan.engine.base import EngineStatus, WorkerState, WorkerStatus
from mlxjan.engine.protocol import (
    PROTOCOL_VERSION,
    Cancel,
    Counted,
    CountTokens,
    Embed,
    Embedded,
    EngineSpec,
    Failed,
    FromWorker,
    Generate,
    HealthReport,
    Hello,
    LoadFailed,
    LogLine,
    Ready,
    Shutdown,
    StreamEnded,
    StreamEvent,
    ToWorker,
)
from mlxjan.errors import EngineError, MlxjanError, ModelFailedError, WorkerCrashedError
from mlxjan.types import EmbeddingRequest, Embeddings, Event, GenerationRequest, ModelKind

log = logging.getLogger(__name__)
T = TypeVar("T")
CRASHES_TO_FAIL = 3
CRASH_WINDOW_S = 300.0
BACKOFF_S = (0.0, 1.0, 4.0)  # before a restart, by crashes in the window so far
SHUTDOWN_GRACE_S = 15.0  # for a worker told to stop, before it is killed
DRAIN_S = 30.0  # for the requests in flight when a model is unloaded


def exit_cause(returncode: int) -> str:
    """An exit status in words: a signal by name (SIGSEGV: a native crash; SIGKILL: often
    the out-of-memory killer), else the status."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exited with status {returncode}"


class _Worker:
    """One running worker process and its connection; the reader thread turns what arrives
    into calls on the event loop, and its end into `on_exit(returncode)`."""

    def __init__(self, spec: EngineSpec, loop: asyncio.AbstractEventLoop,
                 on_messages: Callable[[_Worker, Sequence[FromWorker]], None],
                 on_exit: Callable[[_Worker, int], None]) -> None:
        # Set once the model is loaded (or with why it is not): every request that arrives
        # meanwhile waits on this one load.
        self.ready: asyncio.Future[None] = loop.create_future()
        ours, theirs = socket.socketpair()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlxjan.engine.worker", "--fd", str(theirs.fileno()),
             "--parent", str(os.getpid())],
            pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        theirs.close()
        self.pid = self.proc.pid
        self._conn = Connection(ours.detach())
        self.send([Hello(PROTOCOL_VERSION, spec)])
        self._reader = threading.Thread(
            target=self._read, args=(loop, on_messages, on_exit), daemon=True,
            name=f"worker-{spec.manifest.id}-{self.pid}")
        self._reader.start()

    def send(self, messages: list[ToWorker]) -> bool:
        """False when the worker is gone (its end is then reported by the reader)."""
        try:
            self._conn.send(messages)  # from the event loop's thread only
            return True
        except OSError:
            return False

    def _read(self, loop: asyncio.AbstractEventLoop,
              on_messages: Callable[[_Worker, Sequence[FromWorker]], None],
              on_exit: Callable[[_Worker, int], None]) -> None:
        while True:
            try:
                messages = self._conn.recv()
            except (EOFError, OSError):
                break
            if not _call_soon(loop, on_messages, self, messages):
                break
        returncode = self.proc.wait()
        self._conn.close()
        _call_soon(loop, on_exit, self, returncode)

    def settle_ready(self, error: MlxjanError | None) -> None:
        if not self.ready.done():
            if error is None:
                self.ready.set_result(None)
            else:
                self.ready.set_exception(error)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: object) -> bool:
    try:
        loop.call_soon_threadsafe(fn, *args)
        return True
    except RuntimeError:  # the loop has closed: the server is gone
        return False


@dataclass
class _Pending:
    """One stream in flight on `worker`: its events, then None (ended) or an error."""

    worker: _Worker
    events: asyncio.Queue[Event | MlxjanError | None] = field(default_factory=asyncio.Queue)


@dataclass
class _Call(Generic[T]):
    """One request with a single answer (a token count, embeddings) in flight on `worker`."""

    worker: _Worker
    answer: asyncio.Future[T]


class WorkerEngine:
    """The Engine for one model, served by its worker process."""

    def __init__(self, spec: EngineSpec) -> None:
        self.model_id = spec.manifest.id
        self.kind: ModelKind = spec.manifest.kind
        self._spec = spec
        self._worker: _Worker | None = None
        self._state: WorkerState = "stopped"
        self._pending: dict[int, _Pending] = {}
        self._calls: dict[int, _Call[Any]] = {}
        self._next_id = 0
        self._crashes: list[float] = []
        self._last_exit: str | None = None
        self._last_error: str | None = None
        self._load_error: MlxjanError | None = None
        self._engine_health: EngineStatus | None = None  # the worker's last report
        self._started_at: float | None = None
        self._lock = asyncio.Lock()

    # --- lifecycle -------------------------------------------------------------------------

    async def load(self) -> None:
        """Load by hand: start the worker if it is not running, clearing a failed state
        first (requests never call this)."""
        if self._state == "failed":
            self._crashes.clear()
            self._state = "crashed"
        await self._running()

    async def _running(self) -> _Worker:
        """The worker, once its model is loaded: started now if there is none."""
        async with self._lock:
            if self._state == "failed":
                raise ModelFailedError(self.model_id, self._last_error or "repeated crashes")
            worker = self._worker or await self._start()
        # Shielded: a client that leaves while the model loads does not cut the load short.
        await asyncio.shield(worker.ready)
        return worker

    async def _start(self) -> _Worker:
        recent = self._recent_crashes()
        if recent:
            await asyncio.sleep(BACKOFF_S[min(recent, len(BACKOFF_S)) - 1])
        self._state = "starting"
        self._started_at = time.time()
        worker = self._worker = _Worker(self._spec, asyncio.get_running_loop(),
                                        self._on_messages, self._on_exit)
        # Retrieved here, so a load that fails with nobody waiting is not logged as unseen.
        worker.ready.add_done_callback(lambda done: done.cancelled() or done.exception())
        log.info("%s: worker %d started", self.model_id, worker.pid)
        return worker

    async def unload(self) -> None:
        """Let the requests in flight finish (up to DRAIN_S), then end the worker. Requests
        that arrive meanwhile wait, and start a new worker once it has ended."""
        async with self._lock:
            worker = self._worker
            if worker is None:
                return
            deadline = time.monotonic() + DRAIN_S
            while (self._pending or self._calls) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            self._worker = None
            self._state = "stopped"
            self._engine_health = None
            worker.send([Shutdown()])
            try:
                await asyncio.wait_for(asyncio.to_thread(worker.proc.wait), SHUTDOWN_GRACE_S)
            except TimeoutError:
                log.warning("%s: worker %d did not stop; killing it", self.model_id, worker.pid)
                worker.kill()
                await asyncio.to_thread(worker.proc.wait)
            log.info("%s: worker %d stopped", self.model_id, worker.pid)

    async def aclose(self) -> None:
        await self.unload()

    def _recent_crashes(self) -> int:
        now = time.monotonic()
        self._crashes = [t for t in self._crashes if now - t < CRASH_WINDOW_S]
        return len(self._crashes)

    # --- what the worker says ----------------------------------------------------------------

    def _on_messages(self, worker: _Worker, messages: Sequence[FromWorker]) -> None:
        current = worker is self._worker
        for message in messages:
            if isinstance(message, StreamEvent):
                self._deliver(message.id, message.event)
            elif isinstance(message, StreamEnded):
                self._deliver(message.id, None)
            elif isinstance(message, Failed):
                self._settle(message.id, message.error.rebuild())
            elif isinstance(message, Counted):
                self._settle(message.id, message.tokens)
            elif isinstance(message, Embedded):
                self._settle(message.id, message.embeddings)
            elif isinstance(message, HealthReport) and current:
                self._engine_health = message.health
            elif isinstance(message, Ready):
                if current:
                    self._state, self._engine_health = "ready", message.health
                worker.settle_ready(None)
            elif isinstance(message, LogLine):
                logging.getLogger(message.logger).log(
                    message.level, "[worker %d] %s", worker.pid, message.text)
            elif isinstance(message, LoadFailed) and current:  # the worker exits next
                self._load_error = message.error.rebuild()
                self._last_error = self._load_error.message
                log.error("%s: %s", self.model_id, self._last_error)

    def _deliver(self, request_id: int, item: Event | MlxjanError | None) -> None:
        pending = self._pending.get(request_id)
        if pending is not None:
            pending.events.put_nowait(item)

    def _settle(self, request_id: int, result: object) -> None:
        call = self._calls.pop(request_id, None)
        if call is None:
            self._deliver(request_id, result if isinstance(result, MlxjanError) else None)
        elif not call.answer.done():
            if isinstance(result, MlxjanError):
                call.answer.set_exception(result)
            else:
                call.answer.set_result(result)

    def _on_exit(self, worker: _Worker, returncode: int) -> None:
        if worker is not self._worker:  # an unloaded worker's expected end
            self._fail_requests(worker, EngineError(
                f"Model '{self.model_id}' was unloaded before this request finished."))
            return
        self._worker = None
        self._engine_health = None
        cause = exit_cause(returncode)
        self._last_exit = cause
        self._crashes.append(time.monotonic())
        error: MlxjanError
        if self._load_error is not None:  # it said why before exiting
            error, self._load_error = self._load_error, None
        else:
            self._last_error = f"its worker process {cause}"
            error = WorkerCrashedError(self.model_id, cause)
            log.error("%s: worker %d %s", self.model_id, worker.pid, cause)
        self._state = "failed" if self._recent_crashes() >= CRASHES_TO_FAIL else "crashed"
        self._fail_requests(worker, error)

    def _fail_requests(self, worker: _Worker, error: MlxjanError) -> None:
        """End every request waiting for `worker` or in flight on it with `error`."""
        worker.settle_ready(error)
        for pending in self._pending.values():
            if pending.worker is worker:
                pending.events.put_nowait(error)
        for request_id, call in list(self._calls.items()):
            if call.worker is worker:
                del self._calls[request_id]
                if not call.answer.done():
                    call.answer.set_exception(error)

    # --- requests ----------------------------------------------------------------------------

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[Event, None]:
        worker = await self._running()
        request_id = self._new_id()
        pending = self._pending[request_id] = _Pending(worker)
        ended = False
        if not worker.send([Generate(request_id, request)]):
            self._pending.pop(request_id)
            raise WorkerCrashedError(self.model_id, "its connection closed")
        try:
            while True:
                item = await pending.events.get()
                if item is None:
                    ended = True
                    return
                if isinstance(item, MlxjanError):
                    ended = True
                    raise item
                yield item
        finally:
            self._pending.pop(request_id, None)
            if not ended:  # the client left: stop the answer in the worker
                worker.send([Cancel(request_id)])

    async def count_tokens(self, request: GenerationRequest) -> int:
        answer: int = await self._call(lambda request_id: CountTokens(request_id, request))
        return answer

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        answer: Embeddings = await self._call(lambda request_id: Embed(request_id, request))
        return answer

    async def _call(self, message: Callable[[int], ToWorker]) -> Any:
        """Send the request `message(id)` builds and wait for its one answer."""
        worker = await self._running()
        request_id = self._new_id()
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._calls[request_id] = _Call(worker, answer)
        if not worker.send([message(request_id)]):
            self._calls.pop(request_id, None)
            raise WorkerCrashedError(self.model_id, "its connection closed")
        return await answer

    def health(self) -> EngineStatus:
        """The worker's last report (batch, prompt cache), with the supervisor's view."""
        worker = self._worker
        spec = self._spec
        reported = self._engine_health or EngineStatus(
            engine=spec.kind, model=self.model_id, loaded=False,
            context_length=spec.context_length)
        return replace(reported, loaded=self._state == "ready", worker=WorkerStatus(
            state=self._state, pid=worker.pid if worker else None,
            started_at=self._started_at if worker else None,
            crashes_recent=self._recent_crashes(), last_exit=self._last_exit,
            last_error=self._last_error, requests_in_flight=len(self._pending)))
