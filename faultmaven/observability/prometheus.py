"""Prometheus exposition of the session metrics, read from the manager at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from faultmaven.exceptions import SessionStoreException
from faultmaven.observability.loop_monitor import LoopMonitor
from faultmaven.session_management import SessionManager

CONTENT_TYPE = CONTENT_TYPE_LATEST

_MIB = 1024 * 1024
# JSON metric key -> (Prometheus name, help, factor to base units: bytes, seconds)
_GAUGES = {
    "active_sessions": ("faultmaven_sessions_active", "Live sessions stored.", 1),
    "expired_sessions": ("faultmaven_sessions_expired", "Expired sessions awaiting cleanup.", 1),
    "memory_usage_mb": ("faultmaven_session_store_memory_bytes", "Estimated session store memory.", _MIB),
    "scheduler_running": ("faultmaven_session_cleanup_scheduler_up", "1 while the cleanup scheduler runs.", 1),
    "last_cleanup_duration_ms": (
        "faultmaven_session_cleanup_last_duration_seconds",
        "Duration of the last cleanup run.",
        1e-3,
    ),
}
_COUNTERS = {
    "cleanup_runs": ("faultmaven_session_cleanup_runs", "Finished cleanup runs."),
    "sessions_cleaned_total": ("faultmaven_sessions_cleaned", "Sessions removed by cleanup."),
    "cleanup_errors_total": ("faultmaven_session_cleanup_errors", "Per-session cleanup failures and failed runs."),
    "sessions_evicted_total": ("faultmaven_sessions_evicted", "Sessions evicted to stay under the memory budget."),
    "sessions_created_total": ("faultmaven_sessions_created", "Sessions created."),
    "sessions_resumed_total": ("faultmaven_sessions_resumed", "Creates that resumed a live session by client_id."),
    "sessions_rotated_total": ("faultmaven_sessions_rotated", "Session ids rotated."),
    "sessions_revoked_total": ("faultmaven_sessions_revoked", "Live sessions ended by a revoke-all."),
}


class SessionCollector:
    """A custom collector: no state of its own, so the numbers are the manager's, never a copy."""

    def __init__(self, manager: Callable[[], SessionManager], monitor: LoopMonitor) -> None:
        self._manager = manager
        self._monitor = monitor

    def collect(self) -> Iterator[Metric]:
        manager = self._manager()  # one manager for the whole scrape, even if the app swaps it meanwhile
        try:
            metrics = manager.get_session_metrics()
        except SessionStoreException:
            yield GaugeMetricFamily("faultmaven_session_store_up", "1 while the session store answers.", value=0)
            return
        yield GaugeMetricFamily("faultmaven_session_store_up", "1 while the session store answers.", value=1)
        for key, (name, doc, factor) in _GAUGES.items():
            value = metrics.get(key)
            if value is not None:
                yield GaugeMetricFamily(name, doc, value=float(value) * factor)
        for key, (name, doc) in _COUNTERS.items():
            yield CounterMetricFamily(name, doc, value=float(metrics[key] or 0))
        ended = CounterMetricFamily(
            "faultmaven_sessions_ended", "Sessions ended by this process, by reason.", labels=["reason"]
        )
        for reason, count in manager.ended_by_reason().items():
            ended.add_metric([reason], float(count))
        yield ended
        rejected = CounterMetricFamily(
            "faultmaven_sessions_rejected",
            "Creates and updates refused by the memory limits, by reason: store_full (at the budget, or a Redis "
            "master within its reserve) or too_large (one session larger than the whole budget).",
            labels=["reason"],
        )
        for reason, count in manager.rejected_by_reason().items():
            rejected.add_metric([reason], float(count))
        yield rejected
        hist = manager.cleanup_durations
        yield HistogramMetricFamily(
            "faultmaven_session_cleanup_duration_seconds",
            "Duration of finished cleanup runs.",
            buckets=hist.cumulative(),
            sum_value=hist.total_s,
        )
        yield GaugeMetricFamily(
            "faultmaven_event_loop_recent_max_stall_seconds",
            "Longest event-loop stall in the last minute.",
            value=self._monitor.recent_max_stall_s(),
        )


def make_registry(manager: Callable[[], SessionManager], monitor: LoopMonitor) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SessionCollector(manager, monitor))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
