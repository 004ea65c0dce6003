"""The same rules on both stores: memory and a real redis-server (store fixture parametrised over both)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Set
from typing import Any

import pytest

from faultmaven.config import Settings
from faultmaven.exceptions import SessionCleanupException, SessionNotFoundError, SessionStoreException
from faultmaven.lifecycle.scheduler import CleanupScheduler
from faultmaven.observability.health import health_report
from faultmaven.session_management import SessionManager
from faultmaven.stores import BatchResult, SessionStore
from faultmaven.stores.redis.store import RedisStore
from tests.redis_server import RedisServer
from tests.support import FakeClock

TIMEOUT_S = 30 * 60


class Hooked:
    """Wraps any store; calls `after_batch` between cleanup batches (the cleanup is suspended there)."""

    def __init__(self, inner: Any, after_batch: Callable[[BatchResult], Awaitable[None]]) -> None:
        self._inner = inner
        self.after_batch = after_batch
        self.batches = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def remove_idle(
        self, now: float, max_idle_s: float | None, limit: int, exclude: Set[str], part: int = 0, **kw: Any
    ) -> BatchResult:
        result: BatchResult = await self._inner.remove_idle(now, max_idle_s, limit, exclude, part, **kw)
        self.batches += 1
        await self.after_batch(result)
        return result


@pytest.fixture
async def manager(make_store: Callable[[], SessionStore], clock: FakeClock) -> AsyncIterator[SessionManager]:
    mgr = SessionManager(make_store(), settings=Settings(cleanup_batch_size=10, cleanup_enabled=False), clock=clock)
    yield mgr
    await mgr.close()


async def metrics(manager: SessionManager) -> dict[str, Any]:
    await manager.refresh_store_stats()
    return manager.get_session_metrics()


async def test_lifecycle_and_lazy_expiry(manager: SessionManager, clock: FakeClock) -> None:
    session = await manager.create_session("alice", {"case": [1, "two", {"three": 3.5}]})
    sid = session.session_id
    got = await manager.get_session(sid)
    assert got is not None and got.user_id == "alice" and got.data == {"case": [1, "two", {"three": 3.5}]}
    assert (await manager.update_session(sid, {"v": 2})).data == {"v": 2}
    clock.advance(TIMEOUT_S - 0.25)
    assert await manager.touch_session(sid) is not None
    clock.advance(TIMEOUT_S)  # idle exactly the timeout: expired, and activity does not revive it
    assert await manager.get_session(sid) is None
    assert await manager.touch_session(sid) is None
    with pytest.raises(SessionNotFoundError):
        await manager.update_session(sid, {"v": 3})
    m = await metrics(manager)
    assert (m["active_sessions"], m["expired_sessions"]) == (0, 1)
    assert await manager.delete_session(sid) is False  # removed, but it was not live
    m = await metrics(manager)
    assert (m["active_sessions"], m["expired_sessions"], m["memory_usage_mb"]) == (0, 0, 0)
    no_user = await manager.create_session()
    assert (await manager.get_session(no_user.session_id)).user_id is None  # type: ignore[union-attr]
    assert await manager.delete_session(no_user.session_id) is True


async def test_cleanup_counts_and_keeps_live_ones(manager: SessionManager, clock: FakeClock) -> None:
    old = [(await manager.create_session(data={"i": i})).session_id for i in range(37)]
    clock.advance(minutes=20)
    new = [(await manager.create_session()).session_id for _ in range(5)]
    clock.advance(minutes=10)
    assert await manager.cleanup_inactive_sessions() == 37
    assert all([await manager.get_session(s) is None for s in old])
    assert all([await manager.get_session(s) is not None for s in new])
    assert await manager.cleanup_inactive_sessions() == 0
    m = await metrics(manager)
    assert (m["sessions_cleaned_total"], m["cleanup_runs"], m["active_sessions"]) == (37, 2, 5)
    assert m["average_session_duration"] == 0
    assert await manager.cleanup_inactive_sessions(0) == 5
    assert (await metrics(manager))["memory_usage_mb"] == 0


async def test_touches_between_batches_are_never_lost(make_store: Callable[[], SessionStore], clock: FakeClock) -> None:
    rng = random.Random(3)
    ids: list[str] = []
    touched: set[str] = set()

    async def touch_some(_: BatchResult) -> None:
        for sid in rng.sample(ids, 4):
            if await manager.touch_session(sid) is not None:
                touched.add(sid)

    store = Hooked(make_store(), touch_some)
    manager = SessionManager(store, settings=Settings(cleanup_batch_size=6, cleanup_enabled=False), clock=clock)  # type: ignore[arg-type]
    ids.extend([(await manager.create_session()).session_id for _ in range(300)])
    clock.advance(minutes=20)
    removed = await manager.cleanup_inactive_sessions(15)
    assert store.batches > 20 and touched
    assert all([await manager.get_session(s) is not None for s in touched])
    m = await metrics(manager)
    assert m["active_sessions"] == len(touched) and removed == 300 - len(touched)
    await manager.close()


async def test_sessions_survive_an_app_restart(redis_url: str, clock: FakeClock) -> None:
    settings = Settings(cleanup_enabled=False)
    first = SessionManager(RedisStore(redis_url), settings=settings, clock=clock)
    sid = (await first.create_session("bob", {"kept": True})).session_id
    await first.close()
    second = SessionManager(RedisStore(redis_url), settings=settings, clock=clock)
    session = await second.get_session(sid)
    assert session is not None and session.data == {"kept": True} and session.user_id == "bob"
    await second.close()


async def test_redis_down_mid_cleanup_then_back(redis_server: RedisServer, redis_url: str, clock: FakeClock) -> None:
    """Redis stops between batches: the run fails cleanly, health degrades, the scheduler goes on; Redis
    back: the next run succeeds with no restart of the app."""
    stopped = asyncio.Event()

    async def stop_redis(_: BatchResult) -> None:
        if not stopped.is_set():
            stopped.set()
            redis_server.stop()

    store = Hooked(RedisStore(redis_url), stop_redis)
    settings = Settings(cleanup_batch_size=5, cleanup_enabled=True)
    scheduler = CleanupScheduler(backoff_base_s=0.01)
    manager = SessionManager(store, settings=settings, clock=clock, scheduler=scheduler)  # type: ignore[arg-type]
    for _ in range(30):
        await manager.create_session()
    clock.advance(minutes=31)
    with pytest.raises(SessionCleanupException):
        await manager.cleanup_inactive_sessions()
    report = health_report(manager)  # the store is down: still an answer, and not healthy
    assert report["status"] == "degraded"
    assert report["services"]["session_manager"]["status"] in ("unhealthy", "degraded")
    await manager.start_cleanup_scheduler(0.0005)
    async with asyncio.timeout(60):
        while scheduler.consecutive_failures < 2:
            await asyncio.sleep(0.01)
    assert scheduler.running
    redis_server.start()  # the append-only file brings the sessions back
    async with asyncio.timeout(60):  # the run that cleans the last session still has shards to visit
        while (await readable_metrics(manager)).get("sessions_cleaned_total") != 30 or (
            scheduler.consecutive_failures != 0
        ):
            await asyncio.sleep(0.02)
    assert health_report(manager)["services"]["session_manager"]["metrics"]["cleanup_errors_total"] >= 3
    await manager.close()


async def readable_metrics(manager: SessionManager) -> dict[str, Any]:
    try:
        return await metrics(manager)
    except SessionStoreException:
        return {}


class _FailsSecondBatch(RedisStore):
    batches = 0
    first_removed = 0

    async def remove_idle(
        self, now: float, max_idle_s: float | None, limit: int, exclude: Set[str], part: int = 0, **kw: Any
    ) -> BatchResult:
        self.batches += 1
        if self.batches == 2:
            raise SessionStoreException("injected failure in the second batch")
        result = await super().remove_idle(now, max_idle_s, limit, exclude, part, **kw)
        if self.batches == 1:
            self.first_removed = result.removed
        return result


async def test_a_failed_scheduled_run_releases_its_lease(redis_url: str, clock: FakeClock) -> None:
    store = _FailsSecondBatch(redis_url)
    manager = SessionManager(store, settings=Settings(cleanup_batch_size=5, cleanup_enabled=False), clock=clock)
    for _ in range(20):
        await manager.create_session()
    clock.advance(minutes=31)
    with pytest.raises(SessionCleanupException):
        await manager.run_cleanup(trigger="scheduled", leased=True)
    assert await store.client.keys("faultmaven:*lease") == []  # the next replica need not wait for a TTL
    assert await manager.run_cleanup(trigger="scheduled", leased=True) == 20 - store.first_removed
    await manager.close()
