"""Log and audit records as docs/observability.md documents them, and the counters behind the metrics.

The field names and messages are what log pipelines and alerts match on, so they are pinned exactly.
"""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from faultmaven.config import Settings
from faultmaven.exceptions import SessionCleanupException, SessionStoreFullError
from faultmaven.lifecycle.counters import REFUSING_FOR_S, SessionCounters
from faultmaven.observability.audit import NODE, RunRecord, log_run
from faultmaven.session import fingerprint
from faultmaven.session_management import SessionManager
from faultmaven.stores import MemoryStore
from faultmaven.stores.base import StoreStats
from tests.support import DownStore, FakeClock, one_session_bytes

_MISSING = "<missing>"


def _records(stream: io.StringIO, logger: str, message: str) -> list[dict[str, Any]]:
    """The JSON lines of one logger with one message."""
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [r for r in records if r["logger"] == logger and r["message"] == message]


def _fields(record: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    return {name: record.get(name, _MISSING) for name in expected}


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat()


async def test_a_cleanup_run_writes_the_documented_audit_record(
    manager: SessionManager, clock: FakeClock, json_log: io.StringIO
) -> None:
    """The audit logger's `cleanup run` record carries every documented field under its documented name,
    and the service log's summary nests the same audit fields."""
    for i in range(3):
        await manager.create_session(f"user-{i}")
    clock.advance(minutes=31)
    assert await manager.cleanup_inactive_sessions() == 3

    [audit] = _records(json_log, "faultmaven.audit", "cleanup run")
    expected = {
        "trigger": "manual",
        "node": NODE,
        "outcome": "completed",
        "started_at": _iso(clock.now),
        "finished_at": _iso(clock.now),
        "reason": "expired",
        "cleanup_count": 3,
        "errors": 0,
        "error_type": None,
    }
    assert _fields(audit, expected) == expected
    assert re.fullmatch(r"[0-9a-f]{12}", audit["run_id"])
    assert isinstance(audit["duration_ms"], float) and audit["duration_ms"] >= 0

    [summary] = _records(json_log, "faultmaven.sessions", "Session cleanup completed")
    assert summary["duration_ms"] == audit["duration_ms"]
    assert summary["cleanup_count"] == 3 and summary["errors_encountered"] == 0
    nested = {k: v for k, v in audit.items() if k in expected or k == "run_id"}
    nested.pop("error_type")
    assert summary["audit"] == nested


async def test_a_failed_cleanup_run_is_audited_with_its_error_type(clock: FakeClock, json_log: io.StringIO) -> None:
    """A run the store fails is audited as `failed`, with the exception's type and one error."""
    store = DownStore()
    manager = SessionManager(store, settings=Settings(cleanup_enabled=False), clock=clock)
    store.down = True
    with pytest.raises(SessionCleanupException):
        await manager.cleanup_inactive_sessions()
    [audit] = _records(json_log, "faultmaven.audit", "cleanup run")
    expected = {"outcome": "failed", "reason": "failed: expired", "errors": 1, "error_type": "SessionStoreException"}
    assert _fields(audit, expected) == expected
    [summary] = _records(json_log, "faultmaven.sessions", "Session cleanup failed")
    assert summary["error_type"] == "SessionStoreException" and summary["level"] == "ERROR"
    assert summary["error"] == "store unreachable (injected)"  # the cause, in the one line
    await manager.close()


async def test_a_run_of_several_batches_logs_the_bytes_every_batch_freed(
    clock: FakeClock, json_log: io.StringIO
) -> None:
    settings = Settings(cleanup_enabled=False, cleanup_batch_size=2)
    manager = SessionManager(MemoryStore(), settings=settings, clock=clock)
    for i in range(5):
        await manager.create_session(f"user-{i}", {"i": i})
    stored = manager.store.stats(clock.now).memory_bytes
    clock.advance(minutes=31)
    assert await manager.cleanup_inactive_sessions() == 5  # three batches
    [summary] = _records(json_log, "faultmaven.sessions", "Session cleanup completed")
    assert stored and summary["memory_freed_mb"] == round(stored / (1024 * 1024), 6)
    await manager.close()


async def test_session_created_is_logged_with_a_fingerprint_and_whether_it_resumed(
    manager: SessionManager, json_log: io.StringIO
) -> None:
    """`Session created` (DEBUG) names the session by its fingerprint only, and says if it was resumed."""
    first = await manager.create_session("alice", client_id="laptop-0001")
    again = await manager.create_session("alice", client_id="laptop-0001")
    other = await manager.create_session("bob")
    assert again.session_id == first.session_id

    records = _records(json_log, "faultmaven.sessions", "Session created")
    logged = [(r.get("session", _MISSING), r.get("resumed", _MISSING), r["level"]) for r in records]
    assert logged == [
        (fingerprint(first.session_id), False, "DEBUG"),
        (fingerprint(first.session_id), True, "DEBUG"),
        (fingerprint(other.session_id), False, "DEBUG"),
    ]
    text = json_log.getvalue()
    assert first.session_id not in text and other.session_id not in text


def test_fingerprints_are_12_hex_digits_that_tell_sessions_apart() -> None:
    """A fingerprint is stable for one id, differs between ids and never contains the id."""
    ids = ["a" * 43, "b" * 43, "a" * 42 + "b"]
    prints = [fingerprint(sid) for sid in ids]
    assert all(re.fullmatch(r"[0-9a-f]{12}", p) for p in prints)
    assert len(set(prints)) == len(ids)
    assert fingerprint(ids[0]) == prints[0]


async def test_created_and_resumed_totals_count_each_create_once(manager: SessionManager) -> None:
    """sessions_created_total counts new sessions, sessions_resumed_total the creates that resumed one."""
    before = manager.get_session_metrics()
    assert (before["sessions_created_total"], before["sessions_resumed_total"]) == (0, 0)
    await manager.create_session("alice", client_id="laptop-0001")
    for _ in range(2):
        assert (await manager.create_session("alice", client_id="laptop-0001")).session_resumed
    await manager.create_session("bob")
    after = manager.get_session_metrics()
    assert (after["sessions_created_total"], after["sessions_resumed_total"]) == (2, 2)


def test_memory_usage_is_none_while_the_store_has_not_measured_it() -> None:
    """A store without a reading yet (Redis before its first) reports no memory figure, not an error."""
    metrics = SessionCounters().metrics(StoreStats(None, None, None, None), False, 0)
    assert metrics["memory_usage_mb"] is None and metrics["active_sessions"] is None
    measured = SessionCounters().metrics(StoreStats(0, 0, 3 * 1024 * 1024), False, 0)
    assert measured["memory_usage_mb"] == 3.0


async def test_a_refused_create_counts_as_refusing_for_less_than_refusing_for_s(clock: FakeClock) -> None:
    """Refusing lasts REFUSING_FOR_S after the last refusal, not including that instant."""
    one = await one_session_bytes("u0", {"k": "v"})
    store = MemoryStore(max_bytes=one * 2)
    manager = SessionManager(store, settings=Settings(cleanup_enabled=False), clock=clock)
    for i in range(2):
        await manager.create_session(f"u{i}", {"k": "v"})
    with pytest.raises(SessionStoreFullError):
        await manager.create_session("u9", {"k": "v"})
    clock.advance(REFUSING_FOR_S - 0.5)
    assert manager.refusing_creates()
    clock.advance(0.5)
    assert not manager.refusing_creates()
    await manager.close()


def test_a_run_s_duration_is_logged_in_milliseconds_to_three_decimals(json_log: io.StringIO) -> None:
    run = RunRecord(
        run_id="0123456789ab",
        trigger="manual",
        started_at=0.0,
        finished_at=0.0,
        removed=0,
        duration_ms=1.23456,
        freed_bytes=0,
        errors=0,
        reason="expired",
    )
    log_run(run)
    [summary] = _records(json_log, "faultmaven.sessions", "Session cleanup completed")
    [audit] = _records(json_log, "faultmaven.audit", "cleanup run")
    assert summary["duration_ms"] == audit["duration_ms"] == 1.235
