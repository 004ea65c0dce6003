"""Three managers on one Redis, schedulers running while sessions are created, touched and abandoned:
every expired session is removed exactly once and no live session is lost."""

from __future__ import annotations

import asyncio
import random

from faultmaven.config import Settings
from faultmaven.session_management import SessionManager
from faultmaven.stores.redis.store import RedisStore
from tests.support import FakeClock

REPLICAS = 3
ROUNDS = 12
ABANDONED_PER_ROUND = 40


async def test_three_replicas_share_one_session_space(any_redis_url: str, clock: FakeClock) -> None:
    rng = random.Random(11)
    settings = Settings(cleanup_batch_size=7, cleanup_enabled=True)
    replicas = [SessionManager(RedisStore(any_redis_url), settings=settings, clock=clock) for _ in range(REPLICAS)]
    for replica in replicas:
        await replica.start_cleanup_scheduler(0.0005)  # ~30 ms of real time, with jitter
    keepers = [(await rng.choice(replicas).create_session("keeper")).session_id for _ in range(10)]
    abandoned = 0

    def cleaned() -> list[int]:
        return [r.get_session_metrics()["sessions_cleaned_total"] for r in replicas]  # type: ignore[misc]

    try:
        # Which replica's run removes a round's sessions is up to the schedulers' timing: rounds go on
        # (ROUNDS at least) until two replicas have removed some, so that the work really was shared.
        async with asyncio.timeout(120):
            rounds = 0
            while rounds < ROUNDS or sum(1 for c in cleaned() if c) < 2:
                for _ in range(ABANDONED_PER_ROUND):
                    await rng.choice(replicas).create_session(None, {"abandoned": True})
                    abandoned += 1
                for sid in keepers:  # any replica sees any session
                    assert await rng.choice(replicas).touch_session(sid) is not None, "a live session was lost"
                clock.advance(minutes=10)
                await asyncio.sleep(0.05)  # the schedulers' runs remove what is due meanwhile
                rounds += 1
            for _ in range(4):  # no new sessions: everything abandoned goes idle for 30 minutes
                for sid in keepers:
                    assert await rng.choice(replicas).touch_session(sid) is not None, "a live session was lost"
                clock.advance(minutes=10)
                await asyncio.sleep(0.05)
            while sum(cleaned()) < abandoned:
                await asyncio.sleep(0.02)
        # No run is left to remove one twice: each scheduler stops after its run under way.
        for replica in replicas:
            await replica.stop_cleanup_scheduler()
        assert sum(cleaned()) == abandoned, cleaned()  # each expired session removed exactly once
        assert sum(1 for c in cleaned() if c) >= 2, cleaned()  # the work really was shared
        for sid in keepers:
            assert await replicas[0].get_session(sid) is not None
        await replicas[0].store.refresh_stats(clock.now)
        shared = [r.get_session_metrics() for r in replicas]
        assert shared[0]["active_sessions"] == len(keepers)
        assert shared[0]["expired_sessions"] == 0
    finally:
        for replica in replicas:
            await replica.close()
