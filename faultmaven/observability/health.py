"""The /health verdict from the session metrics and the configured limits."""

from __future__ import annotations

from typing import Any

from faultmaven.config.config import Settings
from faultmaven.observability.source import MetricsSource

MAX_CLEANUP_ERROR_RATE = 0.05
MEMORY_BUDGET_FILL = 0.95  # with the budget enforced the store never exceeds it: "at the budget" is >= 95%


def degradation_reasons(metrics: dict[str, Any], settings: Settings, *, budget_applies: bool = True) -> list[str]:
    """Why the session service is degraded; an empty list means healthy. `budget_applies` is False for a
    store that SESSION_MAX_MEMORY_MB does not bound (Redis, unless it is set explicitly)."""
    reasons = []
    active, memory_mb = metrics["active_sessions"], metrics["memory_usage_mb"]  # None until a store is read
    if active is not None and active > settings.health_max_active:
        reasons.append("active_sessions above SESSION_HEALTH_MAX_ACTIVE")
    if budget_applies and memory_mb is not None and memory_mb >= settings.max_memory_mb * MEMORY_BUDGET_FILL:
        if settings.memory_policy == "evict":
            reasons.append("memory_usage_mb at SESSION_MAX_MEMORY_MB (writes evict the least recently active)")
        else:
            reasons.append("memory_usage_mb at SESSION_MAX_MEMORY_MB (new sessions are refused)")
    if settings.cleanup_enabled and not metrics["scheduler_running"]:
        reasons.append("cleanup scheduler enabled but not running")
    errors = metrics["cleanup_errors_total"]
    attempts = metrics["sessions_cleaned_total"] + errors
    if attempts and errors / attempts > MAX_CLEANUP_ERROR_RATE:
        reasons.append("cleanup error rate above 5%")
    return reasons


def health_report(manager: MetricsSource) -> dict[str, Any]:
    """The /health body, always from the manager that serves the routes."""
    try:
        metrics = manager.get_session_metrics()
    except Exception as exc:  # the store is down: report it, keep answering
        service: dict[str, Any] = {"status": "unhealthy", "error": f"{type(exc).__name__}: {exc}"}
        return {"status": "degraded", "services": {"session_manager": service}}
    reasons = degradation_reasons(metrics, manager.settings, budget_applies=manager.budget_applies())
    if manager.refusing_creates():
        reasons.append("session store full: new sessions are refused (503, SESSION_MEMORY_POLICY=reject)")
    reasons += manager.store_pressure()
    status = "degraded" if reasons else "healthy"
    service = {"status": status, "metrics": metrics}
    if reasons:
        service["reasons"] = reasons
    return {"status": status, "services": {"session_manager": service}}
