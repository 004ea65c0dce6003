"""Injected faults: a store failing a fraction of operations, cancellation mid-run, SIGTERM."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Set
from typing import Any

import pytest

from faultmaven.config import Settings
from faultmaven.exceptions import SessionStoreException
from faultmaven.observability.health import health_report
from faultmaven.session_management import SessionManager
from faultmaven.stores import BatchResult, MemoryStore
from faultmaven.stores.redis.store import RedisStore
from tests.conftest import open_client
from tests.support import FakeClock, due_ids


class FlakyStore(MemoryStore):
    """Fails a fraction of operations: per-session removals in a cleanup batch, and touches."""

    def __init__(self, fraction: float, seed: int = 0) -> None:
        super().__init__()
        self.fraction = fraction
        self.rng = random.Random(seed)

    async def remove_idle(
        self, now: float, max_idle_s: float | None, limit: int, exclude: Set[str], part: int = 0, **kw: Any
    ) -> BatchResult:
        candidates = [sid for sid in due_ids(self, now, max_idle_s) if sid not in exclude][:limit]
        failing = {sid for sid in candidates if self.rng.random() < self.fraction}
        result = await super().remove_idle(now, max_idle_s, limit, set(exclude) | failing, part, **kw)
        result.failed = sorted(failing)
        return result

    async def touch(self, session_id: str, now: float, user_id: str | None = None) -> Any:
        if self.rng.random() < self.fraction:
            raise SessionStoreException("injected failure")
        return await super().touch(session_id, now, user_id)


def assert_consistent(store: MemoryStore, now: float) -> None:
    """The lists, the index, the byte count and the expired count agree."""
    store.stats(now)
    store.check()


@pytest.mark.parametrize(("fraction", "degraded"), [(0.01, False), (0.10, True)])
async def test_flaky_store_runs_complete_and_count_errors(fraction: float, degraded: bool, clock: FakeClock) -> None:
    store = FlakyStore(fraction, seed=5)
    manager = SessionManager(store, settings=Settings(cleanup_batch_size=25, cleanup_enabled=False), clock=clock)
    for _ in range(3000):
        await manager.create_session()
    clock.advance(minutes=31)
    removed = await manager.cleanup_inactive_sessions()  # completes: per-session failures are counted
    metrics = manager.get_session_metrics()
    errors = metrics["cleanup_errors_total"]
    assert removed + errors == 3000 and len(store) == errors
    assert 0.5 * fraction * 3000 <= errors <= 1.5 * fraction * 3000
    report = health_report(manager)
    assert (report["status"] == "degraded") is degraded
    assert ("cleanup error rate above 5%" in report["services"]["session_manager"].get("reasons", [])) is degraded
    assert_consistent(store, clock())
    store.fraction = 0
    assert await manager.cleanup_inactive_sessions() == errors  # the next run removes what failed


async def test_flaky_touches_answer_503_and_lose_nothing(clock: FakeClock) -> None:
    store = FlakyStore(0.5, seed=2)
    manager = SessionManager(store, settings=Settings(cleanup_enabled=False), clock=clock)
    async for client in open_client(manager):
        sid = (await client.post("/api/v1/sessions", json={"data": {"k": 1}})).json()["session_id"]
        statuses = {(await client.get(f"/api/v1/sessions/{sid}")).status_code for _ in range(40)}
        assert statuses == {200, 503}
    store.fraction = 0
    session = await manager.get_session(sid)
    assert session is not None and session.data == {"k": 1}


async def test_cancelled_cleanup_leaves_the_memory_store_consistent(clock: FakeClock) -> None:
    store = MemoryStore()
    manager = SessionManager(store, settings=Settings(cleanup_batch_size=10, cleanup_enabled=False), clock=clock)
    for _ in range(500):
        await manager.create_session(data={"x": 1})
    manager.get_session_metrics()  # count the expired prefix, so cancellation must keep that count right
    clock.advance(minutes=31)
    manager.get_session_metrics()
    task = asyncio.create_task(manager.cleanup_inactive_sessions())
    for _ in range(7):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert 0 < len(store) < 500
    assert_consistent(store, clock())
    assert manager.get_session_metrics()["expired_sessions"] == len(store)
    remaining = len(store)
    assert await manager.cleanup_inactive_sessions() == remaining
    assert len(store) == 0 and store.stats(clock()).memory_bytes == 0


class _CancelInBatch(RedisStore):
    """Signals when its sixth batch has been sent, so the test can cancel the run inside that batch."""

    batches = 0

    async def remove_idle(
        self, now: float, max_idle_s: float | None, limit: int, exclude: Set[str], part: int = 0, **kw: Any
    ) -> BatchResult:
        self.batches += 1
        if self.batches == 6:
            self.sent.set()
        return await super().remove_idle(now, max_idle_s, limit, exclude, part, **kw)


async def _sum_shards(store: RedisStore, command: str, index: int, *args: str) -> int:
    """One command on one index key (0 the deadline index, 1 stats) of every shard, added up."""
    call = getattr(store.client, command)
    return sum([int(await call(shard.indexes[index], *args) or 0) for shard in store.shards])


async def test_cancelled_cleanup_leaves_redis_consistent(redis_url: str, clock: FakeClock) -> None:
    store = _CancelInBatch(redis_url)
    store.sent = asyncio.Event()  # type: ignore[attr-defined]
    manager = SessionManager(store, settings=Settings(cleanup_batch_size=10, cleanup_enabled=False), clock=clock)
    for _ in range(300):
        await manager.create_session(data={"x": 1})
    clock.advance(minutes=31)
    task = asyncio.create_task(manager.cleanup_inactive_sessions())
    await store.sent.wait()  # type: ignore[attr-defined]
    task.cancel()  # the sixth batch's script is on its way or running in Redis
    with pytest.raises(asyncio.CancelledError):
        await task
    client = store.client
    keys = [k async for k in client.scan_iter(match="faultmaven:{*}s:*")]
    costs = [int(await client.hget(k, "cost")) for k in keys]
    assert 0 < len(keys) < 300 and len(keys) == await _sum_shards(store, "zcard", 0)
    assert await _sum_shards(store, "hget", 1, "bytes") == sum(costs)
    assert await manager.cleanup_inactive_sessions() == len(keys)
    assert await _sum_shards(store, "zcard", 0) == 0
    await manager.close()
