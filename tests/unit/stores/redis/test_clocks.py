"""The Redis store's monotonic clock, injected (RedisStore(monotonic_clock=...)): it alone decides how old
the stats snapshot is and when the memory limits read INFO again, so these tests move a fake clock
instead of waiting. The memory tests answer INFO in-process; the stats test reads a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis import exceptions as rx

from faultmaven.config import Settings
from faultmaven.session_management import SessionManager
from faultmaven.stores.redis.info import MAX_AGE_S, NEAR_MAX_AGE_S
from faultmaven.stores.redis.store import RedisStore
from tests.support import EPOCH, FakeClock

MB = 1024 * 1024
SETTINGS = Settings(cleanup_enabled=False, max_per_user=0)
NOBODY = "redis://127.0.0.1:1"  # never connected to: INFO is answered in-process


async def scheduled(task: asyncio.Task[None] | None) -> None:
    """The background reading the clock's verdict started; there must be one."""
    assert task is not None, "no reading was scheduled"
    await task


@pytest.fixture
def mono() -> FakeClock:
    """A monotonic clock from 0.0, as a fresh boot's: no reading may take 0.0 for "never read"."""
    return FakeClock(start=0.0)


@pytest.fixture
async def store(mono: FakeClock) -> AsyncIterator[RedisStore]:
    store = RedisStore(NOBODY, monotonic_clock=mono)
    yield store
    await store.close()


def answer_info(store: RedisStore, used: int, maxmemory: int = 100 * MB) -> list[str]:
    """INFO memory answered with these figures (or ConnectionError for `used` -1); the calls, listed."""
    calls: list[str] = []

    async def info(section: str = "", **_: object) -> dict[str, object]:
        calls.append(section)
        if used < 0:
            raise rx.ConnectionError("down")
        return {"used_memory": used, "maxmemory": maxmemory, "maxmemory_policy": "noeviction"}

    store.client.info = info  # type: ignore[method-assign,assignment]
    return calls


async def test_far_from_the_limit_info_is_read_again_once_max_age_s_passed(store: RedisStore, mono: FakeClock) -> None:
    calls = answer_info(store, used=10 * MB)
    await store.memory.check_room(0, None, EPOCH)  # the first check reads before its verdict
    assert len(calls) == 1
    mono.advance(MAX_AGE_S / 2)
    await store.memory.check_room(0, None, EPOCH)
    assert len(calls) == 1 and store.memory._memory_refresh is None
    mono.advance(MAX_AGE_S / 2)
    await store.memory.check_room(0, None, EPOCH)
    await scheduled(store.memory._memory_refresh)
    assert len(calls) == 2


@pytest.mark.parametrize(("used", "reads"), [(10 * MB, 1), (87 * MB, 2)])
async def test_near_the_reserve_info_is_read_again_after_near_max_age_s(
    store: RedisStore, mono: FakeClock, used: int, reads: int
) -> None:
    """87 MB of 100 MB is within NEAR (5%) of the reserve's edge (90 MB): read 20 times as often."""
    calls = answer_info(store, used=used)
    await store.memory.check_room(0, None, EPOCH)
    mono.advance(NEAR_MAX_AGE_S / 2)
    await store.memory.check_room(0, None, EPOCH)
    assert store.memory._memory_refresh is None
    mono.advance(NEAR_MAX_AGE_S / 2)
    await store.memory.check_room(0, None, EPOCH)
    if reads == 2:
        await scheduled(store.memory._memory_refresh)
    else:
        assert store.memory._memory_refresh is None
    assert len(calls) == reads


async def test_a_failed_info_is_tried_again_after_max_age_s_not_on_every_create(
    store: RedisStore, mono: FakeClock
) -> None:
    calls = answer_info(store, used=-1)
    await store.memory.check_room(0, None, EPOCH)  # failed quietly: creates go on
    mono.advance(MAX_AGE_S / 2)
    for _ in range(10):
        await store.memory.check_room(0, None, EPOCH)
    assert len(calls) == 1
    mono.advance(MAX_AGE_S / 2)
    await store.memory.check_room(0, None, EPOCH)
    await scheduled(store.memory._memory_refresh)
    assert len(calls) == 2


async def test_the_stats_age_is_the_clock_since_the_reading_and_a_stale_one_is_read_again(redis_url: str) -> None:
    mono = FakeClock(start=0.0)
    store = RedisStore(redis_url, stats_max_age_s=1.0, monotonic_clock=mono)
    manager = SessionManager(store, settings=SETTINGS, clock=FakeClock())
    try:
        assert manager.get_session_metrics()["store_stats_age_s"] is None  # never read: a reading starts
        await scheduled(store.snapshot._refreshing)
        assert manager.get_session_metrics()["store_stats_age_s"] == 0.0
        await manager.create_session("u1")
        mono.advance(1.0)  # as old as stats_max_age_s: still served
        metrics = manager.get_session_metrics()
        assert (metrics["store_stats_age_s"], metrics["active_sessions"]) == (1.0, 0)
        assert store.snapshot._refreshing is not None and store.snapshot._refreshing.done()  # the first one
        mono.advance(0.25)  # stale: served once more, and read again in the background
        metrics = manager.get_session_metrics()
        assert (metrics["store_stats_age_s"], metrics["active_sessions"]) == (1.25, 0)
        await scheduled(store.snapshot._refreshing)
        assert store.snapshot.read_at == 1.25
        metrics = manager.get_session_metrics()
        assert (metrics["store_stats_age_s"], metrics["active_sessions"]) == (0.0, 1)
    finally:
        await manager.close()
