"""The manager's edges that `tox -e mutation` found unpinned: page bounds and defaults, what an eviction
run logs and counts, the session and end-event fields the clients read (perf/mutation-survivors.md)."""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from faultmaven.config import Settings
from faultmaven.exceptions import SessionCleanupException, SessionDataTooLargeError, SessionNotFoundError
from faultmaven.lifecycle import events
from faultmaven.lifecycle.cleanup import CleanupRunner
from faultmaven.lifecycle.counters import SessionCounters
from faultmaven.lifecycle.endings import EndingsHandler
from faultmaven.lifecycle.events import SessionEndDispatcher
from faultmaven.observability.audit import NODE
from faultmaven.session import Session, SessionEnd, check_client_id, check_user_id, fingerprint
from faultmaven.session_management import MAX_PAGE, SessionManager
from faultmaven.stores import BatchResult, MemoryStore
from tests.support import EPOCH, DownStore, FakeClock, HookedStore, exactly, one_session_bytes

PAYLOAD = {"blob": "x" * 500}


def runs_logged(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """Every cleanup or eviction run the service log recorded, as its extra fields."""
    return [vars(r) for r in caplog.records if r.getMessage() == "Session cleanup completed"]


@pytest.mark.parametrize("limit", [0, MAX_PAGE + 1, True, 2.0, "5"])
async def test_a_page_limit_outside_1_to_max_page_is_a_clear_error(manager: SessionManager, limit: Any) -> None:
    with pytest.raises(ValueError, match=exactly(f"limit must be an integer from 1 to {MAX_PAGE}")):
        await manager.user_session_page("alice", limit=limit)


@pytest.mark.parametrize("offset", [-1, True, 1.0, "0"])
async def test_a_negative_or_non_integer_offset_is_a_clear_error(manager: SessionManager, offset: Any) -> None:
    with pytest.raises(ValueError, match=exactly("offset must be an integer >= 0")):
        await manager.list_user_sessions("alice", offset=offset)


async def test_pages_default_to_the_first_50_and_take_limit_and_offset(clock: FakeClock) -> None:
    manager = SessionManager(MemoryStore(), settings=Settings(cleanup_enabled=False, max_per_user=0), clock=clock)
    ids = []
    for _ in range(MAX_PAGE + 1):
        ids.append((await manager.create_session("alice")).session_id)
        clock.advance(0.001)
    newest_first = ids[::-1]
    assert [s.session_id for s in await manager.list_user_sessions("alice")] == newest_first[:50]
    page, total = await manager.user_session_page("alice")
    assert [s.session_id for s in page] == newest_first[:50] and total == MAX_PAGE + 1
    assert [s.session_id for s in await manager.list_user_sessions("alice", limit=2, offset=3)] == newest_first[3:5]
    page, _ = await manager.user_session_page("alice", limit=MAX_PAGE)
    assert len(page) == MAX_PAGE


async def room_for_three(clock: FakeClock) -> tuple[SessionManager, int]:
    """A manager whose store evicts past three PAYLOAD sessions, and the bytes one of them takes."""
    one = await one_session_bytes("u", PAYLOAD)
    store = MemoryStore(max_bytes=one * 3, policy="evict")
    return SessionManager(store, settings=Settings(max_per_user=0), clock=clock), one


async def test_an_eviction_run_is_logged_and_counted_like_a_cleanup(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    manager, one = await room_for_three(clock)
    deleted = (await manager.create_session("u", PAYLOAD)).session_id
    oldest = (await manager.create_session("u", PAYLOAD)).session_id
    clock.advance(10)
    await manager.touch_session(deleted)
    await manager.delete_session(deleted)  # ended after 10 s
    clock.advance(30)
    await manager.touch_session(oldest)  # will be evicted after 40 s
    clock.advance(10)
    await manager.create_session("u", PAYLOAD)  # will be evicted after 0 s
    clock.advance(10)
    await manager.create_session("u", PAYLOAD)
    caplog.set_level(logging.INFO, "faultmaven")
    await manager.create_session("u", {"blob": "x" * 1400})  # needs two sessions' room

    (run,) = runs_logged(caplog)
    assert run["cleanup_count"] == 2 and run["errors_encountered"] == 0 and run["duration_ms"] == 0.0
    assert run["memory_freed_mb"] == round(2 * one / (1024 * 1024), 6)
    audit = run["audit"]
    assert audit["trigger"] == "eviction" and re.fullmatch(r"[0-9a-f]{12}", audit["run_id"])
    assert audit["reason"] == "memory budget (SESSION_MAX_MEMORY_MB): least recently active sessions evicted"
    metrics = manager.get_session_metrics()
    assert metrics["sessions_evicted_total"] == 2
    assert metrics["average_session_duration"] == pytest.approx((10 + 40 + 0) / 3)
    await manager.close()


async def test_an_update_that_makes_room_is_logged_as_an_eviction_run(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    manager, _ = await room_for_three(clock)
    oldest = (await manager.create_session("u", PAYLOAD)).session_id
    clock.advance(10)
    grown = (await manager.create_session("u", PAYLOAD)).session_id
    await manager.create_session("u", PAYLOAD)
    caplog.set_level(logging.INFO, "faultmaven")
    await manager.update_session(grown, {"blob": "x" * 900})  # needs the oldest session's room

    (run,) = runs_logged(caplog)
    assert run["cleanup_count"] == 1 and run["audit"]["trigger"] == "eviction"
    assert await manager.get_session(oldest) is None
    assert manager.get_session_metrics()["sessions_evicted_total"] == 1
    await manager.close()


async def test_a_revocation_that_ends_expired_sessions_too_logs_no_eviction(
    manager: SessionManager, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Only a create or update makes room; the expired sessions a revocation ends are not an eviction."""
    await manager.create_session("alice", timeout_minutes=5)
    clock.advance(minutes=10)
    await manager.create_session("alice")
    caplog.set_level(logging.INFO, "faultmaven")
    assert await manager.revoke_user_sessions("alice") == 1
    assert runs_logged(caplog) == []
    metrics = manager.get_session_metrics()
    assert metrics["sessions_revoked_total"] == 1 and metrics["sessions_evicted_total"] == 0


async def test_a_flush_waits_no_longer_than_asked_for_a_listener_still_running(
    manager: SessionManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = asyncio.Event()

    async def stuck(event: SessionEnd) -> None:
        await release.wait()

    monkeypatch.setattr(events, "LISTENER_TIMEOUT_S", 3600.0)  # the listener runs until released
    manager.add_session_end_listener(stuck)
    await manager.delete_session((await manager.create_session("alice")).session_id)
    async with asyncio.timeout(30):  # a flush that waited for the listener would never end
        await manager.flush_session_ends(timeout_s=0.05)
    release.set()
    await manager.flush_session_ends()


async def test_an_end_event_names_the_user_and_the_client(manager: SessionManager) -> None:
    seen: list[SessionEnd] = []
    manager.add_session_end_listener(seen.append)
    sid = (await manager.create_session("alice", client_id="browser-tab-1")).session_id
    await manager.delete_session(sid)
    await manager.flush_session_ends()
    assert [(e.session_id, e.user_id, e.client_id, e.reason) for e in seen] == [
        (sid, "alice", "browser-tab-1", "deleted")
    ]


async def test_a_fault_making_events_of_one_call_s_endings_loses_only_those(
    manager: SessionManager, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The dispatcher's task carries on (the next endings are delivered, a flush returns at once rather
    than at its timeout), and the fault is counted and logged without ids."""
    seen: list[SessionEnd] = []
    manager.add_session_end_listener(seen.append)
    first = (await manager.create_session("alice")).session_id
    real = SessionEnd.from_ending
    monkeypatch.setattr(SessionEnd, "from_ending", staticmethod(lambda *a: 1 / 0))  # the fault
    await manager.delete_session(first)
    async with asyncio.timeout(30):  # a dead task would keep the flush waiting for its whole hour
        await manager.flush_session_ends(timeout_s=3600)
    monkeypatch.setattr(SessionEnd, "from_ending", staticmethod(real))
    second = (await manager.create_session("bob")).session_id
    await manager.delete_session(second)
    await manager.flush_session_ends()
    assert [e.session_id for e in seen] == [second]
    assert manager.get_session_metrics()["session_end_listener_errors_total"] == 1
    failed = [r for r in caplog.records if r.getMessage() == "Session-end delivery failed"]
    assert [r.error_type for r in failed] == ["ZeroDivisionError"]  # type: ignore[attr-defined]
    assert first not in caplog.text and second not in caplog.text


@pytest.mark.parametrize(("merge", "name"), [(False, "session data"), (True, "merge patch")])
async def test_data_that_is_not_json_names_what_was_sent(manager: SessionManager, merge: bool, name: str) -> None:
    sid = (await manager.create_session("alice")).session_id
    with pytest.raises(ValueError, match=f"^{name} is not JSON-serialisable: "):
        await manager.update_session(sid, {"x": object()}, merge=merge)
    with pytest.raises(TypeError, match=exactly(f"{name} must be a JSON object (a mapping)")):
        await manager.update_session(sid, ["not", "an", "object"], merge=merge)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [12345678, None, "short", "x" * 129, "bad id!!"])
def test_a_bad_client_id_is_a_value_error_naming_the_rule(value: Any) -> None:
    with pytest.raises(ValueError, match=exactly("client_id must be 8 to 128 characters of [A-Za-z0-9_-]")):
        check_client_id(value)


async def test_a_session_reports_both_deadlines(clock: FakeClock) -> None:
    settings = Settings(cleanup_enabled=False, absolute_timeout_minutes=120)
    manager = SessionManager(MemoryStore(), settings=settings, clock=clock)
    body = (await manager.create_session("alice", timeout_minutes=30)).to_dict()
    assert body["expires_at"] == (await manager.get_session(body["session_id"])).to_dict()["expires_at"]  # type: ignore[union-attr]
    assert body["absolute_expires_at"] is not None and body["absolute_expires_at"] > body["expires_at"]
    await manager.close()


async def test_rotation_keeps_the_session_in_place_in_every_list(clock: FakeClock) -> None:
    """Rotate the third of four sessions of one user, then let them expire one by one: the idle lane, the
    creation list (absolute lifetime), the user's list and the expired count all still hold the new id
    where the old one was."""
    settings = Settings(cleanup_enabled=False, max_per_user=0, absolute_timeout_minutes=90)
    manager = SessionManager(MemoryStore(), settings=settings, clock=clock)
    seen: list[SessionEnd] = []
    manager.add_session_end_listener(seen.append)
    ids = []
    for _ in range(4):
        ids.append((await manager.create_session("alice", client_id=f"browser-tab-{len(ids)}")).session_id)
        clock.advance(1)
    clock.advance(minutes=30, seconds=-3.5)  # the first is expired, the others are not
    assert manager.get_session_metrics()["expired_sessions"] == 1
    rotated = (await manager.rotate_session(ids[2])).session_id
    assert [s.session_id for s in await manager.list_user_sessions("alice")] == [ids[3], rotated, ids[1]]
    again = await manager.create_session("alice", client_id="browser-tab-2")  # resumes by the new id
    assert again.session_resumed and again.session_id == rotated
    clock.advance(2)
    assert manager.get_session_metrics()["expired_sessions"] == 2  # ids[0], ids[1]; the resumed one is live
    await manager.touch_session(ids[3])
    clock.advance(minutes=20)
    await manager.touch_session(ids[3])
    assert manager.get_session_metrics()["expired_sessions"] == 2
    assert await manager.cleanup_inactive_sessions() == 2
    clock.advance(minutes=20)
    await manager.touch_session(ids[3])
    assert await manager.cleanup_inactive_sessions() == 1  # the rotated one, idle 40 min
    assert [s.session_id for s in await manager.list_user_sessions("alice")] == [ids[3]]
    clock.advance(minutes=21)  # ids[3] was active 21 min ago, but is past its 90 min lifetime
    assert manager.get_session_metrics()["expired_sessions"] == 1
    assert await manager.cleanup_inactive_sessions() == 1
    await manager.flush_session_ends()
    assert [(e.session_id, e.reason) for e in seen] == [
        (ids[2], "rotated"),
        (ids[0], "expired"),
        (ids[1], "expired"),
        (rotated, "expired"),
        (ids[3], "expired"),
    ]
    assert [(e.user_id, e.client_id) for e in seen[1:]] == [("alice", f"browser-tab-{i}") for i in (0, 1, 2, 3)]
    await manager.close()


async def test_rotation_revocation_and_the_user_limit_write_audit_records(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    manager = SessionManager(MemoryStore(), settings=Settings(cleanup_enabled=False, max_per_user=2), clock=clock)
    caplog.set_level(logging.INFO, "faultmaven.audit")
    first = (await manager.create_session("alice")).session_id
    await manager.rotate_session(first)
    await manager.create_session("alice")
    await manager.create_session("alice")  # over the limit of 2: the least recently active ends
    assert await manager.revoke_user_sessions("alice") == 2
    await manager.rotate_session((await manager.create_session("bob")).session_id)
    await manager.rotate_session((await manager.create_session(None)).session_id)
    records = [r for r in caplog.records if r.name == "faultmaven.audit"]
    at = datetime.fromtimestamp(clock.now, UTC).isoformat()
    alice, bob = fingerprint("alice"), fingerprint("bob")
    assert [(r.getMessage(), r.event, r.user, r.count, r.at) for r in records] == [  # type: ignore[attr-defined]
        ("session rotated", "rotated", alice, 1, at),
        ("session user_limit", "user_limit", alice, 1, at),
        ("session revoked", "revoked", alice, 2, at),
        ("session rotated", "rotated", bob, 1, at),
        ("session rotated", "rotated", None, 1, at),
    ]
    assert all(r.node == NODE for r in records)  # type: ignore[attr-defined]
    metrics = manager.get_session_metrics()
    assert (metrics["sessions_rotated_total"], metrics["sessions_revoked_total"]) == (3, 2)
    assert await manager.revoke_user_sessions("bob") == 1
    assert manager.get_session_metrics()["sessions_revoked_total"] == 3
    await manager.close()


async def test_deletions_are_counted_and_logged_at_debug_by_fingerprint(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    manager = SessionManager(MemoryStore(), settings=Settings(cleanup_enabled=False), clock=clock)
    caplog.set_level(logging.DEBUG, "faultmaven.sessions")
    ids = [(await manager.create_session()).session_id for _ in range(3)]
    clock.advance(30)
    await manager.touch_session(ids[0])
    assert await manager.delete_session(ids[0]) is True  # lived 30 s
    clock.advance(30)
    assert await manager.delete_session(ids[1]) is True  # lived 0 s: never active after its creation
    deleted = [r for r in caplog.records if r.getMessage() == "Session deleted"]
    assert [(r.session, r.was_live) for r in deleted] == [(fingerprint(ids[0]), True), (fingerprint(ids[1]), True)]  # type: ignore[attr-defined]
    assert manager.ended_by_reason()["deleted"] == 2
    assert manager.get_session_metrics()["average_session_duration"] == pytest.approx(30 / 2)
    await manager.touch_session(ids[2])
    assert await manager.delete_session(ids[2]) is True  # lived 60 s
    assert manager.get_session_metrics()["average_session_duration"] == pytest.approx((30 + 0 + 60) / 3)
    await manager.close()


@pytest.mark.parametrize("bad_id", ["not-an-id", "a" * 43])
async def test_rotating_or_updating_no_live_session_says_so(manager: SessionManager, bad_id: str) -> None:
    with pytest.raises(SessionNotFoundError, match=exactly("no live session with this id")):
        await manager.rotate_session(bad_id)
    with pytest.raises(SessionNotFoundError, match=exactly("no live session with this id")):
        await manager.update_session(bad_id, {"v": 1})


async def test_an_update_counts_the_metadata_against_the_data_limit(clock: FakeClock) -> None:
    manager = SessionManager(MemoryStore(), settings=Settings(cleanup_enabled=False, max_data_bytes=100), clock=clock)
    sid = (await manager.create_session(None, {"v": 1}, metadata={"m": "x" * 60})).session_id
    with pytest.raises(SessionDataTooLargeError):
        await manager.update_session(sid, {"v": "y" * 40})  # 49 bytes alone, 116 with the metadata
    assert (await manager.get_session(sid)).data == {"v": 1}  # type: ignore[union-attr]
    await manager.close()


async def test_a_session_ends_exactly_at_its_absolute_deadline(clock: FakeClock) -> None:
    settings = Settings(cleanup_enabled=False, absolute_timeout_minutes=60)
    manager = SessionManager(MemoryStore(), settings=settings, clock=clock)
    sid = (await manager.create_session("alice")).session_id
    for _ in range(5):
        clock.advance(minutes=11.9)
        assert await manager.touch_session(sid) is not None
    clock.advance(minutes=0.5)  # 60 minutes after creation, active 0.5 min ago
    assert await manager.touch_session(sid) is None
    await manager.close()


CONTRACT_METRICS = {
    "active_sessions", "expired_sessions", "cleanup_runs", "last_cleanup_time", "average_session_duration",
    "memory_usage_mb", "sessions_cleaned_total", "cleanup_errors_total", "last_cleanup_duration_ms",
    "scheduler_running", "sessions_created_total", "sessions_resumed_total", "sessions_rotated_total",
    "sessions_revoked_total", "sessions_user_limit_total", "session_end_listener_errors_total",
}  # fmt: skip
OURS = {"sessions_evicted_total", "sessions_rejected_total", "cleanup_skipped_total", "store_stats_age_s"}


class _Leaseless(MemoryStore):
    """Another replica holds the lease (fault injection)."""

    async def acquire_lease(self, ttl_s: float, part: int = 0) -> str | None:
        return None


def leased_runner(store: MemoryStore, clock: FakeClock) -> tuple[CleanupRunner, SessionCounters]:
    """A cleanup runner as the manager builds one, to run leased (scheduled) runs on demand."""
    counters = SessionCounters()
    endings = EndingsHandler(counters, SessionEndDispatcher(clock), clock)
    return CleanupRunner(store, 50, clock, endings, counters), counters


async def test_metrics_keys_are_the_contract_plus_four_and_a_skipped_run_counts(clock: FakeClock) -> None:
    manager = SessionManager(_Leaseless(), settings=Settings(cleanup_enabled=False), clock=clock)
    metrics = manager.get_session_metrics()
    assert set(metrics) == CONTRACT_METRICS | OURS
    assert (metrics["cleanup_skipped_total"], metrics["store_stats_age_s"]) == (0, 0.0)
    runner, counters = leased_runner(_Leaseless(), clock)
    for _ in range(2):
        assert await runner.run(None, trigger="scheduled", leased=True) == 0
    assert counters.cleanup_skipped == 2 and counters.cleanup_runs == 0
    assert await runner.run(None, trigger="scheduled") == 0  # unleased: runs whatever the leases
    assert counters.cleanup_runs == 1
    await manager.close()


async def test_a_skipped_run_is_logged(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    runner, _ = leased_runner(_Leaseless(), clock)
    caplog.set_level(logging.INFO, "faultmaven.sessions")
    await runner.run(None, trigger="scheduled", leased=True)
    skipped = "Session cleanup skipped: other replicas hold every cleanup lease"
    assert [r.getMessage() for r in caplog.records if r.name == "faultmaven.sessions"] == [skipped]


async def test_failed_runs_are_counted_one_by_one(clock: FakeClock) -> None:
    store = DownStore()
    manager = SessionManager(store, settings=Settings(cleanup_enabled=False), clock=clock)
    store.down = True
    for _ in range(2):
        with pytest.raises(SessionCleanupException):
            await manager.cleanup_inactive_sessions()
    store.down = False
    assert manager.get_session_metrics()["cleanup_errors_total"] == 2
    await manager.close()


async def test_the_run_duration_is_in_milliseconds_and_its_histogram_in_seconds(clock: FakeClock) -> None:
    async def slow_batch(_: BatchResult) -> None:
        await asyncio.sleep(0.05)

    manager = SessionManager(HookedStore(slow_batch), settings=Settings(cleanup_enabled=False), clock=clock)
    await manager.cleanup_inactive_sessions()
    duration_ms = manager.get_session_metrics()["last_cleanup_duration_ms"]
    assert duration_ms is not None and 50 <= duration_ms < 60_000  # real time: the fake clock does not move
    assert manager.cleanup_durations.total_s == pytest.approx(duration_ms / 1000.0)
    await manager.close()


@pytest.mark.parametrize("value", ["", "x" * 257, "eve\x00", 42])
def test_a_bad_user_id_is_a_value_error_naming_the_rule(value: Any) -> None:
    with pytest.raises(ValueError, match=exactly("user_id must be 1 to 256 characters without control characters")):
        check_user_id(value)


def test_a_session_built_without_an_absolute_deadline_serialises_it_as_null() -> None:
    at = datetime.fromtimestamp(EPOCH, UTC)
    session = Session("s" * 43, None, at, at, at, {})
    assert session.to_dict()["absolute_expires_at"] is None


async def test_the_scheduler_task_is_named_for_task_dumps(manager: SessionManager) -> None:
    await manager.start_cleanup_scheduler(60)
    assert "faultmaven-session-cleanup" in {task.get_name() for task in asyncio.all_tasks()}
    await manager.stop_cleanup_scheduler()


async def test_a_failed_run_is_logged_audited_and_raised_with_its_cause(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = DownStore()
    manager = SessionManager(store, settings=Settings(cleanup_enabled=False), clock=clock)
    caplog.set_level(logging.INFO, "faultmaven")
    await manager.create_session()
    clock.advance(minutes=30)
    await manager.run_cleanup()  # completed, trigger "manual" by default
    store.down = True
    with pytest.raises(SessionCleanupException) as failed:
        await manager.cleanup_inactive_sessions()
    runs = [r for r in caplog.records if r.getMessage().startswith("Session cleanup ")]
    assert [(r.getMessage(), r.levelno) for r in runs] == [
        ("Session cleanup completed", logging.INFO),
        ("Session cleanup failed", logging.ERROR),
    ]
    done, bad = (r.audit for r in runs)  # type: ignore[attr-defined]
    assert (done["outcome"], done["cleanup_count"], done["errors"], done["trigger"]) == ("completed", 1, 0, "manual")
    assert (bad["outcome"], bad["cleanup_count"], bad["errors"], bad["trigger"]) == ("failed", 0, 1, "manual")
    assert bad["reason"] == "failed: expired"
    assert runs[1].error_type == "SessionStoreException"  # type: ignore[attr-defined]
    run_id = bad["run_id"]
    assert str(failed.value) == f"cleanup run {run_id} failed: SessionStoreException: store unreachable (injected)"
    assert isinstance(runs[0].duration_ms, float) and runs[0].duration_ms == round(runs[0].duration_ms, 3)  # type: ignore[attr-defined]
    await manager.close()
