"""The rules of a few slow tests, on a smaller scale: the same assertions through the public API, in a
fraction of the time. The mutation run (`tox -e mutation`) runs these in place of the slow ones, since a
mutant that survives runs every test reaching its function; the default suite runs both.

- a flood of anonymous creates at the budget: `reject` keeps every signed-in user, `evict` ends the
  least recently active (tests/unit/test_store_full.py, 20,000 creates into 1 MiB);
- the work a cleanup does follows what expired, not what is stored
  (tests/unit/test_session_management_enhanced.py, beside 5,000 live sessions);
- an ended session with a client id leaves no memory behind (tests/unit/test_expiry_edges.py, 2,000);
- removals that fail are counted, run after run, and a later run removes them
  (tests/integration/test_faults.py, 3,000 sessions in a store failing at random).
"""

from __future__ import annotations

import tracemalloc

import pytest

from faultmaven.config import Settings
from faultmaven.exceptions import SessionStoreFullError
from faultmaven.session_management import SessionManager
from faultmaven.stores import MemoryStore
from tests.support import FakeClock, PoisonStore, StoreLines

SIGNED_IN = 10
FLOOD = 400
BUDGET_MB = 0.02  # about 20 KiB: room for some tens of sessions, so the flood fills it many times over


def flooded(clock: FakeClock, policy: str) -> SessionManager:
    """Through the settings, as an operator sets it: SESSION_MAX_MEMORY_MB and SESSION_MEMORY_POLICY."""
    settings = Settings(max_memory_mb=BUDGET_MB, memory_policy=policy, cleanup_enabled=False)
    return SessionManager(settings=settings, clock=clock)


async def flood(manager: SessionManager) -> tuple[int, int, list[str]]:
    """FLOOD anonymous creates: how many were stored and refused, and the ids of the stored ones."""
    stored: list[str] = []
    refused = 0
    for _ in range(FLOOD):
        try:
            stored.append((await manager.create_session(None, {"note": "anonymous"})).session_id)
        except SessionStoreFullError:
            refused += 1
    return len(stored), refused, stored


async def test_reject_keeps_every_signed_in_user_through_a_flood(clock: FakeClock) -> None:
    manager = flooded(clock, "reject")
    users = [await manager.create_session(f"user-{i}", {"cart": i}) for i in range(SIGNED_IN)]
    clock.advance(1)
    stored, refused, _ = await flood(manager)
    assert refused > FLOOD // 2 and stored + refused == FLOOD
    alive = [await manager.get_session(s.session_id, user_id=s.user_id) for s in users]
    assert all(alive), f"{alive.count(None)} signed-in sessions lost"
    metrics = manager.get_session_metrics()
    assert metrics["sessions_rejected_total"] == refused
    assert metrics["sessions_evicted_total"] == 0
    assert metrics["active_sessions"] == SIGNED_IN + stored
    assert manager.rejected_by_reason() == {"store_full": refused, "too_large": 0}
    assert manager.refusing_creates()


async def test_evict_ends_the_least_recently_active_through_a_flood(clock: FakeClock) -> None:
    manager = flooded(clock, "evict")
    # A timeout of their own puts the users in a lane of their own: the victim is chosen across lanes.
    users = [await manager.create_session(f"user-{i}", {"cart": i}, timeout_minutes=60) for i in range(SIGNED_IN)]
    clock.advance(1)
    stored, refused, ids = await flood(manager)
    assert (stored, refused) == (FLOOD, 0)
    alive = [await manager.get_session(s.session_id, user_id=s.user_id) for s in users]
    assert alive.count(None) == SIGNED_IN
    metrics = manager.get_session_metrics()
    active = metrics["active_sessions"]
    assert isinstance(active, int) and 0 < active < FLOOD
    assert metrics["sessions_evicted_total"] == SIGNED_IN + FLOOD - active
    assert metrics["sessions_rejected_total"] == 0
    assert not manager.refusing_creates()
    # The newest sessions are the ones kept: every eviction took the least recently active.
    kept = [await manager.get_session(sid) for sid in ids[-active:]]
    assert all(kept), f"{kept.count(None)} of the {active} newest sessions were evicted"


async def lines_of_a_cleanup(clock: FakeClock, live: int, timeouts: int, max_age: float | None) -> int:
    """Lines the store executes in a cleanup that removes 20 expired sessions beside `live` live ones
    spread over `timeouts` distinct timeouts."""
    manager = SessionManager(MemoryStore(), settings=Settings(cleanup_batch_size=50), clock=clock)
    for i in range(20):
        await manager.create_session(f"user-{i}", {"i": i})
    clock.advance(minutes=31)
    for i in range(live):
        await manager.create_session(timeout_minutes=60 + i % timeouts)
    with StoreLines() as lines:
        removed = await manager.cleanup_inactive_sessions(max_age)
    assert removed == 20
    return lines.count


@pytest.mark.parametrize("max_age", [None, 31.0])
async def test_cleanup_work_follows_expired_sessions_not_stored(clock: FakeClock, max_age: float | None) -> None:
    small = await lines_of_a_cleanup(clock, 50, 1, max_age)
    large = await lines_of_a_cleanup(clock, 500, 1, max_age)
    spread = await lines_of_a_cleanup(clock, 500, 40, max_age)
    assert small > 20 * 5  # the trace did see the loop
    assert large == small
    assert spread == small


async def test_ended_client_sessions_leave_no_memory_behind(clock: FakeClock) -> None:
    """The resume pair of a removed session goes with it: a second round of sessions with new client ids,
    created and cleaned up, leaves the traced memory where the first round left it."""
    rounds = 300
    manager = SessionManager(MemoryStore(), settings=Settings(cleanup_enabled=False), clock=clock)

    async def round_trip(tag: str) -> None:
        for i in range(rounds):
            await manager.create_session(None, client_id=f"client-{tag}-{i:05d}")
        clock.advance(minutes=30)
        assert await manager.cleanup_inactive_sessions() == rounds

    tracemalloc.start()
    try:
        await round_trip("first")  # grows the dicts to their working size
        before = tracemalloc.get_traced_memory()[0]
        await round_trip("second")
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert after - before < rounds * 20  # a stale resume pair alone costs ~150 B
    await manager.close()


async def test_failed_removals_add_up_run_after_run_and_a_later_run_removes_them(clock: FakeClock) -> None:
    store = PoisonStore()
    manager = SessionManager(store, settings=Settings(cleanup_batch_size=5, cleanup_enabled=False), clock=clock)
    ids = [(await manager.create_session()).session_id for _ in range(12)]
    store.poison = {ids[1], ids[7]}
    clock.advance(minutes=31)
    assert await manager.cleanup_inactive_sessions() == 10  # the run completes past its failures
    assert manager.get_session_metrics()["cleanup_errors_total"] == 2
    assert await manager.cleanup_inactive_sessions() == 0
    assert manager.get_session_metrics()["cleanup_errors_total"] == 4  # a total: each run adds its own
    store.poison = set()
    assert await manager.cleanup_inactive_sessions() == 2
    metrics = manager.get_session_metrics()
    assert metrics["cleanup_errors_total"] == 4 and metrics["active_sessions"] == 0
