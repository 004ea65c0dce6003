"""SESSION_MEMORY_POLICY on the memory store: at its budget, `reject` refuses new sessions and keeps every
live one (a flood of anonymous creates cannot sign users out); `evict` ends the least recently active."""

from __future__ import annotations

import re

import pytest

from faultmaven.config import Settings
from faultmaven.exceptions import SessionStoreException, SessionStoreFullError
from faultmaven.lifecycle.counters import RECOVERED_AFTER_S, REFUSING_FOR_S
from faultmaven.observability.health import health_report
from faultmaven.session import Session
from faultmaven.session_management import SessionManager
from faultmaven.stores import MemoryStore
from tests.conftest import open_client
from tests.support import FakeClock, one_session_bytes


class Flood:
    """SIGNED_IN users, then FLOOD anonymous creates into a budget of BUDGET_MB, set through the settings as
    an operator sets it (SESSION_MAX_MEMORY_MB, SESSION_MEMORY_POLICY). The large scale is the real one;
    the small one checks the same rules in a fraction of the time, and stands in for the large one in the
    mutation run (which leaves the large cases out). `users_timeout`, on the small scale, puts the users in
    a lane of their own, so that eviction chooses its victims across lanes."""

    def __init__(self, signed_in: int, flood: int, budget_mb: float, users_timeout: float | None) -> None:
        self.signed_in, self.flood, self.budget_mb, self.users_timeout = signed_in, flood, budget_mb, users_timeout

    def manager(self, clock: FakeClock, policy: str) -> SessionManager:
        settings = Settings(max_memory_mb=self.budget_mb, memory_policy=policy, cleanup_enabled=False)
        return SessionManager(settings=settings, clock=clock)

    async def users(self, manager: SessionManager) -> list[Session]:
        timeout = self.users_timeout
        return [
            await manager.create_session(f"user-{i}", {"cart": i}, timeout_minutes=timeout)
            for i in range(self.signed_in)
        ]

    async def run(self, manager: SessionManager) -> tuple[int, int, list[str]]:
        """The anonymous creates: how many were stored and refused, and the ids of the stored ones."""
        stored: list[str] = []
        refused = 0
        for _ in range(self.flood):
            try:
                stored.append((await manager.create_session(None, {"note": "anonymous"})).session_id)
            except SessionStoreFullError:
                refused += 1
        return len(stored), refused, stored


SCALES = [
    pytest.param(Flood(10, 400, 0.02, 60), id="small"),  # about 20 KiB: some tens of sessions fit
    pytest.param(Flood(100, 20_000, 1, None), id="large"),
]


@pytest.mark.parametrize("scale", SCALES)
async def test_a_flood_of_anonymous_creates_keeps_every_signed_in_user(clock: FakeClock, scale: Flood) -> None:
    manager = scale.manager(clock, "reject")
    users = await scale.users(manager)
    clock.advance(1)
    stored, refused, _ = await scale.run(manager)
    assert refused > scale.flood // 2 and stored + refused == scale.flood
    alive = [await manager.get_session(s.session_id, user_id=s.user_id) for s in users]
    assert all(alive), f"{alive.count(None)} signed-in sessions lost"
    metrics = manager.get_session_metrics()
    assert metrics["sessions_rejected_total"] == refused
    assert metrics["sessions_evicted_total"] == 0
    assert metrics["active_sessions"] == scale.signed_in + stored
    assert manager.rejected_by_reason() == {"store_full": refused, "too_large": 0}
    assert manager.refusing_creates()


@pytest.mark.parametrize("scale", SCALES)
async def test_with_evict_the_flood_ends_the_least_recently_active(clock: FakeClock, scale: Flood) -> None:
    manager = scale.manager(clock, "evict")
    users = await scale.users(manager)
    clock.advance(1)
    stored, refused, ids = await scale.run(manager)
    assert (stored, refused) == (scale.flood, 0)
    alive = [await manager.get_session(s.session_id, user_id=s.user_id) for s in users]
    assert alive.count(None) == scale.signed_in
    metrics = manager.get_session_metrics()
    active = metrics["active_sessions"]
    assert isinstance(active, int) and 0 < active < scale.flood
    assert metrics["sessions_evicted_total"] == scale.signed_in + scale.flood - active
    assert metrics["sessions_rejected_total"] == 0
    assert not manager.refusing_creates()
    # The newest sessions are the ones kept: every eviction took the least recently active.
    kept = [await manager.get_session(sid) for sid in ids[-active:]]
    assert all(kept), f"{kept.count(None)} of the {active} newest sessions were evicted"


async def full_store(clock: FakeClock) -> tuple[SessionManager, list[str]]:
    """A manager whose store holds exactly as many sessions as fit; the next create is refused."""
    one = await one_session_bytes("u0", {"k": "v"})
    settings = Settings(cleanup_enabled=False, max_per_user=2)
    manager = SessionManager(MemoryStore(max_bytes=one * 4), settings=settings, clock=clock)
    ids = [(await manager.create_session(f"u{i}", {"k": "v"})).session_id for i in range(4)]
    with pytest.raises(SessionStoreFullError):
        await manager.create_session("u9", {"k": "v"})
    return manager, ids


async def test_at_the_budget_reads_heartbeats_updates_deletes_and_rotation_keep_working(clock: FakeClock) -> None:
    manager, ids = await full_store(clock)
    assert await manager.get_session(ids[0]) is not None
    assert await manager.touch_session(ids[1]) is not None
    assert (await manager.update_session(ids[2], {"k": "w"})).data == {"k": "w"}  # same size: no growth
    rotated = await manager.rotate_session(ids[3])
    assert await manager.get_session(rotated.session_id) is not None
    assert await manager.delete_session(ids[0])
    clock.advance(RECOVERED_AFTER_S)
    assert (await manager.create_session("u9", {"k": "v"})).user_id == "u9"  # the freed room is used
    assert not manager.refusing_creates()


async def test_a_create_that_fills_a_freed_slot_soon_after_a_refusal_keeps_the_store_full_report(
    clock: FakeClock,
) -> None:
    """A cleanup that frees a few slots of a full store lets a create or two through between refusals:
    /health goes on saying the store is full rather than flapping to healthy and back."""
    manager, ids = await full_store(clock)
    clock.advance(RECOVERED_AFTER_S - 0.5)
    assert await manager.delete_session(ids[0])
    await manager.create_session("u9", {"k": "v"})
    assert manager.refusing_creates()
    reasons = health_report(manager)["services"]["session_manager"]["reasons"]
    assert "session store full: new sessions are refused (503, SESSION_MEMORY_POLICY=reject)" in reasons
    clock.advance(0.5)  # a create RECOVERED_AFTER_S after the last refusal: the store has recovered
    assert await manager.delete_session(ids[1])
    await manager.create_session("u8", {"k": "v"})
    assert not manager.refusing_creates()


async def test_an_update_that_grows_past_the_budget_is_refused_and_changes_nothing(clock: FakeClock) -> None:
    manager, ids = await full_store(clock)
    clock.advance(REFUSING_FOR_S)  # the refused create no longer counts as refusing
    assert not manager.refusing_creates()
    with pytest.raises(SessionStoreFullError):
        await manager.update_session(ids[0], {"k": "v" * 500})
    assert manager.refusing_creates()  # from the refused update on
    reasons = health_report(manager)["services"]["session_manager"]["reasons"]
    assert "session store full: new sessions are refused (503, SESSION_MEMORY_POLICY=reject)" in reasons
    session = await manager.get_session(ids[1])
    assert session is not None
    others = [await manager.get_session(sid) for sid in ids]
    assert all(others) and others[0] is not None and others[0].data == {"k": "v"}
    assert manager.get_session_metrics()["sessions_rejected_total"] == 2


async def test_a_refused_create_ends_none_of_the_users_sessions(clock: FakeClock) -> None:
    """The user is at SESSION_MAX_PER_USER (2): a create that fits once the user's oldest session ends
    goes ahead; one that would not fit even then is refused before the oldest is ended."""
    manager, ids = await full_store(clock)
    await manager.delete_session(ids[0])
    await manager.delete_session(ids[1])
    mine = []
    for _ in range(2):
        clock.advance(1)
        mine.append((await manager.create_session("me", {"k": "v"})).session_id)
    third = await manager.create_session("me", {"k": "w"})  # ends mine[0], then fits in its room
    assert await manager.get_session(mine[0]) is None
    assert manager.get_session_metrics()["sessions_user_limit_total"] == 1
    with pytest.raises(SessionStoreFullError):
        await manager.create_session("me", {"k": "v" * 200})
    assert await manager.get_session(mine[1]) is not None and await manager.get_session(third.session_id)
    assert manager.get_session_metrics()["sessions_user_limit_total"] == 1


async def test_expired_sessions_make_room_before_a_create_is_refused(clock: FakeClock) -> None:
    manager, _ = await full_store(clock)
    clock.advance(minutes=31)
    created = await manager.create_session("u9", {"k": "v"})
    assert await manager.get_session(created.session_id) is not None
    assert await manager.cleanup_inactive_sessions() == 0  # the create removed the expired ones (one batch)
    assert manager.store.stats(clock()).stored == 1


async def test_a_refused_create_is_a_503_with_retry_after_and_health_says_why(clock: FakeClock) -> None:
    manager, _ = await full_store(clock)
    async for client in open_client(manager):
        response = await client.post("/api/v1/sessions", json={"data": {"k": "v"}})
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "30"
        assert "full" in response.json()["detail"]
        health = (await client.get("/health")).json()
        assert health["status"] == "degraded"
        reasons = health["services"]["session_manager"]["reasons"]
        assert any("new sessions are refused" in r for r in reasons), reasons
        exported = (await client.get("/metrics")).text
        assert re.search(r'^faultmaven_sessions_rejected_total\{reason="store_full"\} 2\.0$', exported, re.M)
        assert re.search(r'^faultmaven_sessions_rejected_total\{reason="too_large"\} 0\.0$', exported, re.M)


def test_the_policy_and_the_reserve_are_validated() -> None:
    assert Settings().memory_policy == "reject" and Settings().redis_memory_reserve == 0.10
    assert Settings.from_env({"SESSION_MEMORY_POLICY": "Evict"}).memory_policy == "evict"
    for bad in ({"SESSION_MEMORY_POLICY": "lru"}, {"SESSION_REDIS_MEMORY_RESERVE": "0.95"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            Settings.from_env(bad)
    with pytest.raises(ValueError):
        MemoryStore(policy="lru")
    assert issubclass(SessionStoreFullError, SessionStoreException)


async def test_at_the_budget_a_returning_client_still_resumes(clock: FakeClock) -> None:
    manager, ids = await full_store(clock)
    await manager.delete_session(ids[0])
    await manager.delete_session(ids[1])  # a session with a client id costs more: room for it and no more
    mine = await manager.create_session("me", {"k": "v"}, client_id="browser-0001")
    with pytest.raises(SessionStoreFullError):
        await manager.create_session("other", {"k": "v"})
    again = await manager.create_session("me", {"k": "v"}, client_id="browser-0001")
    assert again.session_resumed and again.session_id == mine.session_id
