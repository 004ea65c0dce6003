"""The event-loop stall monitor sees a blocking call."""

from __future__ import annotations

import asyncio
import time

from faultmaven.observability.loop_monitor import LoopMonitor


async def test_monitor_records_a_blocking_stall() -> None:
    monitor = LoopMonitor(interval_s=0.005, warmup_s=0)
    monitor.start()
    await asyncio.sleep(0.03)
    assert monitor.max_stall_s < 0.05
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
    monitor = LoopMonitor(interval_s=0.005, warmup_s=10)
    monitor.start()
    await asyncio.sleep(0.01)
    time.sleep(0.05)
    await asyncio.sleep(0.01)
    await monitor.stop()
    assert monitor.max_stall_s == 0
