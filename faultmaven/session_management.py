"""SessionManager: the public face of the sessions, over a store.

The manager validates arguments, reads the clock and hands every store call's endings to one place
(faultmaven/lifecycle/endings.py). The store owns atomicity: every expiry check happens inside the store call that
acts on it. The cleanup run lives in faultmaven/lifecycle/cleanup.py, the counters in faultmaven/lifecycle/counters.py.

Not found, one convention: reads (get, touch) return None and delete returns False; the writes that must
answer with a session (update, rotate) raise SessionNotFoundError. A malformed id is not found, without
a store call.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from faultmaven.config.config import Settings
from faultmaven.exceptions import SessionNotFoundError
from faultmaven.lifecycle.cleanup import CleanupRunner, StopCheck, yield_to_loop
from faultmaven.lifecycle.clock import NonDecreasing
from faultmaven.lifecycle.counters import SessionCounters
from faultmaven.lifecycle.endings import EndingsHandler
from faultmaven.lifecycle.events import SessionEndDispatcher, SessionEndListener
from faultmaven.lifecycle.scheduler import CleanupScheduler
from faultmaven.observability.histogram import DurationHistogram
from faultmaven.session import (
    Session,
    SessionEnd,
    check_user_id,
    encode_data,
    fingerprint,
    is_valid_id,
)
from faultmaven.stores import SessionStore, store_from_url
from faultmaven.stores.base import Endings, Report
from faultmaven.validation import MAX_PAGE, check_page, check_version, new_record, seconds

__all__ = ["MAX_PAGE", "Session", "SessionEnd", "SessionManager"]

log = logging.getLogger("faultmaven.sessions")
_NOT_FOUND = "no live session with this id"


def _store_for(settings: Settings) -> SessionStore:
    explicit = "max_memory_mb" in settings.model_fields_set  # Redis has its own maxmemory otherwise
    return store_from_url(
        settings.store_url,
        settings.max_memory_mb,
        policy=settings.memory_policy,
        redis_reserve=settings.redis_memory_reserve,
        redis_max_memory_mb=settings.max_memory_mb if explicit else None,
    )


class SessionManager:
    """Server-side sessions with an inactivity timeout and batched background cleanup."""

    def __init__(
        self,
        store: SessionStore | None = None,
        *,
        settings: Settings | None = None,
        clock: Callable[[], float] | None = None,
        scheduler: CleanupScheduler | None = None,
        cleanup_pause: Callable[[], Awaitable[None]] = yield_to_loop,
    ) -> None:
        """`scheduler` runs the background cleanup; `cleanup_pause` runs between its batches."""
        self.settings = settings if settings is not None else Settings.from_env()
        self.store: SessionStore = store if store is not None else _store_for(self.settings)
        self._now = NonDecreasing(clock if clock is not None else time.time)
        self._scheduler = scheduler if scheduler is not None else CleanupScheduler()
        self.counters, self._events = SessionCounters(), SessionEndDispatcher(self._now)
        self._endings = EndingsHandler(self.counters, self._events, self._now)
        batch = self.settings.cleanup_batch_size
        self._cleanup = CleanupRunner(self.store, batch, self._now, self._endings, self.counters, cleanup_pause)

    def _report(self, user_id: str | None = None, *, write: bool = False) -> Report:
        """Where a store call on behalf of `user_id` hands what it ended: the one path for endings."""
        return functools.partial(self._endings.settle, user_id=user_id, write=write)

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
        record = new_record(
            self.settings,
            self.store.new_id,
            self._now,
            user_id=user_id,
            client_id=client_id,
            timeout_minutes=timeout_minutes,
            session_type=session_type,
            data=data,
            metadata=metadata,
        )
        report = self._report(user_id, write=True)
        with self.counters.rejections(record.created_at):
            stored, resumed = await self.store.create(
                record, record.created_at, self.settings.max_per_user, report=report
            )
        self.counters.count_create(resumed, record.created_at)
        log.debug("Session created", extra={"session": fingerprint(stored.session_id), "resumed": resumed})
        return stored.to_session(resumed=resumed)

    async def get_session(self, session_id: str, *, user_id: str | None = None) -> Session | None:
        """The live session (recording activity), or None if unknown, malformed, expired or another user's."""
        return await self.touch_session(session_id, user_id=user_id)

    async def touch_session(self, session_id: str, *, user_id: str | None = None) -> Session | None:
        """Heartbeat: record activity only. Never revives an expired session."""
        record = await self.store.touch(session_id, self._now(), user_id) if is_valid_id(session_id) else None
        return record.to_session() if record else None

    async def rotate_session(self, session_id: str, *, user_id: str | None = None) -> Session:
        """A new id for a live session, everything else kept (ASVS 7.2.4); the old id is gone at once.
        SessionNotFoundError if there is no live session (of this user)."""
        if not is_valid_id(session_id):
            raise SessionNotFoundError(_NOT_FOUND)
        new_id = self.store.new_id(None, None, like=session_id)
        ended, record = Endings(), None  # settled once the session's user is known, returned or raised
        try:
            record = await self.store.rotate(session_id, new_id, self._now(), user_id, report=ended.absorb)
        finally:
            self._endings.settle(ended, user_id=record.user_id if record else user_id)
        if record is None:
            raise SessionNotFoundError(_NOT_FOUND)
        return record.to_session()

    async def list_user_sessions(self, user_id: str, *, limit: int = 50, offset: int = 0) -> list[Session]:
        """A page of the user's live sessions, most recently active first (no activity recorded)."""
        return (await self.user_session_page(user_id, limit=limit, offset=offset))[0]

    async def user_session_page(self, user_id: str, *, limit: int = 50, offset: int = 0) -> tuple[list[Session], int]:
        """The page and how many live sessions the user has in all."""
        check_user_id(user_id)
        check_page(limit, offset)
        records, total = await self.store.list_user(user_id, self._now(), limit, offset)
        return [r.to_session() for r in records], total

    async def revoke_user_sessions(self, user_id: str) -> int:
        """End every session of the user (ASVS 7.4.2, 7.4.5); returns how many were live."""
        check_user_id(user_id)
        return await self.store.revoke_user(user_id, self._now(), report=self._report(user_id))

    def add_session_end_listener(self, callback: SessionEndListener) -> None:
        """Call `callback` once per removed session, after the removal, with a SessionEnd. Sync or async;
        a failure or a slow call (over 5 s) is counted and logged, and never affects a cleanup."""
        self._events.listeners.append(callback)
        self.store.detailed_endings = True

    async def update_session(
        self,
        session_id: str,
        data: Mapping[str, Any],
        *,
        user_id: str | None = None,
        merge: bool = False,
        if_version: int | None = None,
    ) -> Session:
        """Replace the data (`merge`: apply an RFC 7396 merge patch), record activity, version +1 if the data
        changed. One atomic step, changing nothing when it raises: SessionVersionConflict (not `if_version`),
        SessionDataTooLargeError (with the metadata over SESSION_MAX_DATA_BYTES), SessionNotFoundError."""
        if not is_valid_id(session_id):
            raise SessionNotFoundError(_NOT_FOUND)
        check_version(if_version)
        limit, now = self.settings.max_data_bytes, self._now()
        blob = encode_data(data, limit, "merge patch" if merge else "session data")
        report = self._report(user_id, write=True)
        with self.counters.rejections(now):
            record = await self.store.replace_data(
                session_id, blob, now, user_id, report=report, limit=limit, merge=bool(merge), if_version=if_version
            )
        if record is None:
            raise SessionNotFoundError(_NOT_FOUND)
        return record.to_session()

    async def delete_session(self, session_id: str, *, user_id: str | None = None) -> bool:
        """Remove the session; True only if it was live (an expired one is removed but returns False)."""
        if not is_valid_id(session_id):
            return False
        was_live = await self.store.delete(session_id, self._now(), user_id, report=self._report(user_id))
        log.debug("Session deleted", extra={"session": fingerprint(session_id), "was_live": bool(was_live)})
        return bool(was_live)

    async def cleanup_inactive_sessions(self, max_age_minutes: float | None = None) -> int:
        """Remove every expired session and, with `max_age_minutes`, every one idle that long; how many."""
        return await self.run_cleanup(max_age_minutes)

    async def run_cleanup(
        self, max_age_minutes: float | None = None, *, trigger: str = "manual", leased: bool = False
    ) -> int:
        """A cleanup run; `trigger` labels its audit record; `leased` cleans each part only under its lease,
        as the scheduler does, so replicas sharing a store never clean one part at the same time."""
        max_idle_s = None if max_age_minutes is None else seconds("max_age_minutes", max_age_minutes, allow_zero=True)
        return await self._cleanup.run(max_idle_s, trigger=trigger, leased=leased)

    async def _scheduled_run(self, should_stop: StopCheck) -> int:
        """What the scheduler runs: one replica per part at a time (leases), ending at a graceful stop."""
        return await self._cleanup.run(None, trigger="scheduled", leased=True, should_stop=should_stop)

    async def start_cleanup_scheduler(self, interval_minutes: float = 15) -> None:
        """Start the background cleanup task; a second call while it runs does nothing."""
        self._scheduler.start(self._scheduled_run, seconds("interval_minutes", interval_minutes, allow_zero=False))

    async def stop_cleanup_scheduler(self) -> None:
        """Stop gracefully: the running batch finishes, then the task is awaited. Idempotent."""
        await self._scheduler.stop()

    async def flush_session_ends(self, timeout_s: float = 5.0) -> None:
        """Wait (at most `timeout_s`) until the listeners had every session ended so far."""
        await self._events.drain(timeout_s)

    async def close(self) -> None:
        await self.stop_cleanup_scheduler()
        await self._events.close()
        await self.store.close()

    @property
    def cleanup_durations(self) -> DurationHistogram:
        return self._cleanup.durations

    async def refresh_store_stats(self) -> None:
        """Read the store's counts now (a Redis store otherwise serves a snapshot refreshed in the background)."""
        await self.store.refresh_stats(self._now())

    def ended_by_reason(self) -> dict[str, int]:
        return dict(self.counters.ended)

    def rejected_by_reason(self) -> dict[str, int]:
        return self.counters.rejected_by_reason()

    def refusing_creates(self) -> bool:
        return self.counters.refusing(self._now())

    def budget_applies(self) -> bool:  # SESSION_MAX_MEMORY_MB bounds Redis only when set explicitly
        return self.store.budget_from_settings

    def store_pressure(self) -> list[str]:  # the store's memory-limit reasons for /health
        return self.store.memory_reasons()

    def get_session_metrics(self) -> dict[str, int | float | None]:
        """Counters and store counts; O(1) amortised, safe to call on every request."""
        stats = self.store.stats(self._now())
        return self.counters.metrics(stats, self._scheduler.running, self._events.errors)
