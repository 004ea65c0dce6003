"""What the manager does with the parts of the store protocol that only the Redis stores use in earnest:
cleanup leases shared with other replicas, a store whose memory Redis bounds, the store's own pressure
reasons, and a cancellation the Redis client swallowed. The Redis suites check these against a real
Redis; here a memory store takes those parts (tests.support.LeasedStore), so that the mutation run,
which leaves servers out, checks the manager's side too."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import pytest

from faultmaven.config import Settings
from faultmaven.lifecycle.cleanup import LEASE_TTL_S
from faultmaven.observability.health import health_report
from faultmaven.session_management import SessionManager
from faultmaven.stores import BatchResult, MemoryStore
from faultmaven.stores.redis.store import RedisStore
from tests.support import FakeClock, LeasedStore, scheduled_runs, scheduled_until

SETTINGS = Settings(cleanup_enabled=False, cleanup_batch_size=2)


async def expired_sessions(manager: SessionManager, clock: FakeClock, count: int) -> None:
    for i in range(count):
        await manager.create_session(f"user-{i}")
    clock.advance(minutes=31)


async def test_a_scheduled_run_cleans_each_part_under_its_lease_and_renews_it_between_batches(
    clock: FakeClock,
) -> None:
    store = LeasedStore(parts=(0, 1))
    manager = SessionManager(store, settings=SETTINGS, clock=clock)
    await expired_sessions(manager, clock, 5)
    await scheduled_runs(manager, runs=1)
    assert manager.get_session_metrics()["sessions_cleaned_total"] == 5
    assert store.calls[:6] == [
        ("acquire", LEASE_TTL_S, 0),
        ("renew", "lease-0", LEASE_TTL_S),
        ("renew", "lease-0", LEASE_TTL_S),
        ("release", "lease-0"),
        ("acquire", LEASE_TTL_S, 1),
        ("release", "lease-1"),
    ]  # part 0 has all five (the memory store ignores parts): three batches of two; part 1 finds none
    await manager.close()


async def test_a_manual_run_takes_no_lease_unless_asked(clock: FakeClock) -> None:
    store = LeasedStore(parts=(0,), held_elsewhere={0})
    manager = SessionManager(store, settings=SETTINGS, clock=clock)
    await expired_sessions(manager, clock, 3)
    assert await manager.run_cleanup() == 3
    assert await manager.cleanup_inactive_sessions() == 0
    assert store.calls == []
    assert await manager.run_cleanup(leased=True) == 0
    assert store.calls == [("acquire", LEASE_TTL_S, 0)]
    await manager.close()


async def test_a_part_another_replica_holds_is_skipped_and_the_run_goes_on(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = LeasedStore(parts=(0, 1), held_elsewhere={0})
    manager = SessionManager(store, settings=SETTINGS, clock=clock)
    await expired_sessions(manager, clock, 3)
    await scheduled_runs(manager, runs=1)
    assert manager.get_session_metrics()["sessions_cleaned_total"] == 3  # by part 1's batches
    assert [c[0] for c in store.calls[:4]] == ["acquire", "acquire", "renew", "release"]
    assert manager.get_session_metrics()["cleanup_skipped_total"] == 0
    store.held_elsewhere = {0, 1}
    caplog.set_level(logging.INFO, "faultmaven")
    await scheduled_until(manager, lambda metrics: metrics["cleanup_skipped_total"] >= 1)
    assert "Session cleanup skipped: other replicas hold every cleanup lease" in caplog.messages
    await manager.close()


async def test_a_lost_lease_ends_the_part_after_the_batch_it_covered(clock: FakeClock) -> None:
    store = LeasedStore(parts=(0,), renewals=1)
    manager = SessionManager(store, settings=SETTINGS, clock=clock)
    await expired_sessions(manager, clock, 7)
    assert await manager.run_cleanup(leased=True) == 4  # two batches, then the lease is lost
    assert store.calls == [
        ("acquire", LEASE_TTL_S, 0),
        ("renew", "lease-0", LEASE_TTL_S),
        ("renew", "lease-0", LEASE_TTL_S),
        ("release", "lease-0"),
    ]
    assert await manager.run_cleanup() == 3  # the rest, by the next run
    await manager.close()


async def test_a_release_that_fails_leaves_the_lease_to_its_ttl_and_the_run_stands(clock: FakeClock) -> None:
    store = LeasedStore(parts=(0,), release_fails=True)
    manager = SessionManager(store, settings=SETTINGS, clock=clock)
    await expired_sessions(manager, clock, 2)
    await scheduled_runs(manager, runs=1)
    metrics = manager.get_session_metrics()
    assert metrics["sessions_cleaned_total"] == 2 and metrics["cleanup_errors_total"] == 0
    await manager.close()


class SwallowingStore(MemoryStore):
    """A first batch that completes although its task was cancelled meanwhile, as redis-py can make happen."""

    def __init__(self) -> None:
        super().__init__()
        self.batches = 0
        self.in_batch = asyncio.Event()

    async def remove_idle(self, *args: Any, **kwargs: Any) -> BatchResult:
        self.batches += 1
        if self.batches == 1:
            self.in_batch.set()
            with contextlib.suppress(asyncio.CancelledError):  # swallowed: the batch goes on
                await asyncio.sleep(3600)
        return await super().remove_idle(*args, **kwargs)


async def test_a_cancellation_the_store_swallowed_ends_the_run_at_the_next_batch_boundary(
    clock: FakeClock,
) -> None:
    store = SwallowingStore()
    manager = SessionManager(store, settings=SETTINGS, clock=clock)
    await expired_sessions(manager, clock, 6)
    run = asyncio.create_task(manager.run_cleanup())
    async with asyncio.timeout(10):
        await store.in_batch.wait()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert store.batches == 1  # the batch completed; the next one never started
    assert await manager.run_cleanup() == 4  # the first batch's two are gone
    await manager.close()


class RedisBoundStore(MemoryStore):
    """A store that SESSION_MAX_MEMORY_MB does not bound, with pressure reasons of its own (as Redis)."""

    budget_from_settings = False

    def memory_reasons(self) -> list[str]:
        return ["redis maxmemory nearly reached"]


async def test_health_takes_the_store_s_own_memory_bounds_and_reasons(clock: FakeClock) -> None:
    settings = Settings(cleanup_enabled=False, max_memory_mb=0.001)  # far below what one session takes
    bound = SessionManager(RedisBoundStore(), settings=settings, clock=clock)
    plain = SessionManager(MemoryStore(), settings=settings, clock=clock)
    for manager in (bound, plain):
        await manager.create_session("alice", {"blob": "x" * 2000})
        await manager.refresh_store_stats()
    assert health_report(bound)["services"]["session_manager"]["reasons"] == ["redis maxmemory nearly reached"]
    assert bound.store_pressure() == ["redis maxmemory nearly reached"] and plain.store_pressure() == []
    reasons = health_report(plain)["services"]["session_manager"]["reasons"]
    assert reasons == ["memory_usage_mb at SESSION_MAX_MEMORY_MB (new sessions are refused)"]
    for manager in (bound, plain):
        await manager.close()


@pytest.mark.parametrize(("extra", "max_bytes"), [({}, None), ({"max_memory_mb": 2.0}, 2 * 1024 * 1024)])
async def test_a_shared_store_from_the_settings_takes_the_memory_budget_only_when_set(
    extra: dict[str, Any], max_bytes: int | None
) -> None:
    settings = Settings(
        store_url="redis://127.0.0.1:1/0",
        cleanup_enabled=False,
        redis_memory_reserve=0.25,
        memory_policy="evict",
        **extra,
    )
    manager = SessionManager(settings=settings)  # builds the client; connects only when used
    store = manager.store
    assert isinstance(store, RedisStore)
    assert (store.memory.max_bytes, store.memory.reserve, store.memory.policy) == (max_bytes, 0.25, "evict")
    assert store.budget_from_settings is (max_bytes is not None)
