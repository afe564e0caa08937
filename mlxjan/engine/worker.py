"""A model's worker process: `python -m mlxjan.engine.worker --fd N`.

Spawned by the supervisor (engine/supervisor.py), never forked. It loads one model into its
engine (which owns the engine thread, the batch and the prompt cache), says Ready or
LoadFailed, then serves the connection: each Generate runs as a task that streams the
engine's events back, each Cancel closes that stream (the batch drops the answer at its next
step). It exits when told to (Shutdown, after persisting the prompt cache) and as soon as the
API process is gone: the connection reads end-of-file (and, on Linux, the kernel sends
SIGKILL on the parent's death too, for a worker stuck in native code).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Coroutine, Sequence
from multiprocessing.connection import Connection
from typing import Any

from mlxjan.engine.base import Embedder, Engine, EngineStatus
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
    WireError,
)
from mlxjan.errors import EngineError, MlxjanError, WrongModelKindError
from mlxjan.types import EmbeddingRequest, GenerationRequest

log = logging.getLogger("mlxjan.engine.worker")  # not __name__: it runs as __main__
# Before its connection serves (and after it closes), a worker logs to stderr.
HEALTH_INTERVAL_S = 0.25  # how often the engine's record is looked at for changes
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[worker %(process)d]: %(message)s"


def build_engine(spec: EngineSpec) -> Engine:
    """The engine the spec names; imports its model library (in the worker only)."""
    manifest = spec.manifest
    if spec.kind == "fake":
        from mlxjan.testing.fake_engine import FakeEngine

        return FakeEngine(manifest.id, context_length=spec.context_length,
                          token_delay=spec.fake_token_delay, kind=manifest.kind,
                          matryoshka=manifest.matryoshka)
    if manifest.kind == "embedding":
        return _embedding_engine(spec)
    if spec.kind == "mlx":
        from mlxjan.engine.mlx.converted import mlx_model_dir
        from mlxjan.engine.mlx.engine import MlxEngine
        from mlxjan.engine.selfcheck import Remembered
        from mlxjan.models.store import ModelStore

        return MlxEngine(
            manifest.id, lambda: mlx_model_dir(ModelStore(spec.data_dir), manifest),
            chat_template=manifest.chat_template, context_length=spec.context_length,
            tool_grammar=spec.tool_grammar, prompt_cache_bytes=spec.prompt_cache_bytes,
            max_batch=spec.max_batch, disk_cache=spec.disk_cache,
            self_checks=Remembered(spec.self_checks_dir), model_key=manifest.sha256)
    from mlxjan.engine.llamacpp.engine import LlamaCppEngine
    from mlxjan.engine.llamacpp.kernels import KernelCheck

    return LlamaCppEngine(
        manifest.id, spec.weights, chat_template=manifest.chat_template,
        context_length=spec.context_length, threads=spec.threads,
        tool_grammar=spec.tool_grammar, prompt_cache_bytes=spec.prompt_cache_bytes,
        disk_cache=spec.disk_cache, max_batch=spec.max_batch,
        kernels=KernelCheck(spec.self_checks_dir), model_key=manifest.sha256,
        flash_attention=spec.flash_attention)


def _embedding_engine(spec: EngineSpec) -> Engine:
    """Embeddings run on llama.cpp, for a GGUF model on either engine (the manager refuses
    MLX-format embedding models before a worker starts)."""
    from mlxjan.engine.llamacpp.embed import LlamaCppEmbeddingEngine
    from mlxjan.engine.llamacpp.kernels import KernelCheck

    manifest = spec.manifest
    return LlamaCppEmbeddingEngine(
        manifest.id, spec.weights, context_length=spec.context_length, threads=spec.threads,
        kernels=KernelCheck(spec.self_checks_dir, embedding=True), model_key=manifest.sha256,
        matryoshka=manifest.matryoshka)


class Outgoing:
    """Messages for the API process, written together once per event-loop iteration."""

    def __init__(self, conn: Connection, loop: asyncio.AbstractEventLoop) -> None:
        self._conn = conn
        self._loop = loop
        self._held: list[FromWorker] = []

    def send(self, message: FromWorker) -> None:
        if not self._held:
            self._loop.call_soon(self.flush)
        self._held.append(message)

    def flush(self) -> None:
        if self._held:
            held, self._held = self._held, []
            try:
                self._conn.send(held)
            except OSError:  # the API process is gone
                os._exit(0)


class Served:
    """The requests one worker is running: a task per stream or token count."""

    def __init__(self, engine: Engine, out: Outgoing) -> None:
        self._engine = engine
        self._out = out
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self.stopping = asyncio.Event()
        self._reported: EngineStatus | None = None

    def report_health(self) -> None:
        """Send the engine's record if it changed since the last one sent."""
        health = self._engine.health()
        if health != self._reported:
            self._reported = health
            self._out.send(HealthReport(health))

    async def report_changes(self) -> None:
        """The engine's record as it changes: an answer cancelled by its client leaves the
        batch at its next step, after its stream has ended, and the status must show that
        too (a stop button waits on it)."""
        while not self.stopping.is_set():
            await asyncio.sleep(HEALTH_INTERVAL_S)
            self.report_health()

    def handle(self, message: ToWorker) -> None:
        if isinstance(message, Generate):
            self._run(message.id, self._stream(message.id, message.request))
        elif isinstance(message, CountTokens):
            self._run(message.id, self._count(message.id, message.request))
        elif isinstance(message, Embed):
            self._run(message.id, self._embed(message.id, message.request))
        elif isinstance(message, Cancel):
            task = self._tasks.get(message.id)
            if task is not None:
                task.cancel()
        elif isinstance(message, Shutdown):
            self.stopping.set()

    def _run(self, request_id: int, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks[request_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(request_id, None))

    async def _stream(self, request_id: int, request: GenerationRequest) -> None:
        try:
            async for event in self._engine.stream(request):
                self._out.send(StreamEvent(request_id, event))
            self._out.send(StreamEnded(request_id))
        except Exception as exc:
            self._out.send(Failed(request_id, WireError.of(_typed(exc))))
        finally:
            self.report_health()

    async def _count(self, request_id: int, request: GenerationRequest) -> None:
        try:
            self._out.send(Counted(request_id, await self._engine.count_tokens(request)))
        except Exception as exc:
            self._out.send(Failed(request_id, WireError.of(_typed(exc))))

    async def _embed(self, request_id: int, request: EmbeddingRequest) -> None:
        engine = self._engine
        try:
            if not (isinstance(engine, Embedder) and engine.kind == "embedding"):
                raise WrongModelKindError(engine.model_id, "chat")
            self._out.send(Embedded(request_id, await engine.embed(request)))
        except Exception as exc:
            self._out.send(Failed(request_id, WireError.of(_typed(exc))))
        finally:
            self.report_health()


class ToServer(logging.Handler):
    """Sends the worker's log records to the API process (from any thread), which logs
    them as its own; stderr keeps them too until the event loop runs."""

    def __init__(self, out: Outgoing, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._out = out
        self._loop = loop
        self._formatter = logging.Formatter("%(message)s")

    def emit(self, record: logging.LogRecord) -> None:
        line = LogLine(record.name, record.levelno, self._formatter.format(record))
        with contextlib.suppress(RuntimeError):  # the loop has closed: the worker is exiting
            self._loop.call_soon_threadsafe(self._out.send, line)


def _typed(exc: Exception) -> MlxjanError:
    if isinstance(exc, MlxjanError):
        return exc
    log.error("request failed in the worker", exc_info=exc)
    return EngineError(f"the engine failed: {type(exc).__name__}: {exc}")


def _read(conn: Connection, loop: asyncio.AbstractEventLoop, served: Served) -> None:
    """The reader thread: hands each message list to the loop; end-of-file means the API
    process is gone, and then nothing is worth finishing."""
    while True:
        try:
            messages: Sequence[ToWorker] = conn.recv()
        except (EOFError, OSError):
            os._exit(0)
        for message in messages:
            loop.call_soon_threadsafe(served.handle, message)


async def serve(conn: Connection, spec: EngineSpec) -> int:
    loop = asyncio.get_running_loop()
    out = Outgoing(conn, loop)
    root = logging.getLogger()
    root.handlers = [ToServer(out, loop)]
    engine = build_engine(spec)
    served = Served(engine, out)
    # Reading starts before the load, which can take minutes (a GGUF converted for MLX):
    # a server that goes meanwhile is noticed at once.
    threading.Thread(target=_read, args=(conn, loop, served), name="worker-reader",
                     daemon=True).start()
    try:
        await engine.load()
    except Exception as exc:
        out.send(LoadFailed(WireError.of(_load_error(spec, exc))))
        out.flush()
        return 1
    log.info("%s loaded (%s engine)", spec.manifest.id, spec.kind)
    out.send(Ready(os.getpid(), engine.health()))
    reporting = asyncio.ensure_future(served.report_changes())
    await served.stopping.wait()
    reporting.cancel()
    await engine.aclose()
    out.flush()
    return 0


def _load_error(spec: EngineSpec, exc: Exception) -> MlxjanError:
    if isinstance(exc, MlxjanError):
        return exc
    log.error("loading %s failed", spec.manifest.id, exc_info=exc)
    return EngineError(f"failed to load model '{spec.manifest.id}': "
                       f"{type(exc).__name__}: {exc}")


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when the API process dies, even mid-decode."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlxjan.engine.worker")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    args = parser.parse_args(argv)
    _die_with_parent()
    if os.getppid() != args.parent:  # the parent died before prctl took effect
        return 0
    # Ctrl-C in a terminal reaches the whole process group: the server decides when the
    # worker stops (it drains, then sends Shutdown).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = Connection(args.fd)
    first = conn.recv()
    hello = first[0] if isinstance(first, list) and first else first
    if not (isinstance(hello, Hello) and hello.version == PROTOCOL_VERSION):
        found = getattr(hello, "version", type(hello).__name__)
        conn.send([LoadFailed(WireError.of(EngineError(
            f"worker protocol mismatch: expected version {PROTOCOL_VERSION}, got {found}")))])
        return 2
    logging.basicConfig(level=hello.spec.log_level.upper(), format=LOG_FORMAT,
                        stream=sys.stderr, force=True)
    return asyncio.run(serve(conn, hello.spec))


if __name__ == "__main__":
    sys.exit(main())
