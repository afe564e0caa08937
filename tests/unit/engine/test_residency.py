"""The memory budget, least-recently-used eviction and keep-alive, over fake engines."""

from __future__ import annotations

import asyncio

import pytest

from mlxjan.engine.residency import Residency, Resident, WhenFull
from mlxjan.errors import ModelsBusyError, ModelTooLargeError
from mlxjan.testing.fake_engine import FakeEngine

MB = 1024**2


def _residency(budget: int = 250 * MB, max_models: int = 8, when_full: WhenFull = "refuse",
               wait_s: float = 5.0, **models: int) -> Residency:
    residency = Residency(budget, max_models, when_full, wait_s)
    for name, size in models.items():
        residency.residents[name] = Resident(name, FakeEngine(name, loaded=False), size * MB)
    return residency


def _loaded(residency: Residency) -> set[str]:
    return {name for name, r in residency.residents.items() if r.is_loaded()}


async def _use(residency: Residency, name: str, keep_alive: float | None = None) -> None:
    """One request's whole life: lease, load (as a first stream does), release."""
    resident = residency.residents[name]
    async with await residency.lease(resident, keep_alive) as engine:
        await engine.load()


def test_a_load_that_does_not_fit_unloads_the_least_recently_used_idle_model() -> None:
    async def main() -> None:
        residency = _residency(a=100, b=100, c=100)
        await _use(residency, "a")
        await _use(residency, "b")
        await _use(residency, "a")  # now b is the least recently used
        await _use(residency, "c")
        assert _loaded(residency) == {"a", "c"}
        assert residency.budget_status().used_bytes == 200 * MB
    asyncio.run(main())


def test_the_model_count_bounds_residency_too() -> None:
    async def main() -> None:
        residency = _residency(budget=10_000 * MB, max_models=2, a=1, b=1, c=1)
        for name in ("a", "b", "c"):
            await _use(residency, name)
        assert _loaded(residency) == {"b", "c"}
    asyncio.run(main())


def test_a_busy_model_is_never_unloaded_for_room() -> None:
    async def main() -> None:
        residency = _residency(a=100, b=100, c=100)
        busy = await residency.lease(residency.residents["a"], None)
        await busy.engine.load()
        await _use(residency, "b")
        await _use(residency, "c")  # a is older, but busy: b goes
        assert _loaded(residency) == {"a", "c"}
        busy.release()
    asyncio.run(main())


def test_when_every_model_is_busy_a_load_is_refused_with_a_typed_error() -> None:
    async def main() -> None:
        residency = _residency(a=100, b=100, c=100)
        held = [await residency.lease(residency.residents[n], None) for n in ("a", "b")]
        with pytest.raises(ModelsBusyError) as caught:
            await residency.lease(residency.residents["c"], None)
        assert caught.value.status == 503
        assert residency.residents["c"].leases == 0
        assert _loaded(residency) == set() and all(h.resident.leases == 1 for h in held)
    asyncio.run(main())


def test_when_every_model_is_busy_a_load_can_wait_for_one_to_become_idle() -> None:
    async def main() -> None:
        residency = _residency(when_full="wait", a=100, b=100, c=100)
        held = {n: await residency.lease(residency.residents[n], None) for n in ("a", "b")}
        for lease in held.values():
            await lease.engine.load()
        waiting = asyncio.ensure_future(_use(residency, "c"))
        await asyncio.sleep(0.1)
        assert not waiting.done() and _loaded(residency) == {"a", "b"}
        held["b"].release()
        await asyncio.wait_for(waiting, 5)
        assert _loaded(residency) == {"a", "c"}
    asyncio.run(main())


def test_a_wait_for_room_ends_with_the_typed_error_at_its_deadline() -> None:
    async def main() -> None:
        residency = _residency(when_full="wait", wait_s=0.2, a=200, b=100)
        await residency.lease(residency.residents["a"], None)
        with pytest.raises(ModelsBusyError):
            await asyncio.wait_for(_use(residency, "b"), 5)
    asyncio.run(main())


def test_a_model_larger_than_the_whole_budget_is_refused_with_both_figures() -> None:
    async def main() -> None:
        residency = _residency(budget=100 * MB, big=300)
        with pytest.raises(ModelTooLargeError) as caught:
            await _use(residency, "big")
        assert caught.value.status == 400
        assert (caught.value.needed, caught.value.budget) == (300 * MB, 100 * MB)
        assert "0.29 GiB" in caught.value.message and "0.10 GiB" in caught.value.message
    asyncio.run(main())


def test_keep_alive_unloads_an_idle_model_after_its_duration() -> None:
    async def main() -> None:
        residency = _residency(a=10)
        await _use(residency, "a", keep_alive=0.3)
        assert residency.residents["a"].expires_at is not None
        await asyncio.sleep(0.1)
        assert _loaded(residency) == {"a"}
        await asyncio.sleep(0.4)
        assert _loaded(residency) == set()
        assert residency.residents["a"].expires_at is None
    asyncio.run(main())


def test_keep_alive_zero_unloads_when_the_request_ends_and_none_keeps_it() -> None:
    async def main() -> None:
        residency = _residency(a=10, b=10)
        await _use(residency, "a", keep_alive=0)
        await _use(residency, "b", keep_alive=None)
        await asyncio.sleep(0.05)
        assert _loaded(residency) == {"b"}
        assert residency.residents["b"].expires_at is None
    asyncio.run(main())


def test_a_new_request_holds_off_the_idle_unload_and_restarts_its_clock() -> None:
    async def main() -> None:
        residency = _residency(a=10)
        await _use(residency, "a", keep_alive=0.3)
        await asyncio.sleep(0.2)
        lease = await residency.lease(residency.residents["a"], 0.3)
        await asyncio.sleep(0.3)
        assert _loaded(residency) == {"a"}  # busy: not unloaded at the first deadline
        lease.release()
        await asyncio.sleep(0.15)
        assert _loaded(residency) == {"a"}
        await asyncio.sleep(0.3)
        assert _loaded(residency) == set()
    asyncio.run(main())


def test_pinned_models_neither_expire_nor_make_room() -> None:
    async def main() -> None:
        residency = _residency(a=100, b=100, c=100)
        residency.residents["a"].pinned = True
        await _use(residency, "a", keep_alive=0)
        await _use(residency, "b")
        await _use(residency, "c")
        await asyncio.sleep(0.05)
        assert _loaded(residency) == {"a", "c"}
    asyncio.run(main())


def test_a_lease_released_from_another_thread_is_released_on_the_loop() -> None:
    async def main() -> None:
        residency = _residency(a=10)
        lease = await residency.lease(residency.residents["a"], 0)
        await lease.engine.load()
        await asyncio.to_thread(lease.release)  # as a finalizer on another thread would
        await asyncio.sleep(0.05)
        assert residency.residents["a"].leases == 0 and _loaded(residency) == set()
        lease.release()  # idempotent
        assert residency.residents["a"].leases == 0
    asyncio.run(main())
