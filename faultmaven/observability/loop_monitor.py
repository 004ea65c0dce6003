"""Measures how late the event loop wakes a timer: the longest stall that any request could have seen.

A cleanup that blocked the loop would show here first; the load harness gates on this figure.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque


class LoopMonitor:
    """Sleeps `interval_s` in a loop and records how much later than asked it woke up."""

    def __init__(self, interval_s: float = 0.01, window_s: int = 60, warmup_s: float = 2.0) -> None:
        self.interval_s = interval_s
        self.warmup_s = warmup_s  # start-up work (binding, first imports) is not what requests see
        self.max_stall_s = 0.0
        self._window_s = window_s
        self._buckets: deque[tuple[int, float]] = deque()  # (whole second, longest stall in it)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="faultmaven-loop-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def record(self, now: float, stall_s: float) -> None:
        self.max_stall_s = max(self.max_stall_s, stall_s)
        second = int(now)
        if self._buckets and self._buckets[-1][0] == second:
            if stall_s > self._buckets[-1][1]:
                self._buckets[-1] = (second, stall_s)
        else:
            self._buckets.append((second, stall_s))
        while self._buckets and self._buckets[0][0] <= second - self._window_s:
            self._buckets.popleft()

    def recent_max_stall_s(self) -> float:
        """The longest stall in the last `window_s` seconds."""
        return max((stall for _, stall in self._buckets), default=0.0)

    def snapshot(self) -> dict[str, float]:
        return {
            "event_loop_max_stall_ms": round(self.max_stall_s * 1000.0, 3),
            "event_loop_recent_max_stall_ms": round(self.recent_max_stall_s() * 1000.0, 3),
        }

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        counting_from = loop.time() + self.warmup_s
        while True:
            asked = loop.time() + self.interval_s
            await asyncio.sleep(self.interval_s)
            now = loop.time()
            if now >= counting_from:
                self.record(now, max(0.0, now - asked))
