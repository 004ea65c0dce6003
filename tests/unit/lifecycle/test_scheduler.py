"""The cleanup scheduler's defaults: the backoff base and jitter it is built with, its state before it
first starts, and the interval the manager starts it with."""

from __future__ import annotations

import pytest

from faultmaven.config import Settings
from faultmaven.lifecycle.scheduler import CleanupScheduler, Job
from faultmaven.session_management import SessionManager


@pytest.mark.parametrize(("failures", "delay"), [(1, 1.0), (2, 2.0), (4, 8.0), (20, 600.0)])
def test_the_default_backoff_starts_at_one_second_and_doubles_up_to_the_interval(failures: int, delay: float) -> None:
    """Without a backoff base given, the first retry comes after 1 s, each further one after twice as long."""
    scheduler = CleanupScheduler(rng=lambda: 0.5)  # the middle of the jitter range: no jitter
    scheduler.consecutive_failures = failures
    assert scheduler.next_delay(600.0) == pytest.approx(delay)


@pytest.mark.parametrize(("rng", "delay"), [(0.0, 90.0), (1.0, 110.0)])
def test_the_default_jitter_is_ten_percent_either_way(rng: float, delay: float) -> None:
    """Without a jitter given, a delay lies within +-10% of the interval."""
    assert CleanupScheduler(rng=lambda: rng).next_delay(100.0) == pytest.approx(delay)


async def test_a_new_scheduler_is_idle_with_no_failures() -> None:
    """Before it first starts: not running, not stopping, no failures counted (its first delay is the plain
    interval), and stop() is a no-op."""
    scheduler = CleanupScheduler(rng=lambda: 0.5)
    assert scheduler.running is False
    assert scheduler.stopping is False
    assert scheduler.consecutive_failures == 0
    assert scheduler.next_delay(60.0) == pytest.approx(60.0)
    await scheduler.stop()
    assert scheduler.task is None
    assert scheduler.stopping is False


class RecordingScheduler(CleanupScheduler):
    """The real scheduler, noting the interval it was started with."""

    started_with: float | None = None

    def start(self, job: Job, interval_s: float) -> None:
        self.started_with = interval_s
        super().start(job, interval_s)


async def test_the_manager_s_scheduler_runs_every_15_minutes_unless_told() -> None:
    scheduler = RecordingScheduler()
    manager = SessionManager(settings=Settings(cleanup_enabled=False), scheduler=scheduler)
    await manager.start_cleanup_scheduler()
    assert scheduler.started_with == 15 * 60
    await manager.close()
