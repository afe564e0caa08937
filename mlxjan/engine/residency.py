"""Which models stay loaded: a memory budget, least recently used first out, and keep-alive.

Every request holds a `Lease` on its model from before the model loads until its answer
ends. A model with leases is never unloaded for room or idleness. A model that must load
first makes room: while it would not fit (too many models resident, or their memory plus
its estimate over the budget), the least recently used idle model that is not pinned is
unloaded. When every model that could go is busy, the load waits for one to become idle (up
to `wait_s`) or is refused at once (503 with Retry-After), per `when_full`. One lock orders
the loads, so two of them never count the same free memory.

After its last lease ends a model stays loaded for its keep-alive (the latest request's, or
the service default): 0 unloads it at once, None keeps it until it is unloaded by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

from mlxjan.engine.base import BudgetStatus, Engine, ResidencyStatus
from mlxjan.errors import ModelsBusyError, ModelTooLargeError
from mlxjan.keep_alive import describe
from mlxjan.machine import process_rss

log = logging.getLogger(__name__)
WhenFull = Literal["wait", "refuse"]


@dataclass(eq=False)
class Resident:
    """One model the server has been asked for, loaded or not."""

    model_id: str
    engine: Engine
    estimated: int
    pinned: bool = False
    keep_alive: float | None = None
    leases: int = 0
    granted: bool = False  # room was made for it; it counts against the budget from then
    unloading: bool = False
    last_used: float = 0.0  # monotonic; orders eviction
    last_used_at: float | None = None  # the same moment in Unix time, for status
    expires_at: float | None = None
    _timer: asyncio.TimerHandle | None = field(default=None, repr=False)

    def is_loaded(self) -> bool:
        """Loaded or loading: it holds (or is about to hold) its memory."""
        status = self.engine.health()
        if status.worker is None:
            return status.loaded
        return status.worker.state in ("starting", "ready")

    def measured(self) -> int | None:
        worker = self.engine.health().worker
        return process_rss(worker.pid) if worker is not None and worker.pid else None

    def holds(self) -> int:
        """What it counts against the budget: the estimate, or more if it has grown."""
        return max(self.estimated, self.measured() or 0)

    def counts(self) -> bool:
        return self.is_loaded() or (self.granted and self.leases > 0)

    def cancel_expiry(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.expires_at = None


class Lease:
    """A request's hold on its model; `release` is idempotent, and safe from any thread (a
    stream's finalizer may run it from wherever the garbage collector does)."""

    def __init__(self, residency: Residency, resident: Resident) -> None:
        self._residency: Residency | None = residency
        self.resident = resident
        self._loop = asyncio.get_running_loop()

    @property
    def engine(self) -> Engine:
        return self.resident.engine

    def release(self) -> None:
        residency, self._residency = self._residency, None
        if residency is None:
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            residency.release(self.resident)
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(residency.release, self.resident)

    async def __aenter__(self) -> Engine:
        return self.engine

    async def __aexit__(self, kind: type[BaseException] | None, value: BaseException | None,
                        traceback: TracebackType | None) -> None:
        self.release()


class Residency:
    def __init__(self, budget: int, max_models: int, when_full: WhenFull, wait_s: float
                 ) -> None:
        self.budget = budget
        self.max_models = max_models
        self.when_full = when_full
        self.wait_s = wait_s
        self.residents: dict[str, Resident] = {}
        self._room = asyncio.Lock()
        self._changed = asyncio.Event()
        self._unloads: set[asyncio.Task[None]] = set()

    async def lease(self, resident: Resident, keep_alive: float | None) -> Lease:
        """Hold `resident` for a request, making room for it first if it must load."""
        resident.leases += 1
        resident.cancel_expiry()
        try:
            if resident.unloading or not resident.is_loaded():
                await self._make_room(resident)
        except BaseException:
            self.release(resident)
            raise
        resident.keep_alive = keep_alive
        return Lease(self, resident)

    def release(self, resident: Resident) -> None:
        resident.leases -= 1
        resident.last_used, resident.last_used_at = time.monotonic(), time.time()
        if resident.leases == 0:
            self._arm_expiry(resident)
        self._notify()

    async def unload(self, resident: Resident, why: str) -> None:
        resident.cancel_expiry()
        resident.unloading = True
        log.info("%s: unloading (%s)", resident.model_id, why)
        try:
            await resident.engine.unload()
        finally:
            resident.unloading = resident.granted = False
            self._notify()

    def status(self, resident: Resident) -> ResidencyStatus:
        return ResidencyStatus(
            estimated_bytes=resident.estimated,
            measured_bytes=resident.measured() if resident.is_loaded() else None,
            keep_alive_s=resident.keep_alive, expires_at=resident.expires_at,
            last_used_at=resident.last_used_at, pinned=resident.pinned,
            requests=resident.leases)

    def budget_status(self) -> BudgetStatus:
        counted = [r for r in self.residents.values() if r.counts()]
        return BudgetStatus(bytes=self.budget, used_bytes=sum(r.holds() for r in counted),
                            max_models=self.max_models, loaded_models=len(counted),
                            when_full=self.when_full)

    async def aclose(self) -> None:
        for resident in self.residents.values():
            resident.cancel_expiry()
        for task in list(self._unloads):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- making room -------------------------------------------------------------------------

    async def _make_room(self, resident: Resident) -> None:
        if resident.estimated > self.budget:
            raise ModelTooLargeError(resident.model_id, resident.estimated, self.budget)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        async with self._room:
            while not self._fits(resident):
                victim = self._least_recently_used_idle(resident)
                if victim is not None:
                    await self.unload(victim, f"to make room for {resident.model_id}")
                    continue
                remaining = deadline - loop.time()
                if self.when_full == "refuse" or remaining <= 0:
                    raise ModelsBusyError(
                        f"Model '{resident.model_id}' cannot load now: the models loaded are "
                        "all answering requests and no memory is free for it. Retry shortly.")
                changed = self._changed
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), remaining)
            resident.granted = True

    def _others(self, resident: Resident) -> list[Resident]:
        return [r for r in self.residents.values() if r is not resident and r.counts()]

    def _fits(self, resident: Resident) -> bool:
        others = self._others(resident)
        used = sum(r.holds() for r in others)
        return len(others) < self.max_models and used + resident.estimated <= self.budget

    def _least_recently_used_idle(self, resident: Resident) -> Resident | None:
        idle = [r for r in self._others(resident) if r.leases == 0 and not r.pinned]
        return min(idle, key=lambda r: r.last_used, default=None)

    def _notify(self) -> None:
        """Wake every load waiting for room (each looks again)."""
        self._changed.set()
        self._changed = asyncio.Event()

    # --- idle unload -------------------------------------------------------------------------

    def _arm_expiry(self, resident: Resident) -> None:
        resident.cancel_expiry()
        if resident.pinned or resident.keep_alive is None:
            return
        resident.expires_at = time.time() + resident.keep_alive
        resident._timer = asyncio.get_running_loop().call_later(
            resident.keep_alive, self._expire, resident)

    def _expire(self, resident: Resident) -> None:
        resident._timer, resident.expires_at = None, None
        if resident.leases or resident.unloading or not resident.is_loaded():
            return
        task = asyncio.create_task(self.unload(
            resident, f"idle for its keep-alive of {describe(resident.keep_alive)}"))
        self._unloads.add(task)
        task.add_done_callback(self._unloads.discard)
