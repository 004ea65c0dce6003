"""Leak and peak-memory tests (`pytest --memray tests/memory`, `tox -e memory`), plus tracemalloc checks.

Without --memray the memray markers do nothing and these run as plain functional tests; the tracemalloc
tests measure on their own in every run.
"""

from __future__ import annotations

import asyncio
import gc
import random
import string
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from faultmaven.config import Settings
from faultmaven.session_management import SessionManager
from faultmaven.stores import MemoryStore
from tests.memory import scenarios
from tests.support import FakeClock

LEAK_LIMIT = "64 KB"  # per allocation site; a per-session leak over these loops is several times that


@pytest.mark.limit_leaks(LEAK_LIMIT)
def test_no_leak_over_create_expire_cleanup_cycles() -> None:
    scenarios.create_expire_cleanup()


@pytest.mark.limit_leaks(LEAK_LIMIT)
def test_no_leak_over_scheduler_start_stop() -> None:
    scenarios.scheduler_start_stop()


@pytest.mark.limit_leaks(LEAK_LIMIT)
def test_no_leak_on_the_http_path() -> None:
    scenarios.http_create_heartbeat_delete()


@pytest.fixture
def full_store() -> Iterator[tuple[SessionManager, asyncio.AbstractEventLoop]]:
    """100,000 expired sessions, built outside the measured test body."""
    loop = asyncio.new_event_loop()
    clock = FakeClock()
    manager = scenarios.manager_for(MemoryStore(), clock)

    async def fill() -> None:
        for _ in range(100_000):
            await manager.create_session(None, {"n": 1})

    loop.run_until_complete(fill())
    clock.advance(minutes=31)
    manager.get_session_metrics()  # a running service has counted the expired prefix already
    yield manager, loop
    loop.close()


@pytest.mark.limit_memory("1 MB")
def test_cleanup_of_100k_sessions_allocates_little(
    full_store: tuple[SessionManager, asyncio.AbstractEventLoop],
) -> None:
    manager, loop = full_store
    assert loop.run_until_complete(manager.cleanup_inactive_sessions()) == 100_000


def test_memory_returns_to_baseline_after_full_cycles() -> None:
    """The spec's leak test: after N create/expire/cleanup cycles traced memory is back at its baseline."""
    clock = FakeClock()
    manager = scenarios.manager_for(MemoryStore(), clock)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(scenarios.run_cycles(manager, clock, 5, 50))  # warm caches first
        gc.collect()
        tracemalloc.start()
        baseline, _ = tracemalloc.get_traced_memory()
        loop.run_until_complete(scenarios.run_cycles(manager, clock, 200, 50))
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        loop.close()
    assert after - baseline < 32 * 1024, f"{after - baseline} bytes still held after 10,000 sessions came and went"
    assert manager.get_session_metrics()["memory_usage_mb"] == 0


def _realistic_data(rng: random.Random) -> dict[str, Any]:
    return {
        "case": "".join(rng.choices(string.ascii_letters + " ", k=rng.randint(20, 600))),
        "steps": [rng.randint(0, 1000) for _ in range(rng.randint(0, 40))],
        "context": {"service": rng.choice(["api", "db", "cache"]), "severity": rng.randint(1, 5)},
    }


@pytest.mark.parametrize("n", [10_000, 100_000])
def test_memory_estimate_is_within_25_percent_of_tracemalloc(n: int) -> None:
    rng = random.Random(n)
    payloads = [_realistic_data(rng) for _ in range(n)]
    users = [f"user-{i % 500}" if i % 3 else None for i in range(n)]
    settings = Settings(cleanup_enabled=False, max_memory_mb=10_000, max_per_user=0)  # every session stays
    manager = SessionManager(MemoryStore(), settings=settings)
    loop = asyncio.new_event_loop()

    async def fill() -> None:
        for data, user in zip(payloads, users, strict=True):
            await manager.create_session(user, data)

    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        loop.run_until_complete(fill())
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        loop.close()
    traced = after - before
    estimate = manager.get_session_metrics()["memory_usage_mb"] * 1024 * 1024  # type: ignore[operator]
    print(f"n={n}: estimate {estimate / 2**20:.2f} MiB, tracemalloc {traced / 2**20:.2f} MiB")
    assert 0.75 * traced <= estimate <= 1.25 * traced
