"""Redis counts are fresh while the app runs: read in the background on every worker, so the first scrape
after an idle period sees what another worker wrote, and a Redis that went down shows without a read."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from faultmaven.config import Settings
from faultmaven.lifecycle import background
from faultmaven.session_management import SessionManager
from faultmaven.stores.redis.store import RedisStore
from tests.conftest import open_client
from tests.redis_server import RedisServer
from tests.support import FakeClock

SETTINGS = Settings(cleanup_enabled=False, max_per_user=0)


async def reading_after(store: RedisStore, instant: float) -> None:
    """Until the store's counts were read (by the background task, nobody else reads them) after `instant`."""
    deadline = time.monotonic() + 10
    while store.snapshot.read_at <= instant:
        assert time.monotonic() < deadline, "the counts were never read in the background"
        await asyncio.sleep(0.05)


async def test_the_first_scrape_after_an_idle_period_sees_another_workers_sessions(redis_url: str) -> None:
    store = RedisStore(redis_url)
    serving = SessionManager(store, settings=SETTINGS, clock=FakeClock())
    other = SessionManager(RedisStore(redis_url), settings=SETTINGS, clock=FakeClock())
    try:
        async for client in open_client(serving):
            await serving.create_session("u0")
            await reading_after(store, time.monotonic())
            assert re.search(r"^faultmaven_sessions_active 1\.0$", (await client.get("/metrics")).text, re.MULTILINE)
            for i in range(10):  # another worker's creates, unseen by this one
                await other.create_session(f"u{i + 1}")
            await reading_after(store, time.monotonic())
            text = (await client.get("/metrics")).text
            assert re.search(r"^faultmaven_sessions_active 11\.0$", text, re.MULTILINE), text[:500]
    finally:
        await other.close()
        await serving.close()


async def test_a_redis_that_went_down_shows_in_health_without_a_read_first(monkeypatch: pytest.MonkeyPatch) -> None:
    server = RedisServer()
    server.start()
    store = RedisStore(server.url)
    manager = SessionManager(store, settings=SETTINGS, clock=FakeClock())
    try:
        async for client in open_client(manager):
            assert (await client.get("/health")).json()["services"]["session_manager"]["status"] == "healthy"
            server.stop()
            deadline = time.monotonic() + 10
            while store.snapshot.error is None:  # the background reading found it down
                assert time.monotonic() < deadline, "the background reading never noticed"
                await asyncio.sleep(0.05)
            health = (await client.get("/health")).json()
            assert health["services"]["session_manager"]["status"] == "unhealthy", health
    finally:
        await manager.close()
        server.cleanup()


def test_the_counts_are_read_at_least_once_a_second() -> None:
    assert background.STATS_REFRESH_S <= 1.0  # with the reading's own time, any read is at most about 2 s old
