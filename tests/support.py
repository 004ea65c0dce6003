"""Shared test helpers: the fake clock and store variants used to inject faults and interleavings."""

from __future__ import annotations

import os
import shutil
from collections.abc import Awaitable, Callable, Set
from typing import Any

import pytest

from faultmaven.stores import BatchResult, MemoryStore

EPOCH = 1_700_000_000.0


def require_tool(name: str, package: str) -> str:
    """The path of a command the test needs: skipped with the reason outside CI, a failure in CI."""
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed (apt-get install {package})"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


class FakeClock:
    """Unix-epoch seconds that move only when a test says so."""

    def __init__(self, start: float = EPOCH) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float = 0.0, *, minutes: float = 0.0) -> None:
        self.now += seconds + minutes * 60.0


class HookedStore(MemoryStore):
    """A real MemoryStore that calls `after_batch` once each cleanup batch is done (between batches)."""

    def __init__(self, after_batch: Callable[[BatchResult], Awaitable[None]] | None = None) -> None:
        super().__init__()
        self.after_batch = after_batch
        self.batches = 0

    async def remove_idle(self, now: float, max_idle_s: float, limit: int, exclude: Set[str]) -> BatchResult:
        result = await super().remove_idle(now, max_idle_s, limit, exclude)
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

    async def remove_idle(self, now: float, max_idle_s: float, limit: int, exclude: Set[str]) -> BatchResult:
        skip = set(exclude) | self.poison
        result = await super().remove_idle(now, max_idle_s, limit, skip)
        stored = [r for r in map(self._record, self.poison - set(exclude)) if r is not None]
        result.failed = [r.session_id for r in stored if now - r.last_activity >= max_idle_s]
        return result


class DownStore(MemoryStore):
    """A store that can be switched to failing every call, like an unreachable backend."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def _check(self) -> None:
        if self.down:
            from faultmaven.exceptions import SessionStoreException

            raise SessionStoreException("store unreachable (injected)")

    async def remove_idle(self, now: float, max_idle_s: float, limit: int, exclude: Set[str]) -> BatchResult:
        self._check()
        return await super().remove_idle(now, max_idle_s, limit, exclude)

    def stats(self, now: float, timeout_s: float) -> Any:
        self._check()
        return super().stats(now, timeout_s)


class UntouchableStore(MemoryStore):
    """Fails the test if any per-session operation reaches it (malformed ids must stop before the store)."""

    async def touch(self, *args: Any) -> Any:
        raise AssertionError("store.touch reached")

    async def replace_data(self, *args: Any) -> Any:
        raise AssertionError("store.replace_data reached")

    async def delete(self, *args: Any) -> Any:
        raise AssertionError("store.delete reached")
