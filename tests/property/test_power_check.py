"""The harness catches real bugs: the same state machine must fail on each deliberately broken store.

The broken variants live here, never in faultmaven/.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Set
from typing import Any

import pytest
from hypothesis import Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from faultmaven.session import SessionRecord
from faultmaven.stores import BatchResult, Endings
from faultmaven.stores import expiry as mem
from tests.property.machine import PeekableStore, T, build_machine
from tests.support import due_ids


class RemovesWithoutRecheck(PeekableStore):
    """Pipelines the scan: lists the next batch ahead, then removes what it listed without checking again."""

    prefetched: list[str] | None = None

    async def remove_idle(
        self, now: float, max_idle_s: float | None, limit: int, exclude: Set[str], part: int = 0
    ) -> BatchResult:
        batch = self.prefetched if self.prefetched is not None else due_ids(self, now, max_idle_s)[:limit]
        result = _remove_listed(self, batch)
        self.prefetched = due_ids(self, now, max_idle_s)[:limit]
        result.exhausted = not self.prefetched
        if result.exhausted:
            self.prefetched = None
        return result


class RemovesTheStartingList(PeekableStore):
    """Lists every due session when the run starts, then removes that list batch by batch, never looking again."""

    listed: list[str] | None = None

    async def remove_idle(
        self, now: float, max_idle_s: float | None, limit: int, exclude: Set[str], part: int = 0
    ) -> BatchResult:
        if self.listed is None:
            self.listed = due_ids(self, now, max_idle_s)
        batch, self.listed = self.listed[:limit], self.listed[limit:]
        result = _remove_listed(self, batch)
        result.exhausted = not self.listed
        if result.exhausted:
            self.listed = None
        return result


class CleanupUsesTheDefaultTimeout(PeekableStore):
    """Cleanup judges every session by the default timeout instead of its own."""

    async def remove_idle(
        self, now: float, max_idle_s: float | None, limit: int, exclude: Set[str], part: int = 0
    ) -> BatchResult:
        limits = [T] if max_idle_s is None else [T, max_idle_s]
        due = [sid for sid, node in self._index.items() if now - node[mem.ACTIVE] >= min(limits)]
        due += [sid for sid, node in self._index.items() if now >= node[mem.STATIC][mem.ABSOLUTE] and sid not in due]
        result = _remove_listed(self, due[:limit])
        result.exhausted = len(due) <= limit
        return result


def _remove_listed(store: PeekableStore, ids: list[str]) -> BatchResult:
    result = BatchResult()
    for sid in ids:
        if sid in store._index:
            store._unlink(sid, "expired")
            result.removed += 1
    return result


def _visible(node: Any, user_id: str | None) -> bool:
    owner = node[mem.STATIC][mem.USER]
    return user_id is None or owner is None or owner == user_id


class NoLazyExpiry(PeekableStore):
    """Reads do not check expiry: an expired session stays visible (and is revived) until cleanup."""

    def _live(self, session_id: str, now: float, user_id: str | None) -> Any:
        node = self._index.get(session_id)
        return node if node is not None and _visible(node, user_id) else None


class TouchExtendsPastTheAbsoluteLifetime(PeekableStore):
    """Reads check only the idle deadline: activity keeps a session alive past its absolute lifetime."""

    def _live(self, session_id: str, now: float, user_id: str | None) -> Any:
        node = self._index.get(session_id)
        if node is None or now >= node[mem.ACTIVE] + node[mem.STATIC][mem.TIMEOUT]:
            return None
        return node if _visible(node, user_id) else None


class ExpiryOffByOne(PeekableStore):
    """Treats the expiry instant itself as still live (the boundary instant belongs to expiry)."""

    def _live(self, session_id: str, now: float, user_id: str | None) -> Any:
        node = self._index.get(session_id)
        if node is None:
            return None
        static = node[mem.STATIC]
        if now > node[mem.ACTIVE] + static[mem.TIMEOUT] or now > static[mem.ABSOLUTE]:
            return None
        return node if _visible(node, user_id) else None


class ExpiredCounterNotUpdated(PeekableStore):
    """Removing a session forgets to take it off the expired count."""

    def _drop(self, sid: str, node: Any, reason: str) -> None:
        expired = self._expired
        super()._drop(sid, node, reason)
        self._expired = expired


class ResumeReturnsAnExpiredSession(PeekableStore):
    """A create with a client id resumes the pair's stored session even when it has expired."""

    async def create(self, record: SessionRecord, now: float, max_per_user: int = 0) -> tuple[SessionRecord, bool, int]:
        if record.client_id is not None:
            existing = self._pairs.get(mem.pair_key(record.user_id, record.client_id))
            if existing is not None:
                node = self._index[existing]
                self._move_to_tail(existing, node, now, node[mem.STATIC])
                stored = self._record(existing)
                assert stored is not None
                return stored, True, 0
        return await super().create(record, now, max_per_user)


class ForgetsTheUserIndexOnCleanup(PeekableStore):
    """A cleanup leaves removed sessions in their user's list (Spring's leaking index)."""

    cleaning = False

    async def remove_idle(
        self, now: float, max_idle_s: float | None, limit: int, exclude: Set[str], part: int = 0
    ) -> BatchResult:
        self.cleaning = True
        try:
            return await super().remove_idle(now, max_idle_s, limit, exclude, part)
        finally:
            self.cleaning = False

    def _unlink_user(self, sid: str, node: Any) -> None:
        if not self.cleaning:
            super()._unlink_user(sid, node)


class FiresAnEventTwice(PeekableStore):
    """Reports the first ending of every call twice."""

    def take_endings(self) -> Endings:
        endings = super().take_endings()
        endings.attach(list(endings)[:1])
        return endings


class RotatesByCopyAndDelete(PeekableStore):
    """Rotation as two steps: store a copy under the new id, then delete the old one."""

    async def rotate(self, session_id: str, new_id: str, now: float, user_id: str | None = None) -> Any:
        record = await self.touch(session_id, now, user_id)
        if record is None:
            return None
        copy = dataclasses.replace(record, session_id=new_id, client_id=None)
        await self.create(copy, now, max_per_user=3)
        await self.delete(session_id, now)
        return copy


class MergeReplacesTheData(PeekableStore):
    """A merge patch replaces the whole data, as a PATCH that knows no merges does."""

    async def replace_data(self, *args: Any, merge: bool = False, if_version: int | None = None) -> Any:
        return await super().replace_data(*args, if_version=if_version)


class IgnoresTheExpectedVersion(PeekableStore):
    """A conditional write goes through whatever version it names."""

    async def replace_data(self, *args: Any, merge: bool = False, if_version: int | None = None) -> Any:
        return await super().replace_data(*args, merge=merge)


class ActivityMovesTheVersion(PeekableStore):
    """A touch counts as a change of the data."""

    async def touch(self, session_id: str, now: float, user_id: str | None = None) -> Any:
        node = self._live(session_id, now, user_id)
        if node is None:
            return None
        static = node[mem.STATIC]
        bumped = (*static[: mem.VERSION], static[mem.VERSION] + 1)
        self._move_to_tail(session_id, node, now, bumped)  # type: ignore[arg-type]
        return mem._to_record(session_id, now, bumped)  # type: ignore[arg-type]


class RotationRestartsTheVersion(PeekableStore):
    """The rotated session's data starts again at version 1."""

    async def rotate(self, session_id: str, new_id: str, now: float, user_id: str | None = None) -> Any:
        record = await super().rotate(session_id, new_id, now, user_id)
        if record is None:
            return None
        node = self._index[new_id]
        self._index[new_id] = (*node[: mem.STATIC], (*node[mem.STATIC][: mem.VERSION], 1))  # type: ignore[assignment]
        return dataclasses.replace(record, version=1)


POWER = settings(max_examples=4000, stateful_step_count=30, deadline=None, database=None, phases=[Phase.generate])


@pytest.mark.parametrize(
    "broken",
    [
        RemovesWithoutRecheck,
        RemovesTheStartingList,
        CleanupUsesTheDefaultTimeout,
        NoLazyExpiry,
        TouchExtendsPastTheAbsoluteLifetime,
        ExpiryOffByOne,
        ExpiredCounterNotUpdated,
        ResumeReturnsAnExpiredSession,
        ForgetsTheUserIndexOnCleanup,
        FiresAnEventTwice,
        RotatesByCopyAndDelete,
        MergeReplacesTheData,
        IgnoresTheExpectedVersion,
        ActivityMovesTheVersion,
        RotationRestartsTheVersion,
    ],
)
def test_state_machine_catches(broken: type[PeekableStore]) -> None:
    machine = build_machine(broken, f"{broken.__name__}Machine")
    with pytest.raises(AssertionError):
        run_state_machine_as_test(machine, settings=POWER)


def test_the_real_store_passes_the_same_settings() -> None:
    run_state_machine_as_test(
        build_machine(PeekableStore, "RealStoreMachine"), settings=settings(POWER, max_examples=300)
    )
