"""The one path for session endings: every store call that can remove sessions hands its Endings here.

From them, and only from them, come the counters by reason (and `average_session_duration` over every
ending), the audit records of deletions, revocations, rotations and user-limit endings, the eviction run's log
record, and the SessionEnd events the listeners receive.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from faultmaven.lifecycle.counters import SessionCounters
from faultmaven.lifecycle.events import SessionEndDispatcher
from faultmaven.observability.audit import RunRecord, audit_event, log_run
from faultmaven.stores.base import Endings

AUDITED = ("deleted", "rotated", "user_limit", "revoked")  # endings that write an audit record per call
_MADE_ROOM = ("expired", "evicted")  # what a write ends to fit under the memory budget
_SWEPT = frozenset(("expired", "idle"))  # what a cleanup batch ends
_EVICTION = "memory budget (SESSION_MAX_MEMORY_MB): least recently active sessions evicted"


class EndingsHandler:
    """Turns what stores ended into counts, audit records, log records and listener calls."""

    def __init__(self, counters: SessionCounters, events: SessionEndDispatcher, clock: Callable[[], float]) -> None:
        self._counters = counters
        self._events = events
        self._clock = clock

    def settle(self, endings: Endings, *, user_id: str | None = None, write: bool = False, wake: bool = True) -> None:
        """Account for `endings`: those of a call on behalf of `user_id`; `write` marks a create or update,
        whose expired or evicted endings made room under the memory budget; `wake` False holds the events
        back until flush() (a cleanup run delivers them when it ends)."""
        counts = endings.counts
        if not counts:
            return
        self._counters.count_endings(endings)
        if write or not counts.keys() <= _SWEPT:  # a cleanup batch (the common case) has nothing to record
            self._record(endings, user_id, write)
        self._events.publish(endings, wake=wake)

    def _record(self, endings: Endings, user_id: str | None, write: bool) -> None:
        """The audit records of revocations, rotations and user-limit endings; a write's eviction record."""
        now = self._clock()
        for event in AUDITED:
            count = endings.counts.get(event, 0)
            if count:
                audit_event(event, user_id, count, now)
        made_room = sum(endings.counts.get(reason, 0) for reason in _MADE_ROOM) if write else 0
        if made_room:
            run = RunRecord(
                run_id=secrets.token_hex(6),
                trigger="eviction",
                started_at=now,
                finished_at=now,
                removed=made_room,
                duration_ms=0.0,
                freed_bytes=endings.freed_bytes,
                errors=0,
                reason=_EVICTION,
            )
            log_run(run)

    def flush(self) -> None:
        """Let the listeners have every ending held back so far."""
        self._events.flush()
