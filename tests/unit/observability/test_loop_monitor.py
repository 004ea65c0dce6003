"""The event-loop stall monitor sees a blocking call."""

from __future__ import annotations

import asyncio
import time

from faultmaven.observability.loop_monitor import LoopMonitor


class LoopTurns:
    """The longest time between two turns of the running event loop, seen by a callback that runs on every
    turn (and once more at `stop`). A task that asks to wake at t is resumed within a few turns after t (the
    turn that runs its timer, the next that resumes it), so the lateness any task can see is at most a few
    of these gaps: the loop's real stalls, whatever the machine's load (the process descheduled, a slow
    turn), against which the monitor's figure is checked."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.last = self.loop.time()
        self.longest = 0.0
        self.handle = self.loop.call_soon(self._turn)

    def _turn(self) -> None:
        self._gap()
        self.handle = self.loop.call_soon(self._turn)

    def _gap(self) -> None:
        now = self.loop.time()
        self.longest = max(self.longest, now - self.last)
        self.last = now

    def stop(self) -> None:
        self.handle.cancel()
        self._gap()


async def test_monitor_records_a_blocking_stall() -> None:
    monitor = LoopMonitor(interval_s=0.005, warmup_s=0)
    turns = LoopTurns()
    monitor.start()
    await asyncio.sleep(0.03)
    turns.stop()
    # Before the block: no stall but what the loop really had (next to none on an idle machine).
    assert monitor.max_stall_s <= 4 * turns.longest + 0.002, (monitor.max_stall_s, turns.longest)
    # The monitor is asleep in a 5 ms tick: blocking the loop 120 ms makes it wake at least 115 ms late.
    time.sleep(0.12)  # block the loop on purpose
    await asyncio.sleep(0.03)
    await monitor.stop()
    assert monitor.max_stall_s >= 0.1
    assert monitor.snapshot()["event_loop_recent_max_stall_ms"] >= 100


def test_window_forgets_old_stalls() -> None:
    monitor = LoopMonitor(window_s=60)
    monitor.record(1000.0, 0.5)
    monitor.record(1030.0, 0.01)
    assert monitor.recent_max_stall_s() == 0.5
    monitor.record(1061.0, 0.02)
    assert monitor.recent_max_stall_s() == 0.02
    assert monitor.max_stall_s == 0.5


async def test_stalls_during_warmup_are_not_counted() -> None:
    monitor = LoopMonitor(interval_s=0.005, warmup_s=3600)  # the whole test is inside the warm-up
    monitor.start()
    await asyncio.sleep(0.01)
    time.sleep(0.05)
    await asyncio.sleep(0.01)
    await monitor.stop()
    assert monitor.max_stall_s == 0
