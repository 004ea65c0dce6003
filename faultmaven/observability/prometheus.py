"""Prometheus exposition of the session metrics, read from the manager at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from faultmaven.exceptions import SessionStoreException
from faultmaven.observability.histogram import DurationHistogram
from faultmaven.observability.loop_monitor import LoopMonitor
from faultmaven.observability.source import MetricsSource

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


_ENDED_HELP = "Sessions ended by this process, by reason."
_REJECTED_HELP = (
    "Creates and updates refused by the memory limits, by reason: store_full (at the budget, or a Redis "
    "master within its reserve) or too_large (one session larger than the whole budget)."
)


class SessionCollector:
    """A custom collector: no state of its own, so the numbers are the manager's, never a copy."""

    def __init__(self, manager: Callable[[], MetricsSource], monitor: LoopMonitor) -> None:
        self._manager = manager
        self._monitor = monitor

    def collect(self) -> Iterator[Metric]:
        manager = self._manager()  # one manager for the whole scrape, even if the app swaps it meanwhile
        try:
            metrics = manager.get_session_metrics()
        except SessionStoreException:
            yield _store_up(False)
            return
        yield _store_up(True)
        yield from _metric_families(metrics)
        yield _by_reason("faultmaven_sessions_ended", _ENDED_HELP, manager.ended_by_reason())
        yield _by_reason("faultmaven_sessions_rejected", _REJECTED_HELP, manager.rejected_by_reason())
        yield _cleanup_histogram(manager.cleanup_durations)
        yield GaugeMetricFamily(
            "faultmaven_event_loop_recent_max_stall_seconds",
            "Longest event-loop stall in the last minute.",
            value=self._monitor.recent_max_stall_s(),
        )


def _store_up(up: bool) -> Metric:
    return GaugeMetricFamily("faultmaven_session_store_up", "1 while the session store answers.", value=int(up))


def _metric_families(metrics: Mapping[str, int | float | None]) -> Iterator[Metric]:
    """The gauges (those with a value) and counters read from get_session_metrics(), in base units."""
    for key, (name, doc, factor) in _GAUGES.items():
        value = metrics.get(key)
        if value is not None:
            yield GaugeMetricFamily(name, doc, value=float(value) * factor)
    for key, (name, doc) in _COUNTERS.items():
        yield CounterMetricFamily(name, doc, value=float(metrics[key] or 0))


def _by_reason(name: str, doc: str, counts: Mapping[str, int]) -> Metric:
    family = CounterMetricFamily(name, doc, labels=["reason"])
    for reason, count in counts.items():
        family.add_metric([reason], float(count))
    return family


def _cleanup_histogram(hist: DurationHistogram) -> Metric:
    return HistogramMetricFamily(
        "faultmaven_session_cleanup_duration_seconds",
        "Duration of finished cleanup runs.",
        buckets=hist.cumulative(),
        sum_value=hist.total_s,
    )


def make_registry(manager: Callable[[], MetricsSource], monitor: LoopMonitor) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SessionCollector(manager, monitor))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
