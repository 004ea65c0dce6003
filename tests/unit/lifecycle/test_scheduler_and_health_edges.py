"""The scheduler's timing rules and failure log, and the /health verdict at its exact bounds: edges that
`tox -e mutation` found unpinned (perf/mutation-survivors.md)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

from faultmaven.config import Settings
from faultmaven.lifecycle.scheduler import CleanupScheduler
from faultmaven.observability.health import degradation_reasons
from faultmaven.session_management import SessionManager

HEALTHY: dict[str, Any] = {
    "active_sessions": 10,
    "memory_usage_mb": 1.0,
    "scheduler_running": True,
    "cleanup_errors_total": 0,
    "sessions_cleaned_total": 0,
}


@pytest.mark.parametrize(("rng", "delay"), [(0.0, 54.0), (0.25, 57.0), (0.5, 60.0), (1.0, 66.0)])
def test_the_delay_carries_plus_minus_jitter(rng: float, delay: float) -> None:
    scheduler = CleanupScheduler(jitter=0.1, rng=lambda: rng)
    assert scheduler.next_delay(60.0) == pytest.approx(delay)


async def test_failures_are_logged_counted_one_by_one_and_reset_by_a_restart(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    async def failing(should_stop: Callable[[], bool]) -> None:
        nonlocal calls
        calls += 1
        while calls > 3 and not should_stop():  # a fourth run fails only once the stop is asked for
            await asyncio.sleep(0.001)
        raise KeyError("boom")

    scheduler = CleanupScheduler(backoff_base_s=0.001, jitter=0.0)
    caplog.set_level(logging.ERROR, "faultmaven.lifecycle.scheduler")
    scheduler.start(failing, 0.01)
    async with asyncio.timeout(30):
        while calls < 3:
            await asyncio.sleep(0.001)
    await scheduler.stop()
    failed = [r for r in caplog.records if r.name == "faultmaven.lifecycle.scheduler"]
    assert [r.getMessage() for r in failed] == ["Scheduled session cleanup failed; retrying with backoff"] * calls
    assert [(r.error_type, r.consecutive_failures) for r in failed] == [("KeyError", n) for n in range(1, calls + 1)]  # type: ignore[attr-defined]
    # Three failures, or four if a fourth run began before the stop: a backoff of 4 or 8 ms, below the 10 ms
    # interval. (Failing freely, a test that looked late on a busy machine could find a fifth, at the cap.)
    assert calls in (3, 4) and scheduler.consecutive_failures == calls and scheduler.next_delay(0.01) < 0.01
    scheduler.start(failing, 60.0)  # a fresh start waits the full interval again
    assert scheduler.consecutive_failures == 0 and scheduler.next_delay(60.0) == 60.0
    await scheduler.stop()


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda m: m.start_cleanup_scheduler("5"), TypeError, "interval_minutes must be a number of minutes, not str"),
        (lambda m: m.start_cleanup_scheduler(0), ValueError, "interval_minutes must be a finite number > 0, got 0"),
        (
            lambda m: m.cleanup_inactive_sessions(True),
            TypeError,
            "max_age_minutes must be a number of minutes, not bool",
        ),
        (lambda m: m.cleanup_inactive_sessions(-1), ValueError, "max_age_minutes must be a finite number >= 0, got -1"),
    ],
)
async def test_bad_minutes_name_the_argument_the_rule_and_the_value(
    manager: SessionManager, call: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as raised:
        await call(manager)
    assert str(raised.value) == message
    assert not manager.get_session_metrics()["scheduler_running"]


def test_healthy_metrics_give_no_reason() -> None:
    assert degradation_reasons(HEALTHY, Settings(health_max_active=10, max_memory_mb=100)) == []


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"active_sessions": 11}, "active_sessions above SESSION_HEALTH_MAX_ACTIVE"),
        (
            {"memory_usage_mb": 95.0},
            "memory_usage_mb at SESSION_MAX_MEMORY_MB (new sessions are refused)",
        ),
        ({"scheduler_running": False}, "cleanup scheduler enabled but not running"),
        ({"cleanup_errors_total": 6, "sessions_cleaned_total": 94}, "cleanup error rate above 5%"),
    ],
)
def test_each_bound_crossed_gives_its_reason(change: dict[str, Any], reason: str) -> None:
    settings = Settings(health_max_active=10, max_memory_mb=100)
    assert degradation_reasons(HEALTHY | change, settings) == [reason]


@pytest.mark.parametrize(
    ("policy", "what_writes_do"),
    [("reject", "new sessions are refused"), ("evict", "writes evict the least recently active")],
)
def test_at_the_memory_budget_the_reason_says_what_writes_do_under_the_policy(policy: str, what_writes_do: str) -> None:
    settings = Settings(max_memory_mb=100, memory_policy=policy)
    reason = f"memory_usage_mb at SESSION_MAX_MEMORY_MB ({what_writes_do})"
    assert degradation_reasons(HEALTHY | {"memory_usage_mb": 95.0}, settings) == [reason]
    assert degradation_reasons(HEALTHY | {"memory_usage_mb": 95.0}, settings, budget_applies=False) == []


def test_just_inside_each_bound_is_healthy() -> None:
    settings = Settings(health_max_active=10, max_memory_mb=100)
    inside = {"memory_usage_mb": 94.99, "cleanup_errors_total": 5, "sessions_cleaned_total": 95}
    assert degradation_reasons(HEALTHY | inside, settings) == []
    assert degradation_reasons(HEALTHY | {"scheduler_running": False}, Settings(cleanup_enabled=False)) == []


async def test_a_run_that_outlives_the_grace_period_is_cancelled_and_the_stop_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def stuck(should_stop: Callable[[], bool]) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)  # a run that never looks at `stopping`
        except asyncio.CancelledError:
            cancelled.set()
            raise

    scheduler = CleanupScheduler(jitter=0.0)
    caplog.set_level(logging.INFO, "faultmaven.lifecycle.scheduler")
    scheduler.start(stuck, 0.001)
    async with asyncio.timeout(30):
        await started.wait()
        await scheduler.stop(grace_s=0.05)
    assert cancelled.is_set() and not scheduler.running
    assert [r.getMessage() for r in caplog.records] == ["Session cleanup scheduler stopped"]
