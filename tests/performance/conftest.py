"""Benchmark fixtures: every test here is marked `performance` (left out of the default run)."""

from __future__ import annotations

import asyncio
import gc
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from faultmaven.config import Settings
from faultmaven.session import SessionRecord
from faultmaven.session_management import SessionManager
from faultmaven.stores import MemoryStore
from tests.support import EPOCH, FakeClock, session_record

TIMEOUT_S = 30 * 60.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.performance)


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


_ID_POOL: list[str] = []


def session_ids(n: int) -> list[str]:
    """Real session ids, generated once per process and reused (generation is not what is measured)."""
    while len(_ID_POOL) < n:
        _ID_POOL.extend(secrets.token_urlsafe(32) for _ in range(min(n - len(_ID_POOL), 100_000)))
    return _ID_POOL[:n]


def record(sid: str, now: float, timeout_s: float = TIMEOUT_S) -> SessionRecord:
    """A session created at `now` with this idle timeout and a day of absolute lifetime."""
    return session_record(sid=sid, created=now, timeout_s=timeout_s, absolute_at=now + 86_400.0, blob=b"{}")


def populated_manager(
    loop: asyncio.AbstractEventLoop, expired: int, live: int = 0, batch_size: int = 50, timeouts: int = 1
) -> tuple[SessionManager, FakeClock]:
    """A manager whose store holds `expired` sessions past the timeout, then `live` fresh ones whose
    timeouts are spread over `timeouts` distinct values (all at least the default)."""
    clock = FakeClock()
    store = MemoryStore()
    ids = session_ids(expired + live)

    async def fill() -> None:
        for sid in ids[:expired]:
            await store.create(record(sid, EPOCH), EPOCH)
        clock.advance(TIMEOUT_S)
        now = clock.now
        for i, sid in enumerate(ids[expired:]):
            await store.create(record(sid, now, TIMEOUT_S + 60.0 * (i % timeouts)), now)

    loop.run_until_complete(fill())
    settings = Settings(cleanup_batch_size=batch_size, cleanup_enabled=False)
    gc.collect()
    return SessionManager(store, settings=settings, clock=clock), clock


def rounds_for(n: int) -> int:
    """Rounds for a benchmark on n sessions: each round at 1M fills a million first (seconds here), and
    the gates read the best round (or a median of paired rounds with wide headroom)."""
    return 2 if n >= 1_000_000 else 3 if n >= 100_000 else 10 if n >= 10_000 else 20


def peer_rounds_for(n: int) -> int:
    """Rounds for a peer (naive scan, TTLCache, the dict floor alone): one at 1M. No gate reads a peer's
    own rounds (the floor ratio is paired inside ours), and each round there costs a fill of seconds."""
    return 1 if n >= 1_000_000 else rounds_for(n)
