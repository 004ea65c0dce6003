"""Shared test helpers: the fake clock and store variants used to inject faults and interleavings."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
from collections.abc import Awaitable, Callable, Set
from typing import Any, ClassVar

import pytest

import faultmaven
from faultmaven.config import Settings
from faultmaven.exceptions import SessionStoreException
from faultmaven.session import SessionRecord, new_session_id
from faultmaven.session_management import SessionManager
from faultmaven.stores import BatchResult, MemoryStore
from faultmaven.stores.memory import budget as memory_budget
from faultmaven.stores.memory import endings as memory_endings
from faultmaven.stores.memory import index as expiry
from faultmaven.stores.memory import index_lanes as expiry_lanes
from faultmaven.stores.memory import layout as mem
from faultmaven.stores.memory import local as memory_local
from faultmaven.stores.memory import owners as memory_owners
from faultmaven.stores.memory import store as memory

EPOCH = 1_700_000_000.0


class StoreLines:
    """Counts the lines executed in the store's modules while the block runs: the work a call does, free
    of timing noise (awaits inside the block count too; tracing is per thread).

    A tracer already set (coverage.py, a debugger) is put back afterwards. It misses the block, so while
    `StoreLines.seen` is a set (the mutation run's coverage per test sets it), every faultmaven line run in
    the block is added to it as (file, line)."""

    seen: ClassVar[set[tuple[str, int]] | None] = None

    def __init__(self) -> None:
        self.count = 0
        modules = (expiry, expiry_lanes, memory, memory_local, memory_budget, memory_endings, memory_owners, mem)
        self._files = {module.__file__ for module in modules}
        self._package = os.path.dirname(faultmaven.__file__) + os.sep
        self._previous: Any = None

    def _trace(self, frame: Any, event: str, arg: Any) -> Any:
        name = frame.f_code.co_filename
        counted = name in self._files
        seen = StoreLines.seen
        if not counted and (seen is None or not name.startswith(self._package)):
            return None
        if event == "line":
            self.count += counted
            if seen is not None:
                seen.add((name, frame.f_lineno))
        return self._trace

    def __enter__(self) -> StoreLines:
        self._previous = sys.gettrace()
        sys.settrace(self._trace)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.settrace(self._previous)


def exactly(message: str) -> str:
    """A pytest.raises `match` pattern for this whole message and nothing else."""
    return "^" + re.escape(message) + "$"


def require_tool(name: str, package: str) -> str:
    """The path of a command the test needs: skipped with the reason outside CI, a failure in CI."""
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed (apt-get install {package})"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def session_record(
    *,
    sid: str | None = None,
    user: str | None = None,
    client: str | None = None,
    created: float = EPOCH,
    active: float | None = None,
    timeout_s: float = 1800.0,
    absolute_at: float = EPOCH + 10**6,
    blob: bytes = b'{"blob":"' + b"x" * 200 + b'"}',
    meta: bytes = b"{}",
) -> SessionRecord:
    """A record as the manager would hand it to a store, for store-level tests."""
    active = created if active is None else active
    return SessionRecord(
        session_id=sid or new_session_id(),
        user_id=user,
        client_id=client,
        session_type="troubleshooting",
        created_at=created,
        last_activity=active,
        timeout_s=timeout_s,
        absolute_at=absolute_at,
        blob=blob,
        meta=meta,
    )


class FakeClock:
    """Unix-epoch seconds that move only when a test says so."""

    def __init__(self, start: float = EPOCH) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float = 0.0, *, minutes: float = 0.0) -> None:
        self.now += seconds + minutes * 60.0


def stored_record(store: MemoryStore, sid: str) -> SessionRecord | None:
    """The stored session, expired or not, without recording activity (what tests peek with)."""
    node = store.index.get(sid)
    return None if node is None else mem.to_record(sid, node[mem.ACTIVE], node[mem.STATIC])


def due_ids(store: MemoryStore, now: float, max_idle_s: float | None = None) -> list[str]:
    """Every stored session a cleanup would remove now, by a full scan (the store itself never scans)."""
    due = []
    for sid in store.index.frozen():
        record = stored_record(store, sid)
        assert record is not None
        if now >= record.expires_at or (max_idle_s is not None and now - record.last_activity >= max_idle_s):
            due.append((record.expires_at, sid))
    return [sid for _, sid in sorted(due)]


class HookedStore(MemoryStore):
    """A real MemoryStore that calls `after_batch` once each cleanup batch is done (between batches)."""

    def __init__(self, after_batch: Callable[[BatchResult], Awaitable[None]] | None = None) -> None:
        super().__init__()
        self.after_batch = after_batch
        self.batches = 0

    async def remove_idle(
        self, now: float, max_idle_s: float | None, limit: int, exclude: Set[str], part: int = 0, **kw: Any
    ) -> BatchResult:
        result = await super().remove_idle(now, max_idle_s, limit, exclude, part, **kw)
        self.batches += 1
        if self.after_batch is not None:
            await self.after_batch(result)
        return result


class PoisonStore(MemoryStore):
    """Removal of the ids in `poison` fails, as a corrupt entry in a real backend would: the batch
    reports them as failed and leaves them stored."""

    def __init__(self, poison: Set[str] = frozenset()) -> None:
        super().__init__()
        self.poison = set(poison)

    async def remove_idle(
        self, now: float, max_idle_s: float | None, limit: int, exclude: Set[str], part: int = 0, **kw: Any
    ) -> BatchResult:
        skip = set(exclude) | self.poison
        result = await super().remove_idle(now, max_idle_s, limit, skip, part, **kw)
        stored = [r for r in (stored_record(self, sid) for sid in self.poison - set(exclude)) if r is not None]
        due = set(due_ids(self, now, max_idle_s))
        result.failed = [r.session_id for r in stored if r.session_id in due]
        return result


class DownStore(MemoryStore):
    """A store that can be switched to failing every call, like an unreachable backend."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise SessionStoreException("store unreachable (injected)")

    async def remove_idle(
        self, now: float, max_idle_s: float | None, limit: int, exclude: Set[str], part: int = 0, **kw: Any
    ) -> BatchResult:
        self._check()
        return await super().remove_idle(now, max_idle_s, limit, exclude, part, **kw)

    def stats(self, now: float) -> Any:
        self._check()
        return super().stats(now)


class UntouchableStore(MemoryStore):
    """Fails the test if any per-session operation reaches it (malformed ids must stop before the store)."""

    async def touch(self, *args: Any) -> Any:
        raise AssertionError("store.touch reached")

    async def replace_data(self, *args: Any, **write: Any) -> Any:
        raise AssertionError("store.replace_data reached")

    async def delete(self, *args: Any, **kw: Any) -> Any:
        raise AssertionError("store.delete reached")


async def one_session_bytes(user_id: str, data: dict[str, Any]) -> int:
    """What one session of `user_id` holding `data` takes of a memory store's budget: measured, not
    computed, so that a budget of k of them holds exactly k."""
    probe = MemoryStore()
    await SessionManager(probe, settings=Settings(cleanup_enabled=False)).create_session(user_id, data)
    one = probe.stats(0.0).memory_bytes
    assert one is not None
    return one


TICK_MINUTES = 0.0005  # 30 ms between scheduled runs


async def scheduled_until(manager: SessionManager, done: Callable[[dict[str, Any]], bool]) -> None:
    """Start the manager's scheduler, wait (30 s at most) until `done(metrics)`, then stop it."""
    await manager.start_cleanup_scheduler(TICK_MINUTES)
    try:
        async with asyncio.timeout(30):
            while not done(manager.get_session_metrics()):
                await asyncio.sleep(0.01)
    finally:
        await manager.stop_cleanup_scheduler()


async def scheduled_runs(*managers: SessionManager, runs: int = 2) -> None:
    """Start each manager's scheduler, wait until each finished `runs` more runs, then stop them."""
    waits = []
    for m in managers:
        target = m.get_session_metrics()["cleanup_runs"] + runs
        waits.append(scheduled_until(m, lambda metrics, target=target: metrics["cleanup_runs"] >= target))
    await asyncio.gather(*waits)


class LeasedStore(MemoryStore):
    """A memory store with cleanup parts and leases as a shared store has them, recording each lease call:
    the parts in `held_elsewhere` are held by another replica, a lease survives `renewals` renewals, and a
    release can fail as it does when the store is down."""

    def __init__(
        self,
        parts: tuple[int, ...],
        held_elsewhere: Set[int] = frozenset(),
        renewals: int = 1_000,
        release_fails: bool = False,
    ) -> None:
        super().__init__()
        self.parts, self.held_elsewhere = parts, set(held_elsewhere)
        self.renewals, self.release_fails = renewals, release_fails
        self.calls: list[tuple[Any, ...]] = []

    def cleanup_parts(self) -> tuple[int, ...]:
        return self.parts

    async def acquire_lease(self, ttl_s: float, part: int = 0) -> str | None:
        self.calls.append(("acquire", ttl_s, part))
        return None if part in self.held_elsewhere else f"lease-{part}"

    async def renew_lease(self, token: str, ttl_s: float) -> bool:
        self.calls.append(("renew", token, ttl_s))
        self.renewals -= 1
        return self.renewals >= 0

    async def release_lease(self, token: str) -> None:
        self.calls.append(("release", token))
        if self.release_fails:
            raise SessionStoreException("store down")
