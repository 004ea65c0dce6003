"""Two gaps mutation testing cannot reach (Lua and the lease), each with the broken variant it must catch.

1. A max-age cleanup reads the deadline index past the bound idle sessions can have, then re-checks
   each session in the script: a session idle for the limit minus half a second must survive. Without the re-check line
   it is removed.
2. A cleanup that runs longer than its lease's TTL renews the lease after every batch, so no other
   replica takes the same shard meanwhile. A store that never renews lets one in.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import faultmaven.lifecycle.cleanup as cleanup
from faultmaven.config import Settings
from faultmaven.lifecycle.cleanup import yield_to_loop
from faultmaven.session_management import SessionManager
from faultmaven.stores.redis.lua_texts import SCRIPTS
from faultmaven.stores.redis.shards import shard_of_owner
from faultmaven.stores.redis.store import RedisStore
from tests.support import FakeClock

RECHECK = "  if not expired and not (by_idle and now - active >= max_idle) then return false end\n"


class _NoRecheck(RedisStore):
    """The cleanup script with its re-check gone: whatever the index range returned is removed."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        broken = SCRIPTS["remove_idle"].replace(RECHECK, "")
        assert broken != SCRIPTS["remove_idle"], "the variant did not change the script"
        self.scripts.register("remove_idle", broken)


class _NeverRenews(RedisStore):
    """Says it renewed the lease, and did not."""

    async def renew_lease(self, token: str, ttl_s: float) -> bool:
        return True


async def near_limit_survives(store: RedisStore) -> bool:
    """A session idle 0.5 s short of a 10-minute max age, one idle past it: does the first survive?"""
    clock = FakeClock()
    manager = SessionManager(store, settings=Settings(cleanup_enabled=False), clock=clock)
    try:
        idle_past = await manager.create_session()
        clock.advance(seconds=1.0)
        near = await manager.create_session()
        clock.advance(minutes=10, seconds=-0.5)  # `near` idle 599.5 s, `idle_past` 600.5 s
        removed = await manager.cleanup_inactive_sessions(max_age_minutes=10)
        assert await manager.get_session(idle_past.session_id) is None
        return removed == 1 and await manager.get_session(near.session_id) is not None
    finally:
        await manager.close()


async def test_a_session_just_under_the_max_age_survives(any_redis_url: str) -> None:
    assert await near_limit_survives(RedisStore(any_redis_url))


async def test_the_check_catches_a_cleanup_without_its_recheck(redis_url: str) -> None:
    assert not await near_limit_survives(_NoRecheck(redis_url))


PAUSE_S = 0.1  # between batches
LEASE_S = 1.0  # renewed after each batch: a pause and a batch's round trips must fit in it, under load too
SESSIONS, BATCH = 200, 10  # 20 batches: the run takes 2 s at least, twice the lease


class _SlowBatches(SessionManager):
    """Each pause between batches takes real time: the run outlives the lease's TTL."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.cleaning = asyncio.Event()  # set once the run is inside the shard that holds the sessions
        super().__init__(*args, cleanup_pause=self._slow_pause, **kwargs)

    async def _slow_pause(self) -> None:
        self.cleaning.set()
        await asyncio.sleep(PAUSE_S)
        await yield_to_loop()


async def others_kept_out(url: str, store: RedisStore, monkeypatch: pytest.MonkeyPatch) -> bool:
    """One user's 200 expired sessions (one shard), cleaned 10 at a time with 0.1 s pauses under a 1 s
    lease (2 s at least in all); meanwhile another replica keeps asking for that shard's lease."""
    monkeypatch.setattr(cleanup, "LEASE_TTL_S", LEASE_S)
    clock = FakeClock()
    settings = Settings(cleanup_batch_size=BATCH, cleanup_enabled=False, max_per_user=0)
    manager = _SlowBatches(store, settings=settings, clock=clock)
    other = RedisStore(url)
    shard = shard_of_owner("uma", None)
    try:
        for start in range(0, SESSIONS, 50):
            await asyncio.gather(*(manager.create_session("uma") for _ in range(start, start + 50)))
        clock.advance(minutes=31)
        run = asyncio.create_task(manager.run_cleanup(trigger="scheduled", leased=True))
        await asyncio.wait_for(manager.cleaning.wait(), 60)
        taken = []
        # While the run still holds the shard (or until it failed: awaited below).
        while manager.get_session_metrics()["sessions_cleaned_total"] < SESSIONS and not run.done():
            token = await other.acquire_lease(LEASE_S, shard)
            if token is not None:
                taken.append(token)
                await other.release_lease(token)
            await asyncio.sleep(0.05)
        assert await run == SESSIONS
        return not taken
    finally:
        await manager.close()
        await other.close()


async def test_a_run_longer_than_the_lease_keeps_the_other_replicas_out(
    any_redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert await others_kept_out(any_redis_url, RedisStore(any_redis_url), monkeypatch)


async def test_the_check_catches_a_lease_never_renewed(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert not await others_kept_out(redis_url, _NeverRenews(redis_url), monkeypatch)
