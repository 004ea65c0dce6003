"""The cleanup run: batches over each part of the store, a lease per part, a yield between batches.

A run visits the store's parts one after the other. With `leased` (the scheduler's runs, where several
replicas may share a store) each part is cleaned only under its lease, renewed after every batch, so one
replica cleans a part at a time and a replica that dies frees it within LEASE_TTL_S. `should_stop` (the
scheduler's graceful stop) ends the run after the current batch. Every batch re-checked, atomically with
each removal, what it removed, so stopping at any batch boundary is safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from faultmaven.exceptions import SessionCleanupException, SessionStoreException
from faultmaven.lifecycle.counters import SessionCounters
from faultmaven.lifecycle.endings import EndingsHandler
from faultmaven.observability.audit import RunRecord, log_run
from faultmaven.observability.histogram import DurationHistogram
from faultmaven.stores.base import CleanupOperations, Endings, StoreMetrics


class CleanupStore(CleanupOperations, StoreMetrics, Protocol):
    """What a cleanup run uses of a store: its cleanup operations, and the stats it refreshes."""


log = logging.getLogger("faultmaven.sessions")

LEASE_TTL_S = 30.0  # renewed after every batch; a replica that dies mid-run frees it within this time
StopCheck = Callable[[], bool]


async def yield_to_loop() -> None:
    """Let live requests run between batches.

    redis-py can swallow a cancellation that arrives while it awaits a reply (the batch then completes,
    which is safe); the request is still on the task, so it is honoured here, at a batch boundary.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError("cleanup cancelled")
    await asyncio.sleep(0)


def _never() -> bool:
    return False


@dataclass(slots=True)
class _Progress:
    """What a run has done so far, across the store's parts."""

    removed: int = 0
    freed: int = 0
    held: int = 0  # parts whose lease this run held
    failed: set[str] = field(default_factory=set)


@dataclass(eq=False)
class CleanupRunner:
    """One cleanup at a time over a store; counts and log records for each run. `pause` runs between
    batches (tests pass one that acts at exactly that point)."""

    store: CleanupStore
    batch_size: int
    clock: Callable[[], float]
    endings: EndingsHandler
    counters: SessionCounters
    pause: Callable[[], Awaitable[None]] = yield_to_loop
    durations: DurationHistogram = field(default_factory=DurationHistogram)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    async def run(
        self, max_idle_s: float | None, *, trigger: str, leased: bool = False, should_stop: StopCheck = _never
    ) -> int:
        """Remove what is expired (and, with `max_idle_s`, idle that long); how many. `trigger` labels the
        audit record only."""
        async with self._lock:
            run_id, started_at, t0 = secrets.token_hex(6), self.clock(), time.perf_counter()
            reason = "expired" if max_idle_s is None else f"expired or idle for at least {max_idle_s / 60:g} minutes"
            progress = _Progress()
            try:
                await self._parts(max_idle_s, leased, should_stop, progress)
                if leased and not progress.held:
                    self.counters.run_skipped()
                    log.info("Session cleanup skipped: other replicas hold every cleanup lease")
                    return 0
                await self.store.refresh_stats(self.clock())
            except Exception as exc:
                self.counters.run_failed()
                record = self._record(run_id, trigger, started_at, t0, progress, f"failed: {reason}", errors=1)
                log_run(record, logging.ERROR, error_type=type(exc).__name__, error=str(exc))
                raise SessionCleanupException(f"cleanup run {run_id} failed: {type(exc).__name__}: {exc}") from exc
            finally:
                self.endings.flush()  # the run is over: listeners get its endings now
            record = self._record(run_id, trigger, started_at, t0, progress, reason)
            self.durations.observe(record.duration_ms / 1000.0)
            self.counters.run_finished(record.finished_at, record.duration_ms)
            log_run(record)
            return progress.removed

    def _record(
        self, run_id: str, trigger: str, started_at: float, t0: float, progress: _Progress, reason: str, errors: int = 0
    ) -> RunRecord:
        duration_ms = (time.perf_counter() - t0) * 1000.0
        errors += len(progress.failed)
        return RunRecord(
            run_id=run_id,
            trigger=trigger,
            started_at=started_at,
            finished_at=self.clock(),
            removed=progress.removed,
            duration_ms=duration_ms,
            freed_bytes=progress.freed,
            errors=errors,
            reason=reason,
        )

    async def _parts(self, max_idle_s: float | None, leased: bool, should_stop: StopCheck, progress: _Progress) -> None:
        """Each part in turn, under its lease when `leased` (a part whose lease another holds is skipped)."""
        for part in self.store.cleanup_parts():
            lease: str | None = None
            if leased:
                lease = await self.store.acquire_lease(LEASE_TTL_S, part)
                if lease is None:
                    continue
                progress.held += 1
            try:
                await self._clean_part(part, max_idle_s, lease, should_stop, progress)
            finally:
                # Released however the part ends (done, failed, cancelled), so the next replica need not
                # wait for the TTL; if the store is down the release fails too and the TTL frees it.
                if lease is not None:
                    with contextlib.suppress(SessionStoreException):
                        await self.store.release_lease(lease)
            if should_stop():
                return

    async def _clean_part(
        self, part: int, max_idle_s: float | None, lease: str | None, should_stop: StopCheck, progress: _Progress
    ) -> None:
        """Batches over one part until it has nothing due, the lease is lost or the run should stop."""

        def report(ended: Endings) -> None:
            self.endings.settle(ended, wake=False)  # listeners run once the run is done, never during it
            progress.freed += ended.freed_bytes

        while True:
            now = self.clock()
            batch = await self.store.remove_idle(now, max_idle_s, self.batch_size, progress.failed, part, report=report)
            progress.removed += batch.removed
            self.counters.batch_cleaned(batch.removed, len(batch.failed))
            progress.failed.update(batch.failed)
            if batch.exhausted or not (batch.removed or batch.failed) or should_stop():
                return
            if lease is not None and not await self.store.renew_lease(lease, LEASE_TTL_S):
                return  # lease lost: every batch so far re-checked what it removed, so stopping is safe
            await self.pause()
