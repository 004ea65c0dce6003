"""What /health and /metrics read: a small protocol the session manager satisfies, so observability
depends on these few calls and not on the manager (which sits above it)."""

from __future__ import annotations

from typing import Protocol

from faultmaven.config.config import Settings
from faultmaven.observability.histogram import DurationHistogram


class MetricsSource(Protocol):
    """The manager's read-only face for health and metrics."""

    @property
    def settings(self) -> Settings: ...

    @property
    def cleanup_durations(self) -> DurationHistogram: ...

    def get_session_metrics(self) -> dict[str, int | float | None]: ...

    def ended_by_reason(self) -> dict[str, int]: ...

    def rejected_by_reason(self) -> dict[str, int]: ...

    def refusing_creates(self) -> bool: ...

    def store_pressure(self) -> list[str]: ...

    def budget_applies(self) -> bool: ...
