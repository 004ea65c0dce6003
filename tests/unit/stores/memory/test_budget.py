"""SESSION_MAX_MEMORY_MB enforced: least recently active sessions evicted, a write too big alone refused."""

from __future__ import annotations

import asyncio
import logging

import pytest

from faultmaven.config import Settings
from faultmaven.exceptions import SessionDataTooLargeError, SessionOverMemoryBudgetError
from faultmaven.session_management import SessionManager
from faultmaven.stores import MemoryStore
from tests.conftest import open_client
from tests.support import FakeClock

PAYLOAD = {"blob": "x" * 900}


def session_bytes() -> int:
    """What one PAYLOAD session costs in the estimate."""
    store = MemoryStore()
    manager = SessionManager(store, settings=Settings(cleanup_enabled=False))
    asyncio.run(manager.create_session("user", PAYLOAD))
    return store.stats(0.0).memory_bytes


SESSION_BYTES = session_bytes()


def budgeted(clock: FakeClock, sessions: int) -> SessionManager:
    settings = Settings(max_per_user=0)  # the memory budget alone decides here
    return SessionManager(
        MemoryStore(max_bytes=SESSION_BYTES * sessions, policy="evict"), settings=settings, clock=clock
    )


async def test_writes_over_the_budget_evict_the_least_recently_active(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    manager = budgeted(clock, 10)
    ids = []
    for _ in range(10):
        ids.append((await manager.create_session("user", PAYLOAD)).session_id)
        clock.advance(1)
    await manager.touch_session(ids[0])  # now the most recently active
    caplog.set_level(logging.INFO, "faultmaven")
    for _ in range(3):
        await manager.create_session("user", PAYLOAD)

    assert [await manager.get_session(s) is not None for s in ids[:5]] == [True, False, False, False, True]
    metrics = manager.get_session_metrics()
    assert metrics["sessions_evicted_total"] == 3
    assert metrics["active_sessions"] == 10
    assert metrics["memory_usage_mb"] * 1024 * 1024 <= SESSION_BYTES * 10
    runs = [r for r in caplog.records if r.getMessage() == "Session cleanup completed"]
    assert len(runs) == 3 and all(r.audit["trigger"] == "eviction" for r in runs)  # type: ignore[attr-defined]
    assert "memory budget" in runs[0].audit["reason"]  # type: ignore[attr-defined]


async def test_expired_sessions_are_evicted_first(clock: FakeClock) -> None:
    manager = budgeted(clock, 4)
    old = [(await manager.create_session("user", PAYLOAD)).session_id for _ in range(2)]
    clock.advance(minutes=31)
    live = [(await manager.create_session("user", PAYLOAD)).session_id for _ in range(2)]
    await manager.create_session("user", PAYLOAD)
    await manager.create_session("user", PAYLOAD)
    assert manager.get_session_metrics()["expired_sessions"] == 0
    assert all([await manager.get_session(s) is not None for s in live])
    assert manager.get_session_metrics()["sessions_evicted_total"] == 0  # they expired: no live one evicted
    assert manager.ended_by_reason()["expired"] == len(old)


async def test_a_session_larger_than_the_budget_is_refused_and_nothing_is_lost(clock: FakeClock) -> None:
    manager = budgeted(clock, 3)
    ids = [(await manager.create_session("user", PAYLOAD)).session_id for _ in range(3)]
    before = manager.get_session_metrics()
    with pytest.raises(SessionOverMemoryBudgetError, match="memory budget"):
        await manager.create_session("user", {"blob": "x" * (SESSION_BYTES * 3)})
    with pytest.raises(SessionOverMemoryBudgetError):
        await manager.update_session(ids[0], {"blob": "y" * (SESSION_BYTES * 3)})
    after = manager.get_session_metrics()
    assert after["memory_usage_mb"] == before["memory_usage_mb"]
    assert after["sessions_evicted_total"] == 0 and after["sessions_rejected_total"] == 2
    sessions = [await manager.get_session(s) for s in ids]
    assert all(s is not None and s.data == PAYLOAD for s in sessions)


async def test_an_update_that_grows_evicts_others_never_itself(clock: FakeClock) -> None:
    manager = budgeted(clock, 3)
    ids = [(await manager.create_session("user", PAYLOAD)).session_id for _ in range(3)]
    bigger = {"blob": "z" * 1800}
    updated = await manager.update_session(ids[0], bigger)  # ids[0] is the least recently active
    assert updated.data == bigger
    assert (await manager.get_session(ids[0])) is not None
    assert manager.get_session_metrics()["sessions_evicted_total"] == 1
    assert await manager.get_session(ids[1]) is None


async def test_the_budget_comes_from_settings(clock: FakeClock) -> None:
    settings = Settings(max_memory_mb=SESSION_BYTES * 2 / (1024 * 1024), cleanup_enabled=False, memory_policy="evict")
    manager = SessionManager(settings=settings, clock=clock)
    for _ in range(5):
        await manager.create_session("user", PAYLOAD)
    assert manager.get_session_metrics()["sessions_evicted_total"] == 3


async def test_http_413_and_health_degraded_at_the_budget(clock: FakeClock) -> None:
    settings = Settings(max_memory_mb=SESSION_BYTES * 3 / (1024 * 1024), cleanup_enabled=False)
    manager = SessionManager(settings=settings, clock=clock)
    async for client in open_client(manager):
        for _ in range(2):
            assert (await client.post("/api/v1/sessions", json={"user_id": "user", "data": PAYLOAD})).status_code == 201
        assert (await client.get("/health")).json()["status"] == "healthy"
        assert (await client.post("/api/v1/sessions", json={"user_id": "user", "data": PAYLOAD})).status_code == 201
        body = (await client.get("/health")).json()
        assert body["status"] == "degraded"
        too_big = {"data": {"blob": "x" * (SESSION_BYTES * 3)}}
        response = await client.post("/api/v1/sessions", json=too_big)
        assert response.status_code == 413 and "memory budget" in response.json()["detail"]
        assert manager.get_session_metrics()["active_sessions"] == 3


def test_budget_error_is_a_data_too_large_error() -> None:
    assert issubclass(SessionOverMemoryBudgetError, SessionDataTooLargeError)  # so HTTP maps it to 413
