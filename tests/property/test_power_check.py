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
from faultmaven.stores.base import Report, drop
from faultmaven.stores.memory import layout as mem
from faultmaven.stores.memory.endings import EndingsLog
from faultmaven.stores.memory.index import ExpiryIndex
from faultmaven.stores.memory.owners import SessionOwners
from tests.property.machine import PeekableStore, T, build_machine
from tests.support import due_ids, stored_record


class RemovesWithoutRecheck(PeekableStore):
    """Pipelines the scan: lists the next batch ahead, then removes what it listed without checking again."""

    prefetched: list[str] | None = None

    async def remove_idle(
        self, now: float, max_idle_s: float | None, limit: int, exclude: Set[str], part: int = 0, **kw: Any
    ) -> BatchResult:
        batch = self.prefetched if self.prefetched is not None else due_ids(self, now, max_idle_s)[:limit]
        result = _remove_listed(self, batch, kw.get("report", drop))
        self.prefetched = due_ids(self, now, max_idle_s)[:limit]
        result.exhausted = not self.prefetched
        if result.exhausted:
            self.prefetched = None
        return result


class RemovesTheStartingList(PeekableStore):
    """Lists every due session when the run starts, then removes that list batch by batch, never looking again."""

    listed: list[str] | None = None

    async def remove_idle(
        self, now: float, max_idle_s: float | None, limit: int, exclude: Set[str], part: int = 0, **kw: Any
    ) -> BatchResult:
        if self.listed is None:
            self.listed = due_ids(self, now, max_idle_s)
        batch, self.listed = self.listed[:limit], self.listed[limit:]
        result = _remove_listed(self, batch, kw.get("report", drop))
        result.exhausted = not self.listed
        if result.exhausted:
            self.listed = None
        return result


class CleanupUsesTheDefaultTimeout(PeekableStore):
    """Cleanup judges every session by the default timeout instead of its own."""

    async def remove_idle(
        self, now: float, max_idle_s: float | None, limit: int, exclude: Set[str], part: int = 0, **kw: Any
    ) -> BatchResult:
        limits = [T] if max_idle_s is None else [T, max_idle_s]
        due = [sid for sid, node in self.index.frozen().items() if now - node[mem.ACTIVE] >= min(limits)]
        due += [
            sid for sid, node in self.index.frozen().items() if now >= node[mem.STATIC][mem.ABSOLUTE] and sid not in due
        ]
        result = _remove_listed(self, due[:limit], kw.get("report", drop))
        result.exhausted = len(due) <= limit
        return result


def _remove_listed(store: PeekableStore, ids: list[str], report: Report) -> BatchResult:
    result = BatchResult()
    for sid in ids:
        if sid in store.index:
            store.end_listed(sid, report)
            result.removed += 1
    return result


def _visible(node: Any, user_id: str | None) -> bool:
    owner = node[mem.STATIC][mem.USER]
    return user_id is None or owner is None or owner == user_id


class _NoLazyExpiryIndex(ExpiryIndex):
    def live(self, sid: str, now: float, user_id: str | None) -> Any:
        node = self.get(sid)
        return node if node is not None and _visible(node, user_id) else None


class NoLazyExpiry(PeekableStore):
    """Reads do not check expiry: an expired session stays visible (and is revived) until cleanup."""

    index_type = _NoLazyExpiryIndex


class _IdleOnlyIndex(ExpiryIndex):
    def live(self, sid: str, now: float, user_id: str | None) -> Any:
        node = self.get(sid)
        if node is None or now >= node[mem.ACTIVE] + node[mem.STATIC][mem.TIMEOUT]:
            return None
        return node if _visible(node, user_id) else None


class TouchExtendsPastTheAbsoluteLifetime(PeekableStore):
    """Reads check only the idle deadline: activity keeps a session alive past its absolute lifetime."""

    index_type = _IdleOnlyIndex


class _OffByOneIndex(ExpiryIndex):
    def live(self, sid: str, now: float, user_id: str | None) -> Any:
        node = self.get(sid)
        if node is None:
            return None
        static = node[mem.STATIC]
        if now > node[mem.ACTIVE] + static[mem.TIMEOUT] or now > static[mem.ABSOLUTE]:
            return None
        return node if _visible(node, user_id) else None


class ExpiryOffByOne(PeekableStore):
    """Treats the expiry instant itself as still live (the boundary instant belongs to expiry)."""

    index_type = _OffByOneIndex


class _UncountingIndex(ExpiryIndex):
    def _uncount(self, node: Any) -> None:
        expired = self._expired
        super()._uncount(node)
        self._expired = expired


class ExpiredCounterNotUpdated(PeekableStore):
    """Removing a session forgets to take it off the expired count."""

    index_type = _UncountingIndex


class ResumeReturnsAnExpiredSession(PeekableStore):
    """A create with a client id resumes the pair's stored session even when it has expired."""

    async def create(
        self, record: SessionRecord, now: float, max_per_user: int = 0, *, report: Report = drop
    ) -> tuple[SessionRecord, bool]:
        if record.client_id is not None:
            existing = self.owners.pairs.get(record.user_id, record.client_id)
            node = None if existing is None else self.index.get(existing)
            if existing is not None and node is not None:
                self._activity(existing, node, now, node[mem.STATIC])
                stored = stored_record(self, existing)
                assert stored is not None
                return stored, True
        return await super().create(record, now, max_per_user, report=report)


class _OwnersForgetfulInCleanup(SessionOwners):
    cleaning = False

    def forget(self, sid: str, static: Any) -> None:
        if self.cleaning:
            if static[mem.CLIENT] is not None:
                self.pairs.drop(sid, static)
        else:
            super().forget(sid, static)


class ForgetsTheUserIndexOnCleanup(PeekableStore):
    """A cleanup leaves removed sessions in their user's list (Spring's leaking index)."""

    owners_type = _OwnersForgetfulInCleanup
    owners: _OwnersForgetfulInCleanup

    async def remove_idle(
        self, now: float, max_idle_s: float | None, limit: int, exclude: Set[str], part: int = 0, **kw: Any
    ) -> BatchResult:
        self.owners.cleaning = True
        try:
            return await super().remove_idle(now, max_idle_s, limit, exclude, part, **kw)
        finally:
            self.owners.cleaning = False


class _LogReportingTwice(EndingsLog):
    def hand_to(self, report: Report) -> None:
        def twice(endings: Endings) -> None:
            endings.attach(list(endings)[:1])
            report(endings)

        super().hand_to(twice)


class FiresAnEventTwice(PeekableStore):
    """Reports the first ending of every call twice."""

    def __init__(self) -> None:
        super().__init__()
        self.log = _LogReportingTwice()


class RotatesByCopyAndDelete(PeekableStore):
    """Rotation as two steps: store a copy under the new id, then delete the old one."""

    async def rotate(
        self, session_id: str, new_id: str, now: float, user_id: str | None = None, *, report: Report = drop
    ) -> Any:
        record = await self.touch(session_id, now, user_id)
        if record is None:
            return None
        copy = dataclasses.replace(record, session_id=new_id, client_id=None)
        await self.create(copy, now, max_per_user=3, report=report)
        await self.delete(session_id, now, report=report)
        return copy


class MergeReplacesTheData(PeekableStore):
    """A merge patch replaces the whole data, as a PATCH that knows no merges does."""

    async def replace_data(self, *args: Any, **write: Any) -> Any:
        write.pop("merge", None)
        return await super().replace_data(*args, **write)


class IgnoresTheExpectedVersion(PeekableStore):
    """A conditional write goes through whatever version it names."""

    async def replace_data(self, *args: Any, **write: Any) -> Any:
        write.pop("if_version", None)
        return await super().replace_data(*args, **write)


class ActivityMovesTheVersion(PeekableStore):
    """A touch counts as a change of the data."""

    async def touch(self, session_id: str, now: float, user_id: str | None = None) -> Any:
        node = self.index.live(session_id, now, user_id)
        if node is None:
            return None
        static = node[mem.STATIC]
        bumped = (*static[: mem.VERSION], static[mem.VERSION] + 1)
        self._activity(session_id, node, now, bumped)  # type: ignore[arg-type]
        return mem.to_record(session_id, now, bumped)  # type: ignore[arg-type]


class _VersionResettingIndex(ExpiryIndex):
    def rename(self, sid: str, new_id: str) -> Any:
        node = super().rename(sid, new_id)
        node = self._nodes[new_id] = (*node[: mem.STATIC], (*node[mem.STATIC][: mem.VERSION], 1))  # type: ignore[assignment]
        return node


class RotationRestartsTheVersion(PeekableStore):
    """The rotated session's data starts again at version 1."""

    index_type = _VersionResettingIndex


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
