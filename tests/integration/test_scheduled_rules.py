"""The expiry rules through the background scheduler, on every store: what a direct cleanup call does, the
scheduled run must do too (each session by its own timeout, the absolute lifetime, endings once, leases).

The scheduler waits on real (short) intervals; expiry follows the fake clock. Tests wait for the number of
finished runs, never for a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from faultmaven.config import Settings
from faultmaven.exceptions import SessionStoreException
from faultmaven.session import SessionEnd
from faultmaven.session_management import SessionManager
from faultmaven.stores import BatchResult, SessionStore
from tests.support import TICK_MINUTES, FakeClock, scheduled_runs


def _settings(**extra: float) -> Settings:
    return Settings(timeout_minutes=30, cleanup_batch_size=10, cleanup_enabled=False, **extra)


@pytest.fixture
async def manager(make_store: Callable[[], SessionStore], clock: FakeClock) -> AsyncIterator[SessionManager]:
    mgr = SessionManager(make_store(), settings=_settings(), clock=clock)
    yield mgr
    await mgr.close()


async def active(manager: SessionManager) -> int | None:
    await manager.refresh_store_stats()
    return manager.get_session_metrics()["active_sessions"]  # type: ignore[return-value]


async def test_a_scheduled_run_judges_each_session_by_its_own_timeout(
    manager: SessionManager, clock: FakeClock
) -> None:
    """The copilot's 180-minute sessions outlive the default 30: the scheduler must not apply the default."""
    await manager.create_session("u1")  # the default timeout, 30 minutes
    await manager.create_session("u2", timeout_minutes=5)
    copilot = await manager.create_session("u3", client_id="copilot-client-1", timeout_minutes=180)
    clock.advance(minutes=31)
    await scheduled_runs(manager)
    assert manager.get_session_metrics()["sessions_cleaned_total"] == 2
    users = {u: await manager.list_user_sessions(u) for u in ("u1", "u2", "u3")}
    assert users["u1"] == [] and users["u2"] == []
    assert [s.session_id for s in users["u3"]] == [copilot.session_id]
    assert await active(manager) == 1
    clock.advance(minutes=150)  # 181 minutes idle
    await scheduled_runs(manager)
    assert await active(manager) == 0 and await manager.list_user_sessions("u3") == []


async def test_a_scheduled_run_ends_a_busy_session_at_its_absolute_deadline(
    make_store: Callable[[], SessionStore], clock: FakeClock
) -> None:
    manager = SessionManager(make_store(), settings=_settings(absolute_timeout_minutes=60), clock=clock)
    try:
        session = await manager.create_session("busy", timeout_minutes=180)
        for _ in range(3):
            clock.advance(minutes=19)  # active well inside its idle timeout
            assert await manager.touch_session(session.session_id) is not None
            await scheduled_runs(manager, runs=1)
            assert len(await manager.list_user_sessions("busy")) == 1
        clock.advance(minutes=3)  # 60 minutes after creation
        await scheduled_runs(manager, runs=1)
        assert await manager.list_user_sessions("busy") == []
        assert manager.ended_by_reason()["expired"] == 1
    finally:
        await manager.close()


async def test_a_scheduled_run_keeps_the_users_index_and_resume_pairs_in_step(
    make_store: Callable[[], SessionStore], clock: FakeClock
) -> None:
    """What a scheduled run ends leaves the user's list, the per-user limit and the resume pair at once,
    and counts in the average lifetime with every other ending."""
    manager = SessionManager(make_store(), settings=_settings(max_per_user=2), clock=clock)
    try:
        old = await manager.create_session("ida", client_id="laptop-0001", timeout_minutes=5)
        keep = await manager.create_session("ida", client_id="phone-00001")
        clock.advance(minutes=1)
        assert await manager.touch_session(old.session_id) is not None  # lives 60 s, expires at minute 6
        clock.advance(minutes=2)
        assert await manager.touch_session(keep.session_id) is not None  # lives 180 s
        clock.advance(minutes=4)
        await scheduled_runs(manager, runs=1)
        assert [s.session_id for s in await manager.list_user_sessions("ida")] == [keep.session_id]
        again = await manager.create_session("ida", client_id="laptop-0001")  # its pair ended with it
        assert not again.session_resumed and again.session_id != old.session_id
        assert manager.ended_by_reason()["user_limit"] == 0  # the limit of 2 counts live sessions only
        assert await manager.revoke_user_sessions("ida") == 2
        ended = {reason: n for reason, n in manager.ended_by_reason().items() if n}
        assert ended == {"expired": 1, "revoked": 2}
        average = manager.get_session_metrics()["average_session_duration"]
        assert average == pytest.approx((60 + 180 + 0) / 3)  # every ending, the revoked ones too
    finally:
        await manager.close()


async def test_scheduled_runs_on_two_replicas_end_each_session_once(any_redis_url: str, clock: FakeClock) -> None:
    """Two replicas on one Redis, both scheduled: leases keep them apart, each ending is reported once."""
    from faultmaven.stores.redis.store import RedisStore

    replicas = [SessionManager(RedisStore(any_redis_url), settings=_settings(), clock=clock) for _ in range(2)]
    seen: list[SessionEnd] = []
    for replica in replicas:
        replica.add_session_end_listener(seen.append)
    try:
        ids = {(await replicas[i % 2].create_session(f"user-{i}")).session_id for i in range(40)}
        clock.advance(minutes=31)
        await scheduled_runs(*replicas, runs=2)
        await asyncio.gather(*(r.flush_session_ends() for r in replicas))
        assert sorted(e.session_id for e in seen) == sorted(ids)
        assert {e.reason for e in seen} == {"expired"}
        assert sum(r.get_session_metrics()["sessions_cleaned_total"] for r in replicas) == 40  # type: ignore[misc]
    finally:
        for replica in replicas:
            await replica.close()


class Hooked:
    """Any store, with `before_batch` awaited before each cleanup batch (a fault or a stop lands there)."""

    def __init__(self, inner: SessionStore, before_batch: Callable[[], Awaitable[None]]) -> None:
        self._inner = inner
        self.before_batch = before_batch

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def remove_idle(self, *args: Any, **kwargs: Any) -> BatchResult:
        await self.before_batch()
        result: BatchResult = await self._inner.remove_idle(*args, **kwargs)
        return result


async def test_a_failing_store_never_ends_the_scheduler_and_the_next_run_cleans_up(
    make_store: Callable[[], SessionStore], clock: FakeClock
) -> None:
    failures = 3

    async def flaky() -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise SessionStoreException("store unreachable")

    manager = SessionManager(Hooked(make_store(), flaky), settings=_settings(), clock=clock)  # type: ignore[arg-type]
    try:
        for i in range(25):
            await manager.create_session(f"user-{i}")
        clock.advance(minutes=31)
        await manager.start_cleanup_scheduler(TICK_MINUTES)
        async with asyncio.timeout(30):
            while manager.get_session_metrics()["sessions_cleaned_total"] != 25:
                assert manager.get_session_metrics()["scheduler_running"]
                await asyncio.sleep(0.01)
        assert failures == 0 and manager.get_session_metrics()["cleanup_errors_total"] == 3
        await manager.stop_cleanup_scheduler()
        assert await active(manager) == 0
    finally:
        await manager.close()


async def test_a_stop_during_a_scheduled_run_lets_the_batch_finish_and_leaves_the_rest(
    make_store: Callable[[], SessionStore], clock: FakeClock
) -> None:
    stopper: asyncio.Task[None] | None = None

    async def stop_once() -> None:
        nonlocal stopper
        if stopper is None:
            stopper = asyncio.create_task(manager.stop_cleanup_scheduler())
            await asyncio.sleep(0)  # the stop is asked for while this batch is under way

    manager = SessionManager(Hooked(make_store(), stop_once), settings=_settings(), clock=clock)  # type: ignore[arg-type]
    try:
        for i in range(30):
            await manager.create_session(f"user-{i}")
        clock.advance(minutes=31)
        await manager.start_cleanup_scheduler(TICK_MINUTES)
        async with asyncio.timeout(30):
            while stopper is None or not stopper.done():
                await asyncio.sleep(0.01)
        metrics = manager.get_session_metrics()
        cleaned = metrics["sessions_cleaned_total"]
        assert not metrics["scheduler_running"] and metrics["cleanup_runs"] == 1
        # The batch under way finishes (one SESSION_CLEANUP_BATCH_SIZE at most); a sharded store's first part
        # may hold none of the 30.
        assert cleaned == 10 if len(manager.store.cleanup_parts()) == 1 else cleaned <= 10  # type: ignore[operator]
        assert await manager.cleanup_inactive_sessions() == 30 - cleaned  # type: ignore[operator]
    finally:
        await manager.close()
