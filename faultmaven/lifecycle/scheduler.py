"""The background cleanup scheduler: one asyncio task that runs a job every interval.

The job is given at start and receives the scheduler's stop check, so a run can end gracefully after its
current batch; the scheduler knows nothing else of what the job does.

A failed run is logged and retried sooner, with exponential backoff capped at the interval; no failure
ends the task. Every delay carries a little jitter so that replicas started together spread out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable

log = logging.getLogger("faultmaven.lifecycle.scheduler")

Job = Callable[[Callable[[], bool]], Awaitable[object]]  # called with "is the scheduler stopping?"


class CleanupScheduler:
    """Start/stop are idempotent; stop is graceful (the job sees its stop check and ends after its batch)."""

    def __init__(
        self,
        *,
        backoff_base_s: float = 1.0,
        jitter: float = 0.1,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._backoff_base_s = backoff_base_s
        self._jitter = jitter
        self._rng = rng
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.consecutive_failures = 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The loop's task while it runs (start() while running keeps it)."""
        return self._task

    def start(self, job: Job, interval_s: float) -> None:
        if self.running:
            return
        self._stop = asyncio.Event()
        self.consecutive_failures = 0
        self._task = asyncio.create_task(self._loop(job, interval_s), name="faultmaven-session-cleanup")

    async def stop(self, grace_s: float = 30.0) -> None:
        """Ask the loop to end, let the current batch finish, then await the task (cancel after grace_s)."""
        task = self._task
        if task is None:
            return
        self._stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), grace_s)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        finally:
            self._task = None
            log.info("Session cleanup scheduler stopped")

    def next_delay(self, interval_s: float) -> float:
        """Seconds to the next run: the interval, or after failures an exponential backoff from
        `backoff_base_s` (never over the interval), each with +-`jitter` so that replicas drift apart."""
        base = interval_s
        if self.consecutive_failures:
            base = min(interval_s, self._backoff_base_s * 2 ** (self.consecutive_failures - 1))
        return base * (1 + self._jitter * (2 * self._rng() - 1))

    async def _loop(self, job: Job, interval_s: float) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.next_delay(interval_s))
            if self._stop.is_set():
                return
            try:
                await job(self._stop.is_set)
            except Exception as exc:  # never let one run end the scheduler
                self.consecutive_failures += 1
                log.error(
                    "Scheduled session cleanup failed; retrying with backoff",
                    extra={"error_type": type(exc).__name__, "consecutive_failures": self.consecutive_failures},
                )
            else:
                self.consecutive_failures = 0
