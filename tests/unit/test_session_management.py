"""The manager's rules: expiry, cleanup, batching under concurrent use, scheduler and metrics."""

from __future__ import annotations

import asyncio
import math
import random
from datetime import UTC, timedelta

import pytest

from faultmaven.config import Settings
from faultmaven.exceptions import SessionCleanupException, SessionDataTooLargeError, SessionNotFoundError
from faultmaven.lifecycle.scheduler import CleanupScheduler
from faultmaven.session import is_valid_id
from faultmaven.session_management import SessionManager
from faultmaven.stores import BatchResult, MemoryStore
from tests.support import DownStore, FakeClock, HookedStore, PoisonStore, StoreLines, UntouchableStore

TIMEOUT_S = 30 * 60


async def make_sessions(manager: SessionManager, n: int) -> list[str]:
    return [(await manager.create_session(f"user-{i}", {"i": i})).session_id for i in range(n)]


# -- the spec's four tests ----------------------------------------------------------------------------


async def test_cleanup_success(manager: SessionManager, clock: FakeClock) -> None:
    expired = await make_sessions(manager, 25)
    clock.advance(minutes=20)
    live = await make_sessions(manager, 5)
    clock.advance(minutes=10)  # the first 25 are idle exactly 30 minutes: expired at that instant

    assert await manager.cleanup_inactive_sessions() == 25
    assert len(manager.store) == 5  # type: ignore[arg-type]
    for sid in expired:
        assert await manager.get_session(sid) is None
    for sid in live:
        assert await manager.get_session(sid) is not None
    metrics = manager.get_session_metrics()
    assert metrics["sessions_cleaned_total"] == 25
    assert metrics["cleanup_runs"] == 1
    assert metrics["last_cleanup_time"] == clock.now


async def test_cleanup_partial_failure(settings: Settings, clock: FakeClock) -> None:
    store = PoisonStore()
    manager = SessionManager(store, settings=settings, clock=clock)
    ids = await make_sessions(manager, 40)
    store.poison = {ids[0], ids[7], ids[33]}
    clock.advance(minutes=31)

    assert await manager.cleanup_inactive_sessions() == 37
    assert len(store) == 3  # the failed sessions stay; nothing else is lost
    metrics = manager.get_session_metrics()
    assert metrics["cleanup_errors_total"] == 3
    assert metrics["sessions_cleaned_total"] == 37
    assert metrics["cleanup_runs"] == 1

    store.poison.clear()  # the next run removes what failed before
    assert await manager.cleanup_inactive_sessions() == 3
    assert len(store) == 0


async def test_scheduler_lifecycle(settings: Settings, clock: FakeClock) -> None:
    scheduler = CleanupScheduler()
    manager = SessionManager(MemoryStore(), settings=settings, clock=clock, scheduler=scheduler)
    await make_sessions(manager, 30)
    clock.advance(minutes=31)

    await manager.start_cleanup_scheduler(interval_minutes=0.0005)  # 30 ms of real time
    first_task = scheduler.task
    await manager.start_cleanup_scheduler(interval_minutes=0.0005)  # idempotent: same task
    assert scheduler.task is first_task is not None
    assert manager.get_session_metrics()["scheduler_running"] is True

    async with asyncio.timeout(30):
        while manager.get_session_metrics()["sessions_cleaned_total"] < 30:
            await asyncio.sleep(0.01)

    await manager.stop_cleanup_scheduler()
    assert manager.get_session_metrics()["scheduler_running"] is False
    assert first_task is not None and first_task.done()
    await manager.stop_cleanup_scheduler()  # idempotent
    runs = manager.get_session_metrics()["cleanup_runs"]
    assert runs >= 1
    await manager.start_cleanup_scheduler(interval_minutes=0.0005)  # restartable
    assert manager.get_session_metrics()["scheduler_running"] is True
    await manager.stop_cleanup_scheduler()


async def test_metrics_accuracy(manager: SessionManager, clock: FakeClock) -> None:
    empty = manager.get_session_metrics()
    assert empty["memory_usage_mb"] == 0
    assert empty["average_session_duration"] is None
    assert empty["last_cleanup_time"] is None

    a, b, _c, _d = await make_sessions(manager, 4)
    clock.advance(100)
    await manager.touch_session(a)  # a lasts 100 s so far
    clock.advance(50)
    await manager.touch_session(b)  # b lasts 150 s so far
    assert await manager.delete_session(a) is True  # ended after 100 s
    metrics = manager.get_session_metrics()
    assert (metrics["active_sessions"], metrics["expired_sessions"]) == (3, 0)
    assert metrics["average_session_duration"] == pytest.approx(100.0)
    assert metrics["memory_usage_mb"] > 0

    clock.advance(TIMEOUT_S - 150)  # c and d idle exactly the timeout; b idle 1650 s
    metrics = manager.get_session_metrics()
    assert (metrics["active_sessions"], metrics["expired_sessions"]) == (1, 2)

    assert await manager.cleanup_inactive_sessions() == 2  # c and d, each lasted 0 s
    metrics = manager.get_session_metrics()
    assert (metrics["active_sessions"], metrics["expired_sessions"]) == (1, 0)
    assert metrics["average_session_duration"] == pytest.approx(100 / 3)
    assert metrics["sessions_cleaned_total"] == 2
    assert metrics["cleanup_errors_total"] == 0
    assert metrics["last_cleanup_duration_ms"] is not None and metrics["last_cleanup_duration_ms"] >= 0

    assert await manager.delete_session(b) is True
    assert manager.get_session_metrics()["memory_usage_mb"] == 0  # back to empty exactly


# -- expiry rules -------------------------------------------------------------------------------------


async def test_expiry_boundary_is_inclusive(manager: SessionManager, clock: FakeClock) -> None:
    sid = (await manager.create_session()).session_id
    clock.advance(TIMEOUT_S - 0.001)
    assert await manager.touch_session(sid) is not None  # resets the idle time
    clock.advance(TIMEOUT_S)
    assert await manager.get_session(sid) is None  # idle == timeout: expired
    assert manager.get_session_metrics()["expired_sessions"] == 1


async def test_activity_never_revives_an_expired_session(manager: SessionManager, clock: FakeClock) -> None:
    sid = (await manager.create_session(data={"k": "v"})).session_id
    clock.advance(TIMEOUT_S + 1)
    assert await manager.touch_session(sid) is None
    assert await manager.get_session(sid) is None
    with pytest.raises(SessionNotFoundError):
        await manager.update_session(sid, {"k": "w"})
    clock.advance(-TIMEOUT_S)  # even a clock that steps back does not bring it back
    assert await manager.get_session(sid) is None
    assert await manager.delete_session(sid) is False  # expired: removed, reported as not live
    assert len(manager.store) == 0  # type: ignore[arg-type]


async def test_get_returns_snapshot_after_activity(manager: SessionManager, clock: FakeClock) -> None:
    created = await manager.create_session("u1", {"x": [1, 2]})
    assert created.created_at.tzinfo is UTC
    assert created.expires_at - created.last_activity == timedelta(minutes=30)
    clock.advance(42)
    got = await manager.get_session(created.session_id)
    assert got is not None
    assert got.last_activity == created.last_activity + timedelta(seconds=42)
    assert got.created_at == created.created_at
    got.data["x"].append(3)  # a snapshot: changing it changes nothing stored
    again = await manager.get_session(created.session_id)
    assert again is not None and again.data == {"x": [1, 2]}


async def test_update_replaces_data_and_counts_as_activity(manager: SessionManager, clock: FakeClock) -> None:
    sid = (await manager.create_session(data={"a": 1})).session_id
    clock.advance(TIMEOUT_S - 1)
    updated = await manager.update_session(sid, {"b": 2})
    assert updated.data == {"b": 2}
    clock.advance(TIMEOUT_S - 1)
    assert (await manager.get_session(sid)) is not None


async def test_ids_are_secret_tokens(manager: SessionManager) -> None:
    ids = {(await manager.create_session()).session_id for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) == 43 and is_valid_id(i) for i in ids)


@pytest.mark.parametrize(
    "bad", ["", "short", "x" * 42, "x" * 44, "a" * 42 + "!", "../" + "a" * 40, None, 12, b"a" * 43, "é" * 43]
)
async def test_malformed_ids_never_reach_the_store(bad: object, settings: Settings, clock: FakeClock) -> None:
    manager = SessionManager(UntouchableStore(), settings=settings, clock=clock)
    assert await manager.get_session(bad) is None  # type: ignore[arg-type]
    assert await manager.touch_session(bad) is None  # type: ignore[arg-type]
    assert await manager.delete_session(bad) is False  # type: ignore[arg-type]
    with pytest.raises(SessionNotFoundError):
        await manager.update_session(bad, {})  # type: ignore[arg-type]


async def test_oversized_data_is_refused_and_changes_nothing(clock: FakeClock) -> None:
    manager = SessionManager(MemoryStore(), settings=Settings(max_data_bytes=100), clock=clock)
    with pytest.raises(SessionDataTooLargeError):
        await manager.create_session(data={"v": "x" * 100})
    assert len(manager.store) == 0  # type: ignore[arg-type]
    sid = (await manager.create_session(data={"v": "small"})).session_id
    before = manager.get_session_metrics()["memory_usage_mb"]
    with pytest.raises(SessionDataTooLargeError):
        await manager.update_session(sid, {"v": "é" * 50})  # 100 bytes of UTF-8 plus the JSON around it
    session = await manager.get_session(sid)
    assert session is not None and session.data == {"v": "small"}
    assert manager.get_session_metrics()["memory_usage_mb"] == before


@pytest.mark.parametrize("data", [["not", "a", "dict"], {"f": float("nan")}, {"o": object()}])
async def test_non_json_data_is_a_clear_error(manager: SessionManager, data: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        await manager.create_session(data=data)  # type: ignore[arg-type]
    assert len(manager.store) == 0  # type: ignore[arg-type]


async def test_deeply_nested_data_is_a_clear_error(manager: SessionManager) -> None:
    data: dict[str, object] = {}
    for _ in range(100_000):
        data = {"d": data}
    with pytest.raises(ValueError, match="nested"):
        await manager.create_session(data=data)


async def test_user_id_is_validated(manager: SessionManager) -> None:
    with pytest.raises(ValueError):
        await manager.create_session(user_id="u" * 257)
    with pytest.raises(ValueError):
        await manager.create_session(user_id=5)  # type: ignore[arg-type]


# -- cleanup rules ------------------------------------------------------------------------------------


async def test_zero_candidates_is_a_normal_run(manager: SessionManager) -> None:
    assert await manager.cleanup_inactive_sessions() == 0
    await make_sessions(manager, 3)
    assert await manager.cleanup_inactive_sessions() == 0
    assert manager.get_session_metrics()["cleanup_runs"] == 2
    assert manager.get_session_metrics()["active_sessions"] == 3


async def test_max_age_zero_removes_everything(manager: SessionManager) -> None:
    await make_sessions(manager, 23)
    assert await manager.cleanup_inactive_sessions(0) == 23
    assert manager.get_session_metrics()["memory_usage_mb"] == 0


@pytest.mark.parametrize("bad", [-1, -0.001, math.nan, math.inf, "5", True])
async def test_bad_max_age_is_rejected(manager: SessionManager, bad: object) -> None:
    await make_sessions(manager, 2)
    with pytest.raises((ValueError, TypeError)):
        await manager.cleanup_inactive_sessions(bad)  # type: ignore[arg-type]
    assert manager.get_session_metrics()["cleanup_runs"] == 0


async def test_cleanup_with_max_age_below_the_timeout(manager: SessionManager, clock: FakeClock) -> None:
    old = await make_sessions(manager, 4)
    clock.advance(minutes=10)
    new = await make_sessions(manager, 3)
    clock.advance(minutes=5)
    assert await manager.cleanup_inactive_sessions(10) == 4  # idle 15 min >= 10; the new ones idle 5
    assert all([await manager.get_session(s) is None for s in old])
    assert all([await manager.get_session(s) is not None for s in new])


async def test_touched_sessions_survive_a_cleanup_running_through_many_batches(clock: FakeClock) -> None:
    """Sessions touched between batches are never removed; the count equals what was removed."""
    rng = random.Random(7)
    touched: set[str] = set()
    ids: list[str] = []

    async def touch_some(_: BatchResult) -> None:
        # Between batches (the cleanup is suspended): use a few sessions it has not reached yet.
        remaining = [s for s in ids if s in manager.store.index and s not in touched]  # type: ignore[attr-defined]
        for sid in rng.sample(remaining, min(3, len(remaining))):
            assert await manager.touch_session(sid) is not None
            touched.add(sid)

    store = HookedStore(touch_some)
    manager = SessionManager(store, settings=Settings(cleanup_batch_size=7), clock=clock)
    ids.extend(await make_sessions(manager, 500))
    clock.advance(minutes=20)  # idle 20 min: live (timeout 30) but eligible for a 15-minute cleanup

    before = len(store)
    removed = await manager.cleanup_inactive_sessions(15)
    assert store.batches > 50
    assert removed == before - len(store)
    assert touched and all([await manager.get_session(s) is not None for s in touched])
    assert len(store) == len(touched)  # every untouched idle session went
    assert manager.get_session_metrics()["sessions_cleaned_total"] == removed


async def test_cleanup_yields_to_the_event_loop_between_batches(clock: FakeClock) -> None:
    manager = SessionManager(MemoryStore(), settings=Settings(cleanup_batch_size=10), clock=clock)
    await make_sessions(manager, 200)
    clock.advance(minutes=31)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    ticks = 0
    assert await manager.cleanup_inactive_sessions() == 200
    task.cancel()
    assert ticks >= 19  # another task ran between (nearly) every pair of the 20 batches


async def test_one_cleanup_at_a_time(clock: FakeClock) -> None:
    in_flight = 0
    overlaps = 0

    async def hold(_: BatchResult) -> None:
        nonlocal in_flight, overlaps
        in_flight += 1
        overlaps += in_flight > 1
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        in_flight -= 1

    store = HookedStore(hold)
    manager = SessionManager(store, settings=Settings(cleanup_batch_size=5), clock=clock)
    await make_sessions(manager, 100)
    clock.advance(minutes=31)
    results = await asyncio.gather(*(manager.cleanup_inactive_sessions() for _ in range(3)))
    assert sorted(results) == [0, 0, 100]
    assert overlaps == 0
    assert manager.get_session_metrics()["cleanup_runs"] == 3


async def test_store_down_raises_cleanup_exception(settings: Settings, clock: FakeClock) -> None:
    store = DownStore()
    manager = SessionManager(store, settings=settings, clock=clock)
    await make_sessions(manager, 5)
    clock.advance(minutes=31)
    store.down = True
    with pytest.raises(SessionCleanupException):
        await manager.cleanup_inactive_sessions()
    store.down = False
    metrics = manager.get_session_metrics()
    assert metrics["cleanup_errors_total"] == 1
    assert metrics["cleanup_runs"] == 0  # a failed run is not a finished run
    assert await manager.cleanup_inactive_sessions() == 5


async def test_session_used_during_cleanup_is_kept_when_deleted_or_updated(clock: FakeClock) -> None:
    """Deletes and updates between batches keep the counts exact."""
    ids: list[str] = []
    deleted: list[str] = []

    async def mutate(_: BatchResult) -> None:
        for sid in ids[-3:]:
            if sid in manager.store.index and sid not in deleted:  # type: ignore[attr-defined]
                if len(deleted) % 2:
                    await manager.update_session(sid, {"fresh": True})
                else:
                    assert await manager.delete_session(sid) is True
                    deleted.append(sid)
                ids.remove(sid)
                break

    store = HookedStore(mutate)
    manager = SessionManager(store, settings=Settings(cleanup_batch_size=4), clock=clock)
    ids.extend(await make_sessions(manager, 60))
    clock.advance(minutes=20)
    removed = await manager.cleanup_inactive_sessions(15)
    assert removed + len(deleted) + len(store) == 60
    assert manager.get_session_metrics()["active_sessions"] == len(store)


# -- scheduler ----------------------------------------------------------------------------------------


async def test_scheduler_survives_failing_runs_and_recovers(settings: Settings, clock: FakeClock) -> None:
    store = DownStore()
    scheduler = CleanupScheduler(backoff_base_s=0.001)
    manager = SessionManager(store, settings=settings, clock=clock, scheduler=scheduler)
    await make_sessions(manager, 10)
    clock.advance(minutes=31)
    store.down = True
    await manager.start_cleanup_scheduler(interval_minutes=0.0005)
    async with asyncio.timeout(30):
        while scheduler.consecutive_failures < 3:
            await asyncio.sleep(0.005)
    assert scheduler.running
    store.down = False
    # Until a run has finished (the count of removals moves batch by batch, within the run): the scheduler
    # has seen it succeed by then, with no await in between.
    async with asyncio.timeout(30):
        while manager.get_session_metrics()["cleanup_runs"] < 1:
            await asyncio.sleep(0.005)
    assert manager.get_session_metrics()["sessions_cleaned_total"] == 10
    assert scheduler.consecutive_failures == 0
    await manager.stop_cleanup_scheduler()


async def test_backoff_grows_and_is_capped_by_the_interval() -> None:
    scheduler = CleanupScheduler(backoff_base_s=1.0, jitter=0.0)
    delays = []
    for failures in range(8):
        scheduler.consecutive_failures = failures
        delays.append(scheduler.next_delay(60.0))
    assert delays == [60.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0]


async def test_graceful_stop_lets_the_current_batch_finish(clock: FakeClock) -> None:
    stop_requested = asyncio.Event()

    async def slow_batch(_: BatchResult) -> None:
        stop_requested.set()
        await asyncio.sleep(0.01)  # a batch in flight when stop arrives

    store = HookedStore(slow_batch)
    scheduler = CleanupScheduler()
    manager = SessionManager(store, settings=Settings(cleanup_batch_size=10), clock=clock, scheduler=scheduler)
    await make_sessions(manager, 1000)
    clock.advance(minutes=31)
    await manager.start_cleanup_scheduler(interval_minutes=0.0001)
    async with asyncio.timeout(30):
        await stop_requested.wait()
    await manager.stop_cleanup_scheduler()
    assert not scheduler.running
    removed = manager.get_session_metrics()["sessions_cleaned_total"]
    assert removed is not None and 0 < removed < 1000 and removed % 10 == 0  # whole batches only
    assert len(store) == 1000 - removed
    assert manager.get_session_metrics()["expired_sessions"] == len(store)  # the store is consistent


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf])
async def test_bad_scheduler_interval_is_rejected(manager: SessionManager, bad: float) -> None:
    with pytest.raises(ValueError):
        await manager.start_cleanup_scheduler(bad)
    assert not manager.get_session_metrics()["scheduler_running"]


@pytest.mark.parametrize("max_age", [None, 31.0])
@pytest.mark.parametrize(("live", "timeouts"), [pytest.param(500, 40, id="small"), pytest.param(5000, 400, id="large")])
async def test_cleanup_cost_follows_expired_sessions_not_stored(
    clock: FakeClock, max_age: float | None, live: int, timeouts: int
) -> None:
    """The work a cleanup does (lines executed in the store) is the same beside 50 or `live` live sessions,
    and beside `live` live sessions spread over `timeouts` distinct timeouts. (The mutation run leaves the
    large case out.)"""

    async def lines_executed(live: int, timeouts: int) -> int:
        manager = SessionManager(MemoryStore(), settings=Settings(cleanup_batch_size=50), clock=clock)
        await make_sessions(manager, 20)
        clock.advance(minutes=31)
        for i in range(live):
            await manager.create_session(timeout_minutes=60 + i % timeouts)
        with StoreLines() as lines:
            removed = await manager.cleanup_inactive_sessions(max_age)
        assert removed == 20
        return lines.count

    small, large, spread = (
        await lines_executed(50, 1),
        await lines_executed(live, 1),
        await lines_executed(live, timeouts),
    )
    assert small > 20 * 5  # the trace did see the loop
    assert large == small
    assert spread == small


async def test_data_nesting_limit_is_exact(manager: SessionManager) -> None:
    from faultmaven.session import MAX_DATA_DEPTH

    def nested(levels: int) -> dict[str, object]:
        data: dict[str, object] = {}
        for _ in range(levels - 1):
            data = {"d": data}
        return data

    session = await manager.create_session(data=nested(MAX_DATA_DEPTH))
    assert (await manager.get_session(session.session_id)) is not None
    with pytest.raises(ValueError, match="nested too deeply"):
        await manager.create_session(data=nested(MAX_DATA_DEPTH + 1))
