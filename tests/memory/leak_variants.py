"""Deliberately leaking variants of the leak tests' subjects; run only by test_leak_detection.py.

Each test here must FAIL under `pytest --memray`: it proves the matching leak test can see a leak.
The file name does not match test_*.py, so normal collection never picks it up.
"""

from __future__ import annotations

from collections.abc import Set
from typing import Any, ClassVar

import pytest

from faultmaven.lifecycle.scheduler import CleanupScheduler
from faultmaven.session_management import SessionManager
from faultmaven.stores import BatchResult, MemoryStore
from tests.memory import scenarios
from tests.memory.test_memory import LEAK_LIMIT
from tests.support import due_ids, stored_record


class GraveyardStore(MemoryStore):
    """Keeps a record of every session it removes: per-session history that grows without bound, held by
    the class so that it outlives the store (a store nothing refers to any more is freed at once)."""

    graveyard: ClassVar[list[Any]] = []

    async def remove_idle(
        self, now: float, max_idle_s: float | None, limit: int, exclude: Set[str], part: int = 0, **kw: Any
    ) -> BatchResult:
        self.graveyard.extend(stored_record(self, sid) for sid in due_ids(self, now, max_idle_s)[:limit])
        return await super().remove_idle(now, max_idle_s, limit, exclude, part, **kw)

    async def delete(self, session_id: str, now: float, user_id: str | None = None, **kw: Any) -> Any:
        self.graveyard.append(stored_record(self, session_id))
        return await super().delete(session_id, now, user_id, **kw)


class TaskHoardingManager(SessionManager):
    """Holds on to every scheduler task it ever started."""

    history: ClassVar[list[Any]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.scheduler = CleanupScheduler()
        super().__init__(*args, scheduler=self.scheduler, **kwargs)

    async def start_cleanup_scheduler(self, interval_minutes: float = 15) -> None:
        await super().start_cleanup_scheduler(interval_minutes)
        self.history.append(self.scheduler.task)


@pytest.mark.limit_leaks(LEAK_LIMIT)
def test_leaky_cycles() -> None:
    scenarios.create_expire_cleanup(GraveyardStore)


@pytest.mark.limit_leaks(LEAK_LIMIT)
def test_leaky_scheduler() -> None:
    scenarios.scheduler_start_stop(TaskHoardingManager)


@pytest.mark.limit_leaks(LEAK_LIMIT)
def test_leaky_http_path() -> None:
    scenarios.http_create_heartbeat_delete(GraveyardStore)
