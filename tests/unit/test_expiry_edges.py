"""The expiry lists at their edges: the absolute lifetime's pass (its exact deadline, batch limit and
excluded sessions), the expired count when time goes back, and what a read returns. Each test kills
mutants `tox -e mutation` found alive (perf/mutation-survivors.md)."""

from __future__ import annotations

import logging

import pytest

from faultmaven.config import Settings
from faultmaven.session import SessionRecord
from faultmaven.session_management import SessionManager
from faultmaven.stores import MemoryStore
from tests.support import EPOCH, FakeClock
from tests.support import session_record as record

ABSOLUTE = 3600.0


def past_absolute(n: int) -> list[SessionRecord]:
    """n sessions one second apart, long idle timeouts, an hour's absolute lifetime."""
    return [record(created=EPOCH + i, timeout_s=10 * ABSOLUTE, absolute_at=EPOCH + i + ABSOLUTE) for i in range(n)]


async def stored(n: int) -> tuple[MemoryStore, list[str]]:
    store = MemoryStore()
    records = past_absolute(n)
    for r in records:
        await store.create(r, r.created_at)
    return store, [r.session_id for r in records]


async def test_the_absolute_pass_ends_a_session_exactly_at_its_deadline_and_counts_it() -> None:
    store, ids = await stored(3)
    at = EPOCH + 1 + ABSOLUTE  # the second session's deadline, exactly
    assert store.stats(at).expired == 2
    result = await store.remove_idle(at, None, 10, set())
    assert (result.removed, result.exhausted) == (2, True)
    assert store.stats(at).stored == 1 and store.stats(at).expired == 0
    assert await store.touch(ids[2], at) is not None


async def test_the_absolute_pass_stops_at_the_batch_limit() -> None:
    store, _ = await stored(25)
    at = EPOCH + 30 + ABSOLUTE
    assert [(await store.remove_idle(at, None, 10, set())).removed for _ in range(4)] == [10, 10, 5, 0]
    assert store.stats(at).stored == 0


async def test_the_absolute_pass_leaves_excluded_sessions_in_place() -> None:
    store, ids = await stored(5)
    at = EPOCH + 10 + ABSOLUTE
    result = await store.remove_idle(at, None, 10, {ids[1], ids[3]})
    assert result.removed == 3
    assert store.stats(at).stored == 2 and store.stats(at).expired == 2
    result = await store.remove_idle(at, None, 10, set())  # the excluded ones, still in the creation list
    assert result.removed == 2 and store.stats(at).stored == 0


async def test_the_expired_count_is_right_when_time_goes_back_and_forth() -> None:
    store, _ = await stored(6)
    times = [EPOCH + 4 + ABSOLUTE, EPOCH + 1 + ABSOLUTE, EPOCH + 1 + ABSOLUTE, EPOCH + 5 + ABSOLUTE, EPOCH]
    assert [store.stats(t).expired for t in times] == [5, 2, 2, 6, 0]
    assert store.stats(EPOCH + 2 + ABSOLUTE).stored == 6


async def test_a_read_returns_the_type_and_metadata_it_was_created_with(clock: FakeClock) -> None:
    manager = SessionManager(MemoryStore(), settings=Settings(cleanup_enabled=False), clock=clock)
    sid = (await manager.create_session(session_type="incident.v2", metadata={"tab": 3})).session_id
    got = await manager.get_session(sid)
    assert got is not None and (got.session_type, got.metadata) == ("incident.v2", {"tab": 3})
    await manager.close()


async def test_a_manual_cleanup_is_audited_as_manual(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    manager = SessionManager(MemoryStore(), settings=Settings(cleanup_enabled=False), clock=clock)
    caplog.set_level(logging.INFO, "faultmaven")
    await manager.cleanup_inactive_sessions()
    (run,) = [r for r in caplog.records if r.getMessage() == "Session cleanup completed"]
    assert run.audit["trigger"] == "manual"  # type: ignore[attr-defined]
    await manager.close()


async def test_depth_is_checked_past_a_scalar(manager: SessionManager) -> None:
    deep: object = 1
    for _ in range(70):
        deep = [deep]
    with pytest.raises(ValueError, match="nested too deeply"):
        await manager.create_session(None, {"deep": deep, "z": 1})  # "z" is checked first
