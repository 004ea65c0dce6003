"""The expiry lists at their edges: the absolute lifetime's pass (its exact deadline, batch limit and
excluded sessions), the expired count when time goes back, and what a read returns. Each test kills
mutants `tox -e mutation` found alive (perf/mutation-survivors.md)."""

from __future__ import annotations

import logging
import re
import tracemalloc
from collections.abc import Callable

import pytest

from faultmaven.config import Settings
from faultmaven.session import SessionEnd, SessionRecord
from faultmaven.session_management import SessionManager
from faultmaven.stores import Endings, MemoryStore
from faultmaven.stores.sizing import session_bytes
from tests.support import EPOCH, FakeClock, StoreLines
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


async def idle_and_expired(idle: int, expired: int) -> tuple[MemoryStore, float]:
    """`expired` sessions past their 30 min timeout and `idle` ones 20 min idle under a 60 min timeout."""
    store = MemoryStore()
    for _ in range(expired):
        await store.create(record(created=EPOCH, timeout_s=1800), EPOCH)
    for i in range(idle):
        await store.create(record(created=EPOCH + 600 + i, timeout_s=3600), EPOCH + 600 + i)
    return store, EPOCH + 1800 + 600 + idle


async def test_a_max_age_batch_respects_its_limit_across_both_passes_and_sums_both() -> None:
    store, now = await idle_and_expired(idle=25, expired=10)
    unit = store.stats(now).memory_bytes // 35  # type: ignore[operator]
    ended = Endings()
    first = await store.remove_idle(now, 600.0, 12, set(), report=ended.absorb)
    assert (first.removed, ended.counts, first.exhausted) == (12, {"expired": 10, "idle": 2}, False)
    assert ended.freed_bytes == 12 * unit
    assert ended.lifetime_s == 0.0
    batches = []
    for _ in range(3):
        ended = Endings()
        batch = await store.remove_idle(now, 600.0, 12, set(), report=ended.absorb)
        batches.append((batch.removed, ended.counts.get("idle", 0), batch.exhausted))
    assert batches == [(12, 12, False), (11, 11, True), (0, 0, True)]
    assert store.stats(now).stored == 0


async def test_one_batch_adds_up_bytes_and_lifetimes_over_its_passes() -> None:
    store = MemoryStore()
    expired = record(created=EPOCH, active=EPOCH + 5, timeout_s=60)
    idle = record(created=EPOCH, active=EPOCH + 7, timeout_s=3600)
    old = record(created=EPOCH, active=EPOCH + 50, timeout_s=3600, absolute_at=EPOCH + 100)
    for r in (expired, idle, old):
        await store.create(r, r.last_activity)
    ended = Endings()
    result = await store.remove_idle(
        EPOCH + 101, 90.0, 10, set(), report=ended.absorb
    )  # one per pass: expired, idle, absolute
    assert (result.removed, ended.counts) == (3, {"expired": 2, "idle": 1})
    assert ended.freed_bytes == sum(session_bytes(r.session_id, None, r.blob) for r in (expired, idle, old))
    assert ended.lifetime_s == 5 + 7 + 50


async def test_a_max_age_cleanup_reports_each_ending_as_idle_or_expired(clock: FakeClock) -> None:
    settings = Settings(cleanup_enabled=False, absolute_timeout_minutes=120)
    manager = SessionManager(MemoryStore(), settings=settings, clock=clock)
    seen: list[SessionEnd] = []
    manager.add_session_end_listener(seen.append)
    at_deadline = (await manager.create_session(timeout_minutes=240)).session_id
    clock.advance(minutes=60)
    idle = [(await manager.create_session(timeout_minutes=240)).session_id for _ in range(2)]
    clock.advance(minutes=60)  # the first is at its absolute deadline exactly; the others idle 60 min
    assert await manager.cleanup_inactive_sessions(max_age_minutes=60) == 3
    await manager.flush_session_ends()
    assert {e.session_id: e.reason for e in seen} == {at_deadline: "expired", idle[0]: "idle", idle[1]: "idle"}
    assert len(seen) == 3
    assert manager.ended_by_reason()["idle"] == 2 and manager.ended_by_reason()["expired"] == 1
    await manager.close()


async def test_a_batch_that_empties_the_store_exactly_leaves_it_ready_for_new_sessions() -> None:
    """The batch is full when the lanes are empty, so the absolute pass (which relinks the creation list
    as a side effect) does not run: the lanes pass alone must leave the creation list empty and valid."""
    store = MemoryStore()
    for round_ in range(3):
        start = EPOCH + 100 * round_
        for _ in range(5):
            await store.create(record(created=start, timeout_s=60), start)
        assert (await store.remove_idle(start + 60, None, 5, set())).removed == 5
    await store.create(record(created=EPOCH + 300, timeout_s=60), EPOCH + 300)
    assert store.stats(EPOCH + 300).stored == 1


async def test_a_max_age_cleanup_leaves_excluded_idle_sessions() -> None:
    store, now = await idle_and_expired(idle=4, expired=0)
    keep = next(iter(store.index.frozen()))
    result = await store.remove_idle(now, 600.0, 10, {keep})
    assert (result.removed, result.exhausted) == (3, False)  # an excluded session may still be due
    assert await store.touch(keep, now) is not None


def lines_run(call: Callable[[], object]) -> int:
    with StoreLines() as lines:
        call()
    return lines.count


async def test_counting_expired_sessions_again_costs_nothing_per_session_already_counted() -> None:
    """The expired count walks only sessions that expired since the last count, in the lanes and in the
    creation list, also after a deletion or a rotation at the counting frontier."""
    store = MemoryStore()

    def made(at: float, timeout_s: float) -> SessionRecord:  # a 500 s absolute lifetime for all
        return record(created=at, timeout_s=timeout_s, absolute_at=at + 500)

    idle = [made(EPOCH + i, 60) for i in range(200)]  # idle-expired by EPOCH + 260
    old = [made(EPOCH + 200 + i, 10**5) for i in range(200)]  # past their lifetime by EPOCH + 900
    for r in idle + old:
        await store.create(r, r.created_at)
    now = EPOCH + 1000
    assert store.stats(now).expired == 400
    again = lines_run(lambda: store.stats(now))
    assert again < 60
    await store.delete(idle[-1].session_id, now)  # the lane's frontier
    await store.delete(old[-1].session_id, now)  # the creation list's frontier
    await store.rotate(idle[-2].session_id, "r" * 43, now)  # the lane's new frontier
    assert lines_run(lambda: store.stats(now)) <= again
    assert store.stats(now).expired == 398


async def test_an_absolute_removal_leaves_the_lane_count_of_excluded_expired_sessions_right() -> None:
    """a and b expired by idleness and excluded from this batch; c, last active in their lane, past its
    absolute lifetime: c goes, and a and b are still counted as expired (nothing counted them before)."""
    store = MemoryStore()
    c = record(created=EPOCH, timeout_s=100, absolute_at=EPOCH + 500)
    a = record(created=EPOCH + 10, timeout_s=100, absolute_at=EPOCH + 510)
    b = record(created=EPOCH + 20, timeout_s=100, absolute_at=EPOCH + 520)
    for r in (c, a, b):
        await store.create(r, r.created_at)
    for at in range(90, 451, 90):  # the creation list: c, a, b; the lane: a, b, c
        assert await store.touch(c.session_id, EPOCH + at) is not None
    result = await store.remove_idle(EPOCH + 505, None, 10, {a.session_id, b.session_id})
    assert result.removed == 1 and store.stats(EPOCH + 505).expired == 2


async def test_listeners_hear_of_a_cleanup_only_after_it_ends(clock: FakeClock) -> None:
    """Endings are queued during the run (its batches yield to the event loop) and delivered after it."""
    manager = SessionManager(
        MemoryStore(), settings=Settings(cleanup_enabled=False, cleanup_batch_size=10), clock=clock
    )
    runs_seen: list[object] = []
    manager.add_session_end_listener(lambda end: runs_seen.append(manager.get_session_metrics()["cleanup_runs"]))
    for _ in range(30):
        await manager.create_session()
    clock.advance(minutes=30)
    assert await manager.cleanup_inactive_sessions() == 30
    await manager.flush_session_ends()
    assert runs_seen == [1] * 30
    await manager.close()


async def test_cleanups_add_their_lifetimes_and_audit_their_reason(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    manager = SessionManager(MemoryStore(), settings=Settings(cleanup_enabled=False), clock=clock)
    caplog.set_level(logging.INFO, "faultmaven")
    for _ in range(2):
        sid = (await manager.create_session()).session_id
        clock.advance(60)
        await manager.touch_session(sid)  # each lives 60 s
    clock.advance(minutes=30)
    assert await manager.cleanup_inactive_sessions() == 2
    await manager.create_session()
    clock.advance(minutes=10)
    assert await manager.cleanup_inactive_sessions(max_age_minutes=7.5) == 1  # lived 0 s
    assert manager.get_session_metrics()["average_session_duration"] == pytest.approx(120 / 3)
    runs = [r.audit for r in caplog.records if r.getMessage() == "Session cleanup completed"]  # type: ignore[attr-defined]
    assert [run["reason"] for run in runs] == ["expired", "expired or idle for at least 7.5 minutes"]
    assert all(re.fullmatch(r"[0-9a-f]{12}", run["run_id"]) for run in runs) and runs[0]["run_id"] != runs[1]["run_id"]
    await manager.close()


async def test_idle_removals_are_counted_in_both_lane_passes() -> None:
    """With a max age, the deadline pass also takes idle sessions behind an expired head; the idle pass
    takes those of lanes not due by deadline. One batch counts both."""
    store = MemoryStore()
    expired = record(created=EPOCH, timeout_s=60)
    behind = record(created=EPOCH + 50, timeout_s=60)  # not expired at EPOCH + 100, but idle 50 s
    other = record(created=EPOCH + 10, timeout_s=3600)  # idle 90 s
    for r in (expired, other, behind):
        await store.create(r, r.created_at)
    ended = Endings()
    result = await store.remove_idle(EPOCH + 100, 40.0, 10, set(), report=ended.absorb)
    assert (result.removed, ended.counts) == (3, {"expired": 1, "idle": 2})


@pytest.mark.parametrize("kind", ["idle", "absolute"])
async def test_a_batch_with_one_place_left_still_runs_the_next_pass(kind: str) -> None:
    store = MemoryStore()
    for _ in range(2):
        await store.create(record(created=EPOCH, timeout_s=60), EPOCH)
    if kind == "idle":
        last = record(created=EPOCH, timeout_s=3600)  # idle 100 s under a 40 s max age
    else:
        last = record(created=EPOCH, timeout_s=3600, absolute_at=EPOCH + 100)
    await store.create(last, EPOCH)
    result = await store.remove_idle(EPOCH + 100, 40.0 if kind == "idle" else None, 3, set())
    assert (result.removed, result.exhausted) == (3, False)
    assert store.stats(EPOCH + 100).stored == 0


@pytest.mark.parametrize("rounds", [pytest.param(300, id="small"), pytest.param(2000, id="large")])
async def test_ended_anonymous_client_sessions_leave_no_memory_behind(clock: FakeClock, rounds: int) -> None:
    """The resume pair of a removed session goes with it: a second round of sessions with new client ids,
    created and cleaned up, leaves the traced memory where the first round left it. (The mutation run
    leaves the large case out.)"""
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
