"""SessionManager: the public API over a store, the cleanup run and the scheduler.

The manager owns the rules that do not depend on the storage engine: id and data validation, the clock,
one cleanup at a time, batching with a yield between batches, counters for the metrics and the cleanup
log record. The store owns atomicity: every expiry check happens inside the store call that acts on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from faultmaven.config.config import Settings
from faultmaven.events import SessionEndDispatcher, SessionEndListener
from faultmaven.exceptions import (
    SessionCleanupException,
    SessionDataTooLargeError,
    SessionNotFoundError,
    SessionOverMemoryBudgetError,
    SessionStoreException,
    SessionStoreFullError,
)
from faultmaven.observability.histogram import DurationHistogram
from faultmaven.scheduler import CleanupScheduler
from faultmaven.session import (
    Session,
    SessionEnd,
    SessionRecord,
    check_client_id,
    check_user_id,
    encode_data,
    fingerprint,
    is_valid_id,
)
from faultmaven.stores import BatchResult, SessionStore, store_from_url

__all__ = ["Session", "SessionEnd", "SessionManager"]

log = logging.getLogger("faultmaven.sessions")
audit_log = logging.getLogger("faultmaven.audit")  # one record per run; SESSION_AUDIT_LOG_PATH adds a file

_SESSION_TYPE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_PAGE = 1000  # sessions per list_user_sessions page
_MIB = 1024 * 1024
NODE = f"{socket.gethostname()}:{os.getpid()}"
REFUSING_FOR_S = 60.0  # /health reports refused creates for this long after the last one
LEASE_TTL_S = 30.0  # renewed after every batch; a replica that dies mid-run frees it within this time


def _minutes(name: str, value: float, *, allow_zero: bool) -> float:
    """Validate a minutes argument and return it in seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of minutes, not {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value) * 60.0


@dataclass(frozen=True, slots=True)
class _Run:
    """What one cleanup or eviction run did, for its log and audit records."""

    run_id: str
    trigger: str
    started_at: float
    removed: int
    duration_ms: float
    freed: int
    errors: int
    reason: str


@dataclass(slots=True)
class _Tally:
    """What a cleanup run has done so far, across the store's parts."""

    removed: int = 0
    freed: int = 0
    failed: set[str] = field(default_factory=set)


class SessionManager:
    """Server-side sessions with an inactivity timeout and batched background cleanup."""

    def __init__(
        self,
        store: SessionStore | None = None,
        *,
        settings: Settings | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings if settings is not None else Settings.from_env()
        if store is None:
            explicit = "max_memory_mb" in self.settings.model_fields_set
            store = store_from_url(
                self.settings.store_url,
                self.settings.max_memory_mb,
                policy=self.settings.memory_policy,
                redis_reserve=self.settings.redis_memory_reserve,
                redis_max_memory_mb=self.settings.max_memory_mb if explicit else None,
            )
        self.store: SessionStore = store
        self.store.listen_evictions(self._on_evicted)
        self._clock = clock if clock is not None else time.time
        self._last_now = -math.inf
        self._cleanup_lock = asyncio.Lock()
        self._scheduler = CleanupScheduler(self._scheduled_cleanup)
        # Counters behind get_session_metrics(); each is updated where the event happens.
        self._cleanup_runs = 0
        self._sessions_cleaned = 0
        self._cleanup_errors = 0
        self._last_cleanup_time: float | None = None
        self._last_cleanup_duration_ms: float | None = None
        self._ended = 0
        self._ended_lifetime_s = 0.0
        self._evicted = 0
        self._deleted = 0
        self._cleaned_idle = 0
        self._rejected = 0
        self._rejected_full = 0  # of the rejected, those refused because the store was full
        self._refusing_since: float | None = None  # last store-full refusal, until a create succeeds
        self._cleanup_skipped = 0
        self._created = 0
        self._resumed = 0
        self._rotated = 0
        self._revoked = 0
        self._user_limit = 0
        self._events = SessionEndDispatcher(self._now)
        self.cleanup_durations = DurationHistogram()

    def _now(self) -> float:
        """The injected clock, never moving backwards (the stores keep sessions in activity order)."""
        now = self._clock()
        if now < self._last_now:
            return self._last_now
        self._last_now = now
        return now

    # -- sessions ----------------------------------------------------------------------------------

    async def create_session(
        self,
        user_id: str | None = None,
        data: Mapping[str, Any] | None = None,
        *,
        client_id: str | None = None,
        timeout_minutes: float | None = None,
        session_type: str = "troubleshooting",
        metadata: Mapping[str, Any] | None = None,
    ) -> Session:
        """A new session, or with `client_id` the live session of that (user, client) pair, resumed:
        activity recorded, data, metadata and timeout unchanged, `session_resumed` True."""
        if user_id is not None:
            check_user_id(user_id)
        if client_id is not None:
            check_client_id(client_id)
        timeout_s = self._timeout_seconds(timeout_minutes)
        if not isinstance(session_type, str) or not _SESSION_TYPE.fullmatch(session_type):
            raise ValueError("session_type must be 1 to 64 characters of [A-Za-z0-9_.-]")
        limit = self.settings.max_data_bytes
        blob = encode_data(data, limit)
        meta = encode_data(metadata, limit, "session metadata")
        if len(blob) + len(meta) > limit:
            raise SessionDataTooLargeError(len(blob) + len(meta), limit)
        now = self._now()
        record = SessionRecord(
            self.store.new_id(user_id, client_id),
            user_id,
            client_id,
            session_type,
            now,
            now,
            timeout_s,
            now + self.settings.absolute_timeout_seconds,
            blob,
            meta,
        )
        try:
            with self._count_rejection():
                stored, resumed, limited = await self.store.create(record, now, self.settings.max_per_user)
        finally:
            self._publish()  # a refused create may still have removed expired sessions to make room
        if limited:
            self._user_limit += limited
            self._audit_event("user_limit", user_id, limited)
        if resumed:
            self._resumed += 1
        else:
            self._created += 1
            self._refusing_since = None
        log.debug("Session created", extra={"session": fingerprint(stored.session_id), "resumed": resumed})
        return stored.to_session(resumed=resumed)

    def _timeout_seconds(self, timeout_minutes: float | None) -> float:
        """This session's idle timeout: the default, or a requested one within the configured bounds."""
        if timeout_minutes is None:
            return self.settings.timeout_seconds
        value = _minutes("timeout_minutes", timeout_minutes, allow_zero=False) / 60.0
        lo, hi = self.settings.min_timeout_minutes, self.settings.max_timeout_minutes
        if not lo <= value <= hi:
            raise ValueError(f"timeout_minutes must be between {lo:g} and {hi:g}, got {value:g}")
        return value * 60.0

    async def get_session(self, session_id: str, *, user_id: str | None = None) -> Session | None:
        """The live session (recording activity), or None if unknown, malformed, expired or another user's."""
        return await self.touch_session(session_id, user_id=user_id)

    async def touch_session(self, session_id: str, *, user_id: str | None = None) -> Session | None:
        """Heartbeat: record activity only. Never revives an expired session."""
        if not is_valid_id(session_id):
            return None
        record = await self.store.touch(session_id, self._now(), user_id)
        return record.to_session() if record else None

    async def rotate_session(self, session_id: str, *, user_id: str | None = None) -> Session:
        """A new id for a live session, everything else kept (ASVS 7.2.4); the old id is gone at once.
        SessionNotFoundError if there is no live session (of this user)."""
        if not is_valid_id(session_id):
            raise SessionNotFoundError("no live session with this id")
        new_id = self.store.new_id(None, None, like=session_id)
        record = await self.store.rotate(session_id, new_id, self._now(), user_id)
        self._publish()
        if record is None:
            raise SessionNotFoundError("no live session with this id")
        self._rotated += 1
        self._audit_event("rotated", record.user_id, 1)
        return record.to_session()

    async def list_user_sessions(self, user_id: str, *, limit: int = 50, offset: int = 0) -> list[Session]:
        """A page of the user's live sessions, most recently active first (no activity recorded)."""
        sessions, _ = await self.user_session_page(user_id, limit=limit, offset=offset)
        return sessions

    async def user_session_page(self, user_id: str, *, limit: int = 50, offset: int = 0) -> tuple[list[Session], int]:
        """The page and how many live sessions the user has in all."""
        check_user_id(user_id)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be an integer from 1 to {MAX_PAGE}")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValueError("offset must be an integer >= 0")
        records, total = await self.store.list_user(user_id, self._now(), limit, offset)
        return [r.to_session() for r in records], total

    async def revoke_user_sessions(self, user_id: str) -> int:
        """End every session of the user (ASVS 7.4.2, 7.4.5); returns how many were live."""
        check_user_id(user_id)
        revoked = await self.store.revoke_user(user_id, self._now())
        self._publish()
        self._revoked += revoked
        self._audit_event("revoked", user_id, revoked)
        return revoked

    def add_session_end_listener(self, callback: SessionEndListener) -> None:
        """Call `callback` once per removed session, after the removal, with a SessionEnd. Sync or async;
        a failure or a slow call (over 5 s) is counted and logged, and never affects a cleanup."""
        self._events.listeners.append(callback)
        self.store.report_ended = True

    def _publish(self, *, wake: bool = True) -> None:
        """Hand what the store's calls removed to the listeners (kept only while someone listens)."""
        endings = self.store.take_ended()
        if endings:
            self._events.publish(endings, wake=wake)

    def _audit_event(self, event: str, user_id: str | None, count: int) -> None:
        """An audit record for revocations, rotations and user-limit evictions: the user as a fingerprint."""
        audit_log.info(
            "session " + event,
            extra={
                "event": event,
                "user": fingerprint(user_id) if user_id is not None else None,
                "count": count,
                "node": NODE,
                "at": datetime.fromtimestamp(self._now(), UTC).isoformat(),
            },
        )

    async def update_session(
        self,
        session_id: str,
        data: Mapping[str, Any],
        *,
        user_id: str | None = None,
        merge: bool = False,
        if_version: int | None = None,
    ) -> Session:
        """Replace the data, or with `merge` apply `data` to it as an RFC 7396 merge patch (null removes a
        key, objects merge recursively, anything else replaces), and record activity.

        The version goes up by one when the data changes. With `if_version`, the write happens only if that
        is still the current version, checked atomically with it: otherwise SessionVersionConflict (with
        `current_version`) and nothing changes. SessionNotFoundError if there is no live session (of this
        user); SessionDataTooLargeError if the result (or the patch itself) is over SESSION_MAX_DATA_BYTES
        together with the metadata, nothing changed."""
        if not is_valid_id(session_id):
            raise SessionNotFoundError("no live session with this id")
        if if_version is not None and (isinstance(if_version, bool) or not isinstance(if_version, int)):
            raise TypeError(f"if_version must be an integer version, not {type(if_version).__name__}")
        limit = self.settings.max_data_bytes
        blob = encode_data(data, limit, "merge patch" if merge else "session data")
        try:
            with self._count_rejection():
                record = await self.store.replace_data(
                    session_id, blob, self._now(), user_id, limit, merge=bool(merge), if_version=if_version
                )
        finally:
            self._publish()  # what a write removed or evicted under the memory budget, refused or not
        if record is None:
            raise SessionNotFoundError("no live session with this id")
        return record.to_session()

    async def delete_session(self, session_id: str, *, user_id: str | None = None) -> bool:
        """Remove the session; True only if it was live (an expired one is removed but returns False)."""
        if not is_valid_id(session_id):
            return False
        ended = await self.store.delete(session_id, self._now(), user_id)
        self._publish()
        if ended is None:
            return False
        self._deleted += 1
        self._ended += 1
        self._ended_lifetime_s += ended.lifetime_s
        log.debug("Session deleted", extra={"session": fingerprint(session_id), "was_live": ended.was_live})
        return ended.was_live

    # -- cleanup -----------------------------------------------------------------------------------

    async def cleanup_inactive_sessions(self, max_age_minutes: float | None = None) -> int:
        """Remove every expired session (each by its own deadlines) and, with `max_age_minutes`, every session
        idle for at least that long; return how many."""
        return await self.run_cleanup(max_age_minutes, trigger="manual")

    async def run_cleanup(self, max_age_minutes: float | None = None, *, trigger: str = "manual") -> int:
        """A cleanup run, labelled with what triggered it for the audit record."""
        max_idle_s = None
        if max_age_minutes is not None:
            max_idle_s = _minutes("max_age_minutes", max_age_minutes, allow_zero=True)
        async with self._cleanup_lock:
            return await self._cleanup_locked(max_idle_s, trigger)

    async def _cleanup_locked(self, max_idle_s: float | None, trigger: str) -> int:
        run_id = secrets.token_hex(6)
        started_at = self._now()
        t0 = time.perf_counter()
        tally = _Tally()
        reason = "expired" if max_idle_s is None else f"expired or idle for at least {max_idle_s / 60:g} minutes"
        try:
            held = 0
            for part in self.store.cleanup_parts():
                lease: str | None = None
                if trigger == "scheduled":  # one replica cleans a part at a time; the others take other parts
                    lease = await self.store.acquire_lease(LEASE_TTL_S, part)
                    if lease is None:
                        continue
                    held += 1
                try:
                    await self._clean_part(part, max_idle_s, lease, trigger, tally)
                finally:
                    # Released however the part ends (done, failed, cancelled), so the next replica need not
                    # wait for the TTL; if the store is down the release fails too and the TTL frees it.
                    if lease is not None:
                        with contextlib.suppress(SessionStoreException):
                            await self.store.release_lease(lease)
                if trigger == "scheduled" and self._scheduler.stopping:
                    break
            if trigger == "scheduled" and not held:
                self._cleanup_skipped += 1
                log.info("Session cleanup skipped: other replicas hold every cleanup lease")
                return 0
            await self.store.refresh_stats(self._now())
        except Exception as exc:
            self._cleanup_errors += 1
            duration_ms = (time.perf_counter() - t0) * 1000.0
            errors, why = len(tally.failed) + 1, f"failed: {reason}"
            run = _Run(run_id, trigger, started_at, tally.removed, duration_ms, tally.freed, errors, why)
            self._log_run(run, logging.ERROR, error_type=type(exc).__name__)
            raise SessionCleanupException(f"cleanup run {run_id} failed: {type(exc).__name__}: {exc}") from exc
        finally:
            self._publish(wake=False)
            self._events.flush()  # the run is over: listeners get its endings now
        removed, freed, failed = tally.removed, tally.freed, tally.failed
        duration_ms = (time.perf_counter() - t0) * 1000.0
        self.cleanup_durations.observe(duration_ms / 1000.0)
        self._cleanup_runs += 1
        self._last_cleanup_time = self._now()
        self._last_cleanup_duration_ms = duration_ms
        self._log_run(_Run(run_id, trigger, started_at, removed, duration_ms, freed, len(failed), reason))
        return removed

    async def _clean_part(
        self, part: int, max_idle_s: float | None, lease: str | None, trigger: str, tally: _Tally
    ) -> None:
        """Batches over one part of the store until it has nothing due (or the lease is lost)."""
        batch_size = self.settings.cleanup_batch_size
        while True:
            batch = await self.store.remove_idle(self._now(), max_idle_s, batch_size, tally.failed, part)
            self._publish(wake=False)  # listeners run once the run is done, never during it
            tally.removed += batch.removed
            tally.freed += batch.freed_bytes
            self._sessions_cleaned += batch.removed
            self._cleaned_idle += batch.idle
            self._ended += batch.removed
            self._ended_lifetime_s += batch.lifetime_s
            if batch.failed:
                self._cleanup_errors += len(batch.failed)
                tally.failed.update(batch.failed)
            if batch.exhausted or not (batch.removed or batch.failed):
                return
            if trigger == "scheduled" and self._scheduler.stopping:
                return  # graceful stop: this batch is done, the rest waits for the next run
            if lease is not None and not await self.store.renew_lease(lease, LEASE_TTL_S):
                return  # lease lost: every batch so far re-checked what it removed, so stopping is safe
            await self._between_batches()

    def _log_run(self, run: _Run, level: int = logging.INFO, error_type: str | None = None) -> None:
        """One record per run (cleanup or eviction) in the service log, and the same run in the audit log."""
        audit = self._audit(run.run_id, run.trigger, run.started_at, outcome="failed" if error_type else "completed")
        audit |= {"reason": run.reason, "cleanup_count": run.removed, "errors": run.errors}
        fields: dict[str, Any] = {
            "cleanup_count": run.removed,
            "duration_ms": round(run.duration_ms, 3),
            "memory_freed_mb": round(run.freed / _MIB, 6),
            "errors_encountered": run.errors,
            "audit": audit,
        }
        if error_type:
            fields["error_type"] = error_type
        log.log(level, "Session cleanup failed" if error_type else "Session cleanup completed", extra=fields)
        audit_log.info("cleanup run", extra=audit | {"duration_ms": fields["duration_ms"], "error_type": error_type})

    def _on_evicted(self, evicted: BatchResult) -> None:
        """The store made room under SESSION_MAX_MEMORY_MB by evicting the least recently active sessions."""
        self._evicted += evicted.removed
        self._ended += evicted.removed
        self._ended_lifetime_s += evicted.lifetime_s
        reason = "memory budget (SESSION_MAX_MEMORY_MB): least recently active sessions evicted"
        self._log_run(
            _Run(secrets.token_hex(6), "eviction", self._now(), evicted.removed, 0.0, evicted.freed_bytes, 0, reason)
        )

    @contextlib.contextmanager
    def _count_rejection(self) -> Iterator[None]:
        try:
            yield
        except SessionOverMemoryBudgetError:
            self._rejected += 1
            raise
        except SessionStoreFullError:
            self._rejected += 1
            self._rejected_full += 1
            self._refusing_since = self._now()
            raise

    async def _between_batches(self) -> None:
        """Let live requests run between batches (tests override it to act at exactly this point).

        redis-py can swallow a cancellation that arrives while it awaits a reply (the batch then completes,
        which is safe); the request is still on the task, so it is honoured here, at a batch boundary.
        """
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError("cleanup cancelled")
        await asyncio.sleep(0)

    def _audit(self, run_id: str, trigger: str, started_at: float, *, outcome: str) -> dict[str, Any]:
        """Who/what ran, where and when; the same fields go to the dedicated audit logger."""
        return {
            "run_id": run_id,
            "trigger": trigger,
            "node": NODE,
            "outcome": outcome,
            "started_at": datetime.fromtimestamp(started_at, UTC).isoformat(),
            "finished_at": datetime.fromtimestamp(self._now(), UTC).isoformat(),
        }

    async def _scheduled_cleanup(self) -> int:
        return await self.run_cleanup(trigger="scheduled")

    # -- scheduler ---------------------------------------------------------------------------------

    async def start_cleanup_scheduler(self, interval_minutes: float = 15) -> None:
        """Start the background cleanup task; a second call while it runs does nothing."""
        interval_s = _minutes("interval_minutes", interval_minutes, allow_zero=False)
        self._scheduler.start(interval_s)

    async def stop_cleanup_scheduler(self) -> None:
        """Stop gracefully: the running batch finishes, then the task is awaited. Idempotent."""
        await self._scheduler.stop()

    async def close(self) -> None:
        await self.stop_cleanup_scheduler()
        await self._events.close()
        await self.store.close()

    # -- metrics -----------------------------------------------------------------------------------

    async def refresh_store_stats(self) -> None:
        """Read the store's counts now (a Redis store otherwise serves a snapshot refreshed in the background)."""
        await self.store.refresh_stats(self._now())

    def ended_by_reason(self) -> dict[str, int]:
        """Sessions this process ended, by the reason a SessionEnd would carry (Prometheus' `reason`)."""
        return {
            "expired": self._sessions_cleaned - self._cleaned_idle,
            "idle": self._cleaned_idle,
            "deleted": self._deleted,
            "revoked": self._revoked,
            "user_limit": self._user_limit,
            "evicted": self._evicted,
            "rotated": self._rotated,
        }

    def rejected_by_reason(self) -> dict[str, int]:
        """Refused creates and updates by cause (Prometheus' `reason`): the store was full, or one session
        alone is larger than the whole memory budget."""
        return {"store_full": self._rejected_full, "too_large": self._rejected - self._rejected_full}

    def refusing_creates(self) -> bool:
        """True while creates are refused as the store is full: from a refusal until a create succeeds, or
        REFUSING_FOR_S after the last refusal (room may have come back with no one trying since)."""
        since = self._refusing_since
        return since is not None and self._now() - since < REFUSING_FOR_S

    def store_pressure(self) -> list[str]:
        """What the store reports about its memory limits (a Redis maxmemory policy that evicts, masters
        within their reserve); empty when it has nothing to say."""
        reasons = getattr(self.store, "memory_reasons", None)
        return list(reasons()) if reasons is not None else []

    def get_session_metrics(self) -> dict[str, int | float | None]:
        """Counters and store counts; O(1) amortised, safe to call on every request."""
        stats = self.store.stats(self._now())
        return {
            "active_sessions": stats.active,
            "expired_sessions": stats.expired,
            "cleanup_runs": self._cleanup_runs,
            "last_cleanup_time": self._last_cleanup_time,
            "average_session_duration": (self._ended_lifetime_s / self._ended) if self._ended else None,
            "memory_usage_mb": None if stats.memory_bytes is None else stats.memory_bytes / _MIB,
            "sessions_cleaned_total": self._sessions_cleaned,
            "cleanup_errors_total": self._cleanup_errors,
            "last_cleanup_duration_ms": self._last_cleanup_duration_ms,
            "scheduler_running": self._scheduler.running,
            "sessions_evicted_total": self._evicted,
            "sessions_rejected_total": self._rejected,
            "cleanup_skipped_total": self._cleanup_skipped,
            "store_stats_age_s": stats.age_s,
            "sessions_created_total": self._created,
            "sessions_resumed_total": self._resumed,
            "sessions_rotated_total": self._rotated,
            "sessions_revoked_total": self._revoked,
            "sessions_user_limit_total": self._user_limit,
            "session_end_listener_errors_total": self._events.errors,
        }
