"""Time one cleanup of 1,000 expired sessions among N live ones (default N = 1,000 and 1,000,000).

    python ci/cleanup_timing.py [N ...]

A quick figure for the README; the benchmark suite (pytest -m performance) is the thorough one.
"""

from __future__ import annotations

import asyncio
import sys
import time

from faultmaven.config import Settings
from faultmaven.session_management import SessionManager
from faultmaven.stores import MemoryStore


class Clock:
    now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


async def measure(live: int, expired: int = 1000) -> float:
    clock = Clock()
    manager = SessionManager(MemoryStore(), settings=Settings(cleanup_enabled=False), clock=clock)
    for _ in range(expired):
        await manager.create_session()
    clock.now += manager.settings.timeout_seconds
    for _ in range(live):
        await manager.create_session()
    started = time.perf_counter()
    removed = await manager.cleanup_inactive_sessions()
    elapsed = time.perf_counter() - started
    assert removed == expired, removed
    return elapsed


def main(argv: list[str]) -> None:
    sizes = [int(a) for a in argv] or [1_000, 1_000_000]
    for live in sizes:
        seconds = asyncio.run(measure(live))
        print(f"1,000 expired among {live:>9,} live: {seconds * 1000:8.2f} ms (batch size 50)")


if __name__ == "__main__":
    main(sys.argv[1:])
