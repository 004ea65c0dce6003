"""The harness catches real bugs: the same state machine must fail on each deliberately broken store.

The broken variants live here, never in faultmaven/.
"""

from __future__ import annotations

from collections.abc import Set

import pytest
from hypothesis import Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from faultmaven.stores import BatchResult
from tests.property.machine import PeekableStore, build_machine


class RemovesWithoutRecheck(PeekableStore):
    """Pipelines the scan: lists the next batch ahead, then removes what it listed without checking again."""

    prefetched: list[str] | None = None

    def _idle(self, now: float, max_idle_s: float, limit: int) -> list[str]:
        return _idle_ids(self, now, max_idle_s)[:limit]

    async def remove_idle(self, now: float, max_idle_s: float, limit: int, exclude: Set[str]) -> BatchResult:
        batch = self.prefetched if self.prefetched is not None else self._idle(now, max_idle_s, limit)
        result = _remove_listed(self, batch)
        self.prefetched = self._idle(now, max_idle_s, limit)
        result.exhausted = not self.prefetched
        if result.exhausted:
            self.prefetched = None
        return result


class RemovesTheStartingList(PeekableStore):
    """Lists every idle session when the run starts, then removes that list batch by batch, never looking again."""

    listed: list[str] | None = None

    async def remove_idle(self, now: float, max_idle_s: float, limit: int, exclude: Set[str]) -> BatchResult:
        if self.listed is None:
            self.listed = _idle_ids(self, now, max_idle_s)
        batch, self.listed = self.listed[:limit], self.listed[limit:]
        result = _remove_listed(self, batch)
        result.exhausted = not self.listed
        if result.exhausted:
            self.listed = None
        return result


def _idle_ids(store: PeekableStore, now: float, max_idle_s: float) -> list[str]:
    idle = []
    for sid in store._ids_in_order():
        record = store._record(sid)
        if record is None or now - record.last_activity < max_idle_s:
            break
        idle.append(sid)
    return idle


def _remove_listed(store: PeekableStore, ids: list[str]) -> BatchResult:
    result = BatchResult()
    for sid in ids:
        if sid in store._index:
            store._unlink(sid)
            result.removed += 1
    return result


class NoLazyExpiry(PeekableStore):
    """Reads do not check expiry: an expired session stays visible (and is revived) until cleanup."""

    def _live(self, session_id: str, now: float, timeout_s: float):  # type: ignore[no-untyped-def]
        return self._index.get(session_id)


class ExpiredCounterNotUpdated(PeekableStore):
    """Deleting a session forgets to take it off the expired count."""

    def _unlink(self, sid):  # type: ignore[no-untyped-def]
        expired = self._expired
        node = super()._unlink(sid)
        self._expired = expired
        return node


class ExpiryOffByOne(PeekableStore):
    """Treats idle == timeout as still live (the boundary instant belongs to expiry)."""

    def _live(self, session_id: str, now: float, timeout_s: float):  # type: ignore[no-untyped-def]
        node = self._index.get(session_id)
        return None if node is None or now - node[4] > timeout_s else node


POWER = settings(max_examples=4000, stateful_step_count=30, deadline=None, database=None, phases=[Phase.generate])


@pytest.mark.parametrize(
    "broken",
    [RemovesWithoutRecheck, RemovesTheStartingList, NoLazyExpiry, ExpiredCounterNotUpdated, ExpiryOffByOne],
)
def test_state_machine_catches(broken: type[PeekableStore]) -> None:
    machine = build_machine(broken, f"{broken.__name__}Machine")
    with pytest.raises(AssertionError):
        run_state_machine_as_test(machine, settings=POWER)


def test_the_real_store_passes_the_same_settings() -> None:
    run_state_machine_as_test(
        build_machine(PeekableStore, "RealStoreMachine"), settings=settings(POWER, max_examples=300)
    )
