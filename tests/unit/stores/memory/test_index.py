"""Rules of the memory store's expiry index: the expired count's frontiers after removals and renames,
a full batch's stop, and the lane heaps' rebuild."""

from __future__ import annotations

import pytest

from faultmaven.session import new_session_id
from faultmaven.stores import MemoryStore
from tests.support import EPOCH, StoreLines, due_ids, session_record, stored_record

FAR = EPOCH + 10**6


async def stored(store: MemoryStore, n: int, timeout_s: float, absolute_at: float = FAR) -> list[str]:
    """`n` anonymous sessions created (and last active) at EPOCH, oldest first."""
    ids = []
    for _ in range(n):
        record, _ = await store.create(session_record(timeout_s=timeout_s, absolute_at=absolute_at), EPOCH)
        ids.append(record.session_id)
    return ids


def count_lines(store: MemoryStore, now: float) -> tuple[int | None, int]:
    """(the expired count at `now`, the store lines it took)."""
    with StoreLines() as lines:
        expired = store.stats(now).expired
    return expired, lines.count


@pytest.mark.parametrize(
    ("timeout_s", "absolute_at", "now"),
    [(100.0, FAR, EPOCH + 200), (10.0**5, EPOCH + 50, EPOCH + 100)],
    ids=["idle", "absolute"],
)
async def test_the_count_after_a_removal_does_not_walk_the_kept_sessions_again(
    timeout_s: float, absolute_at: float, now: float
) -> None:
    """Removing counted sessions (idle in their lane, or past their absolute deadline in the creation
    list) behind excluded ones moves that list's count back to the last kept one, not to its start: the
    next count walks none of them again."""
    store = MemoryStore()
    ids = await stored(store, 60, timeout_s, absolute_at=absolute_at)
    assert store.stats(now).expired == 60
    result = await store.remove_idle(now, None, 1000, frozenset(ids[:40]))
    assert result.removed == 20
    first, second = count_lines(store, now), count_lines(store, now)
    assert first == second
    assert first[0] == 40
    store.check()


async def test_the_count_after_a_lane_removes_the_creation_frontier_starts_at_its_predecessor() -> None:
    """A lane removing the session the creation list's count stopped at moves that count back to the
    session created just before it, which stays counted: the next count walks nothing again."""
    store = MemoryStore()
    await stored(store, 40, 10**5, absolute_at=EPOCH + 50)  # past the absolute deadline, not idle
    await stored(store, 1, 100.0, absolute_at=EPOCH + 50)  # idle too: its lane removes it first
    now = EPOCH + 200
    assert store.stats(now).expired == 41
    result = await store.remove_idle(now, None, 1, frozenset())
    assert result.removed == 1
    first, second = count_lines(store, now), count_lines(store, now)
    assert first == second
    assert first[0] == 40
    store.check()


async def lines_of_a_full_batch(lanes: int) -> int:
    """Store lines of a one-session batch while `lanes` lanes (timeouts) each have a due session."""
    store = MemoryStore()
    for i in range(lanes):
        await stored(store, 1, 100.0 + i)
    with StoreLines() as lines:
        result = await store.remove_idle(EPOCH + 1000, None, 1, frozenset())
    assert result.removed == 1
    store.check()
    return lines.count


async def test_a_full_batch_stops_at_the_lane_that_filled_it() -> None:
    """A batch that is full visits no further due lane: its cost does not grow with the timeouts in use."""
    few, many = await lines_of_a_full_batch(2), await lines_of_a_full_batch(40)
    assert few > 10  # the trace did see the pass
    assert many == few


async def test_lanes_coming_and_going_rebuild_the_heaps_and_cleanup_still_finds_every_due_session() -> None:
    """Entries of lanes that emptied pile up until a new lane rebuilds both heaps from the live lanes;
    the cleanups after it remove exactly what is due."""
    store = MemoryStore()
    keep = await stored(store, 1, 5000.0) + await stored(store, 1, 6000.0)
    for i in range(30):  # each a timeout of its own, its lane gone with it
        (sid,) = await stored(store, 1, 100.0 + i)
        assert await store.delete(sid, EPOCH) is True
    keep += await stored(store, 1, 7000.0) + await stored(store, 1, 300.0)
    store.check()
    for now in (EPOCH + 400, EPOCH + 5500, EPOCH + 6500, EPOCH + 7500):
        due = due_ids(store, now)
        result = await store.remove_idle(now, None, 1000, frozenset())
        assert result.removed == len(due) == 1
        assert all(stored_record(store, sid) is None for sid in due)
        store.check()
    assert len(store) == 0 and len(keep) == 4


async def test_least_recently_active_is_none_without_another_session() -> None:
    """No victim when nothing, or only the session to keep, is stored."""
    store = MemoryStore()
    assert store.index.least_recently_active(None) is None
    (only,) = await stored(store, 1, 100.0)
    assert store.index.least_recently_active(only) is None
    assert store.index.least_recently_active(None) == only


async def test_renaming_the_session_a_count_stopped_at_moves_both_frontiers() -> None:
    """A rename keeps the session's place in every list, including where the expired count stopped in its
    lane and in the creation list."""
    store = MemoryStore()
    ids = await stored(store, 3, 100.0, absolute_at=EPOCH + 50)
    now = EPOCH + 200
    assert store.stats(now).expired == 3
    unchanged = count_lines(store, now)  # a count with nothing new to count: each walk starts past its frontier
    new_id = new_session_id()
    store.index.rename(ids[-1], new_id)
    store.check()  # each frontier is in its list: it names the new id, not the old
    assert count_lines(store, now) == unchanged  # and the count goes on from there: no session walked again
