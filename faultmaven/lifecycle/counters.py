"""The manager's counters and `get_session_metrics()`: each number has one place where it changes.

Endings are counted only from what stores report (see faultmaven/lifecycle/endings.py), so the counts by reason,
the totals and `average_session_duration` always agree with the session-end events.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from faultmaven.exceptions import SessionOverMemoryBudgetError, SessionStoreFullError
from faultmaven.stores.base import REASONS, Endings, StoreStats

REFUSING_FOR_S = 60.0  # /health reports refused creates for this long after the last one
# A create that succeeds this long after the last refusal ends the report sooner. Sooner than that, a
# success only means a cleanup freed a few slots of a store that is still full: /health would flap.
RECOVERED_AFTER_S = 5.0
_MIB = 1024 * 1024


class SessionCounters:
    """Counts of creates, endings, refusals and cleanup runs; reading them is O(1)."""

    def __init__(self) -> None:
        self.created = 0
        self.resumed = 0
        self.ended = dict.fromkeys(REASONS, 0)  # sessions ended, by the reason a SessionEnd carries
        self.ended_lifetime_s = 0.0
        self.cleanup_runs = 0
        self.sessions_cleaned = 0
        self.cleanup_errors = 0
        self.cleanup_skipped = 0
        self.last_cleanup_time: float | None = None
        self.last_cleanup_duration_ms: float | None = None
        self.rejected_full = 0
        self.rejected_too_large = 0
        self._refusing_since: float | None = None  # last store-full refusal, until the store recovers

    def count_endings(self, endings: Endings) -> None:
        for reason, count in endings.counts.items():
            self.ended[reason] = self.ended.get(reason, 0) + count
        self.ended_lifetime_s += endings.lifetime_s

    def count_create(self, resumed: bool, now: float) -> None:
        if resumed:
            self.resumed += 1
            return
        self.created += 1
        since = self._refusing_since
        if since is not None and now - since >= RECOVERED_AFTER_S:
            self._refusing_since = None

    def batch_cleaned(self, removed: int, failed: int) -> None:
        """One cleanup batch removed `removed` sessions and failed to remove `failed`."""
        self.sessions_cleaned += removed
        self.cleanup_errors += failed

    def run_failed(self) -> None:
        self.cleanup_errors += 1

    def run_skipped(self) -> None:  # other replicas held every lease
        self.cleanup_skipped += 1

    def run_finished(self, at: float, duration_ms: float) -> None:
        self.cleanup_runs += 1
        self.last_cleanup_time = at
        self.last_cleanup_duration_ms = duration_ms

    @contextlib.contextmanager
    def rejections(self, now: float) -> Iterator[None]:
        """Count a create or update the memory limits refuse (the exception goes on)."""
        try:
            yield
        except SessionOverMemoryBudgetError:
            self.rejected_too_large += 1
            raise
        except SessionStoreFullError:
            self.rejected_full += 1
            self._refusing_since = now
            raise

    def rejected_by_reason(self) -> dict[str, int]:
        """Refused creates and updates: the store was full, or one session is over the whole budget."""
        return {"store_full": self.rejected_full, "too_large": self.rejected_too_large}

    def refusing(self, now: float) -> bool:
        """From a store-full refusal until a create succeeds RECOVERED_AFTER_S or more after the last
        refusal, or REFUSING_FOR_S after it."""
        since = self._refusing_since
        return since is not None and now - since < REFUSING_FOR_S

    def metrics(
        self, stats: StoreStats, scheduler_running: bool, listener_errors: int
    ) -> dict[str, int | float | None]:
        """The `get_session_metrics()` keys."""
        ended = sum(self.ended.values())
        return {
            "active_sessions": stats.active,
            "expired_sessions": stats.expired,
            "cleanup_runs": self.cleanup_runs,
            "last_cleanup_time": self.last_cleanup_time,
            "average_session_duration": self.ended_lifetime_s / ended if ended else None,
            "memory_usage_mb": None if stats.memory_bytes is None else stats.memory_bytes / _MIB,
            "sessions_cleaned_total": self.sessions_cleaned,
            "cleanup_errors_total": self.cleanup_errors,
            "last_cleanup_duration_ms": self.last_cleanup_duration_ms,
            "scheduler_running": scheduler_running,
            "sessions_evicted_total": self.ended["evicted"],
            "sessions_rejected_total": self.rejected_full + self.rejected_too_large,
            "cleanup_skipped_total": self.cleanup_skipped,
            "store_stats_age_s": stats.age_s,
            "sessions_created_total": self.created,
            "sessions_resumed_total": self.resumed,
            "sessions_rotated_total": self.ended["rotated"],
            "sessions_revoked_total": self.ended["revoked"],
            "sessions_user_limit_total": self.ended["user_limit"],
            "session_end_listener_errors_total": listener_errors,
        }
