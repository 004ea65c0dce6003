"""The memory store at its edges: the budget's exact boundary, which session eviction picks, what an
eviction reports, and the store's own answers (what `create` returns, the errors it raises). Each test
here kills mutants `tox -e mutation` found alive (perf/mutation-survivors.md)."""

from __future__ import annotations

import gc
from collections import Counter
from typing import Any

import pytest

from faultmaven.config import Settings
from faultmaven.exceptions import (
    SessionDataTooLargeError,
    SessionOverMemoryBudgetError,
    SessionStoreException,
    SessionStoreFullError,
)
from faultmaven.session import SessionEnd, SessionRecord
from faultmaven.session_management import SessionManager
from faultmaven.stores import Endings, MemoryStore
from faultmaven.stores.memory import layout as mem
from faultmaven.stores.memory.owners import SessionOwners
from faultmaven.stores.sizing import session_bytes
from tests.support import EPOCH, FakeClock, exactly
from tests.support import session_record as record

BLOB = b'{"blob":"' + b"x" * 200 + b'"}'
META = b'{"client":"copilot"}'


def cost(r: SessionRecord) -> int:
    return session_bytes(r.session_id, r.user_id, r.blob, r.meta, r.client_id)


async def test_a_session_of_exactly_the_budget_fits_and_one_byte_less_refuses_it() -> None:
    r = record(user="alice", client="tab-1", meta=META)
    store, ended = MemoryStore(max_bytes=cost(r)), Endings()
    assert (await store.create(r, EPOCH, report=ended.absorb))[1:] == (False,)
    assert ended.counts == {}
    assert store.stats(EPOCH).memory_bytes == cost(r)  # every part of the estimate: id, user, data, meta, client

    small = MemoryStore(max_bytes=cost(r) - 1)
    with pytest.raises(SessionOverMemoryBudgetError) as refused:
        await small.create(r, EPOCH)
    assert (refused.value.size, refused.value.limit) == (cost(r), cost(r) - 1)
    assert small.stats(EPOCH).stored == 0


async def test_filling_the_budget_exactly_evicts_nothing() -> None:
    a, b = record(user="alice"), record(user="bob")
    store, ended = MemoryStore(max_bytes=cost(a) + cost(b)), Endings()
    await store.create(a, EPOCH, report=ended.absorb)
    await store.create(b, EPOCH, report=ended.absorb)
    assert len(ended) == 0 and store.stats(EPOCH).stored == 2


async def test_an_eviction_reports_every_victim_its_bytes_and_lifetimes() -> None:
    """Two least recently active sessions make room for a session twice their size."""
    now = EPOCH + 100
    olds = [record(created=EPOCH, active=EPOCH + 10 + i) for i in range(3)]
    big = record(created=now, blob=BLOB * 2 + b" " * 200)
    assert cost(olds[0]) < cost(big) <= 2 * cost(olds[0])
    store, filling, ended = MemoryStore(max_bytes=sum(map(cost, olds)), policy="evict"), Endings(), Endings()
    for r in olds:
        await store.create(r, r.last_activity, report=filling.absorb)
    assert len(filling) == 0
    await store.create(big, now, report=ended.absorb)
    assert ended.counts == {"evicted": 2}
    assert ended.freed_bytes == cost(olds[0]) + cost(olds[1])
    assert ended.lifetime_s == pytest.approx(10 + 11)
    assert [await store.touch(r.session_id, now) is not None for r in olds] == [False, False, True]
    assert store.stats(now).memory_bytes == cost(olds[2]) + cost(big)


async def test_expired_sessions_go_first_even_when_a_live_one_is_less_recently_active() -> None:
    """A live session with a long timeout, idle longer than an expired one with a short timeout: only the
    expired one makes room."""
    live = record(created=EPOCH, timeout_s=3600)
    expired = record(created=EPOCH + 600, timeout_s=300)
    incoming = record(created=EPOCH + 1200)
    store = MemoryStore(max_bytes=cost(live) + cost(expired))
    await store.create(live, EPOCH)
    await store.create(expired, EPOCH + 600)
    await store.create(incoming, EPOCH + 1200)
    assert await store.touch(live.session_id, EPOCH + 1200) is not None
    assert store.stats(EPOCH + 1200).stored == 2


async def test_making_room_removes_expired_sessions_a_batch_at_a_time_and_reports_them_all() -> None:
    """100 expired sessions and a write that needs the room of 70: two batches (64, then 36) remove all
    the expired ones, one eviction run reports them, and the live ones stay."""
    live = [record(created=EPOCH + 90, timeout_s=3600) for _ in range(5)]
    expired = [record(created=EPOCH, active=EPOCH + 10, timeout_s=60) for _ in range(100)]
    unit = cost(expired[0])
    big = record(created=EPOCH + 120, blob=b"y" * (unit * 70 - cost(record(blob=b""))))
    store, filling, ended = MemoryStore(max_bytes=unit * 105), Endings(), Endings()
    for r in expired:
        await store.create(r, EPOCH + 10, report=filling.absorb)
    for r in live:
        await store.create(r, EPOCH + 90, report=filling.absorb)
    assert len(filling) == 0
    await store.create(big, EPOCH + 120, report=ended.absorb)
    assert ended.counts == {"expired": 100} and ended.freed_bytes == unit * 100
    assert ended.lifetime_s == pytest.approx(100 * 10)
    assert store.stats(EPOCH + 120).stored == 6
    assert all([await store.touch(r.session_id, EPOCH + 120) is not None for r in live])


async def test_the_least_recently_active_is_found_across_lanes() -> None:
    """Different timeouts live in different lanes; eviction compares the head of every lane (and works
    with no eviction listener at all)."""
    recent = record(created=EPOCH, active=EPOCH + 50, timeout_s=3600)
    oldest = record(created=EPOCH, active=EPOCH + 10, timeout_s=1800)
    middle = record(created=EPOCH, active=EPOCH + 30, timeout_s=900)
    store = MemoryStore(max_bytes=cost(recent) * 3, policy="evict")
    for r in (recent, oldest, middle):
        await store.create(r, r.last_activity)
    await store.create(record(created=EPOCH + 60), EPOCH + 60)
    alive = [await store.touch(r.session_id, EPOCH + 60) is not None for r in (recent, oldest, middle)]
    assert alive == [True, False, True]


async def test_a_growing_write_never_evicts_the_session_it_grows() -> None:
    """The grown session is alone in its lane, and every session was last active at the same moment:
    eviction must still pass over it (it heads the first lane) and take another."""
    grown = record(created=EPOCH, timeout_s=3600)
    others = [record(created=EPOCH) for _ in range(2)]
    store, filling, ended = MemoryStore(max_bytes=cost(grown) * 3, policy="evict"), Endings(), Endings()
    for r in (grown, *others):
        await store.create(r, EPOCH, report=filling.absorb)
    assert len(filling) == 0
    bigger = BLOB + b" " * 100
    updated = await store.replace_data(grown.session_id, bigger, EPOCH, report=ended.absorb)
    assert updated is not None and updated.session_id == grown.session_id and updated.blob == bigger
    assert ended.counts == {"evicted": 1}
    kept = await store.touch(grown.session_id, EPOCH)
    assert kept is not None and kept.blob == bigger
    assert store.stats(EPOCH).memory_bytes == cost(updated) + cost(others[1])


async def test_replace_data_limit_counts_data_and_metadata_and_its_boundary_fits() -> None:
    r = record(user="alice", client="tab-1", meta=META)
    store = MemoryStore()
    await store.create(r, EPOCH)
    new = b'{"v":' + b"1" * 50 + b"}"
    exact = len(new) + len(META)
    assert await store.replace_data(r.session_id, new, EPOCH, limit=exact) is not None
    with pytest.raises(SessionDataTooLargeError) as refused:
        await store.replace_data(r.session_id, new + b" ", EPOCH, limit=exact)
    assert (refused.value.size, refused.value.limit) == (exact + 1, exact)
    stored = await store.touch(r.session_id, EPOCH)
    assert stored is not None and stored.blob == new
    assert store.stats(EPOCH).memory_bytes == session_bytes(r.session_id, "alice", new, META, "tab-1")


async def test_create_reports_no_limit_evictions_on_resume_or_without_a_limit() -> None:
    store, ended = MemoryStore(), Endings()
    first = record(user="alice", client="tab-1")
    assert (await store.create(first, EPOCH, max_per_user=1, report=ended.absorb))[1:] == (False,)
    again = record(user="alice", client="tab-1")
    resumed, was_resumed = await store.create(again, EPOCH + 1, max_per_user=1, report=ended.absorb)
    assert (resumed.session_id, was_resumed) == (first.session_id, True)
    for _ in range(2):  # no max_per_user: no limit
        assert (await store.create(record(user="alice"), EPOCH + 2, report=ended.absorb))[1:] == (False,)
    assert len(ended) == 0
    assert (await store.list_user("alice", EPOCH + 2, 10, 0))[1] == 3


async def test_an_id_already_stored_is_refused_with_a_clear_error() -> None:
    store = MemoryStore()
    a, b = record(), record()
    await store.create(a, EPOCH)
    await store.create(b, EPOCH)
    with pytest.raises(SessionStoreException, match=exactly("session id already stored")):
        await store.create(record(sid=a.session_id), EPOCH)
    with pytest.raises(SessionStoreException, match=exactly("session id already stored")):
        await store.rotate(a.session_id, b.session_id, EPOCH)
    assert store.stats(EPOCH).stored == 2


async def test_revoking_a_user_reports_expired_sessions_as_expired(clock: FakeClock) -> None:
    manager = SessionManager(MemoryStore(), settings=Settings(cleanup_enabled=False, max_per_user=0), clock=clock)
    seen: list[SessionEnd] = []
    manager.add_session_end_listener(seen.append)
    await manager.create_session("bob", timeout_minutes=5)
    for _ in range(2):
        await manager.create_session("bob")
    clock.advance(minutes=10)
    assert await manager.revoke_user_sessions("bob") == 2
    await manager.flush_session_ends()
    assert Counter(end.reason for end in seen) == Counter({"revoked": 2, "expired": 1})
    await manager.close()


async def test_a_scheduled_run_on_the_memory_store_cleans_every_batch(clock: FakeClock) -> None:
    """A scheduled run renews its lease between batches; the memory store's lease never runs out."""
    settings = Settings(cleanup_enabled=False, cleanup_batch_size=10)
    manager = SessionManager(MemoryStore(), settings=settings, clock=clock)
    for _ in range(35):
        await manager.create_session(None, timeout_minutes=5)
    clock.advance(minutes=5)
    assert await manager.run_cleanup(trigger="scheduled", leased=True) == 35
    assert manager.get_session_metrics()["active_sessions"] == 0
    await manager.close()


async def test_each_call_hands_its_endings_to_the_endings_it_was_given() -> None:
    """Every ending goes to the Endings of the call that ended it, in order; a call given none drops its
    endings, and they never reach a later call's."""
    store = MemoryStore()
    store.detailed_endings = True
    a, b, c = record(user="alice"), record(user="alice"), record(user="alice")
    for r in (a, b, c):
        await store.create(r, EPOCH)
    ended, later = Endings(), Endings()
    await store.delete(a.session_id, EPOCH, report=ended.absorb)
    await store.rotate(b.session_id, "n" * 43, EPOCH, report=ended.absorb)
    await store.delete("n" * 43, EPOCH)  # given none: dropped
    await store.delete(c.session_id, EPOCH, report=later.absorb)
    assert [(sid, reason) for sid, *_, reason in ended] == [(a.session_id, "deleted"), (b.session_id, "rotated")]
    assert [(sid, reason) for sid, *_, reason in later] == [(c.session_id, "deleted")]
    assert (ended.counts, later.counts) == ({"deleted": 1, "rotated": 1}, {"deleted": 1})


def _tracked() -> int:
    """Objects the collector tracks once it has settled: a tuple is untracked only when its items are, so a
    node that the collector reads before its inner Static tuple waits for the second pass."""
    gc.collect()
    gc.collect()
    return len(gc.get_objects())


class _OwnersThatFailOnce(SessionOwners):
    """Fails to forget the first signed-in session a cleanup removes, as a fault in the middle of a pass."""

    failed = False

    def forget(self, sid: str, static: Any) -> None:
        if not self.failed and static[mem.USER] is not None:
            self.failed = True
            raise RuntimeError("injected")
        super().forget(sid, static)


async def test_a_cleanup_pass_that_raises_hands_what_it_logged_to_its_own_report() -> None:
    """Endings a pass logged before it raised (details, not yet counted) go to the report of that call:
    none is left in the store for a later call to report."""
    store = MemoryStore()
    store.owners = _OwnersThatFailOnce()
    store.detailed_endings = True
    first = record(created=EPOCH, timeout_s=60)  # no user: removed and logged before the fault
    second = record(user="alice", created=EPOCH, timeout_s=60)
    kept = record(user="bob", created=EPOCH, timeout_s=3600)
    for r in (first, second, kept):
        await store.create(r, EPOCH)
    failed_call = Endings()
    with pytest.raises(RuntimeError, match="injected"):
        await store.remove_idle(EPOCH + 120, None, 10, set(), report=failed_call.absorb)
    assert [sid for sid, *_ in failed_call] == [first.session_id, second.session_id]  # both out of the index
    assert not (store.log.ended or store.log.swept or store.log.endings.counts)


async def test_stored_sessions_add_no_object_the_garbage_collector_tracks() -> None:
    # Every part (index, lanes, user lists, resume pairs) holds a session in tuples and strings only: a
    # million sessions must add no work to a full collection. Sessions of one user and timeout, with a
    # client id each (and some without), so per-user and per-lane objects stay constant.
    store = MemoryStore()
    for i in range(50):  # the parts' own objects (one lane, one user list, the dicts' tables) exist now
        await store.create(record(user="alice", client=f"tab-{i}"), EPOCH)
    before = _tracked()
    for i in range(2000):
        await store.create(record(user="alice" if i % 2 else None, client=f"tab-{50 + i}"), EPOCH)
    await store.touch(next(iter(store.index.frozen())), EPOCH + 1)
    assert len(store) == 2050
    assert _tracked() - before < 20


async def test_a_listened_cleanup_holds_one_object_and_its_list_per_batch_for_the_listeners(
    clock: FakeClock,
) -> None:
    """A run holds each batch's endings until it ends. What it holds is what every collection during the
    run walks, node by node: one Endings and its list of nodes per batch (and the dispatcher's pair), no
    wrapper or spare list (which took a 100k cleanup ~10% longer)."""
    settings = Settings(cleanup_enabled=False, cleanup_batch_size=50)
    manager = SessionManager(MemoryStore(), settings=settings, clock=clock)
    heard: list[SessionEnd] = []
    manager.add_session_end_listener(heard.append)
    for _ in range(5000):
        await manager.create_session()
    clock.advance(minutes=30)
    before = _tracked()
    assert await manager.cleanup_inactive_sessions() == 5000  # 100 batches; no listener has run yet
    assert not heard
    assert _tracked() - before <= 3 * 100 + 20
    await manager.flush_session_ends()
    assert len(heard) == 5000 and {end.reason for end in heard} == {"expired"}
    await manager.close()


async def test_the_budget_errors_say_which_setting_refused() -> None:
    with pytest.raises(ValueError) as bad:
        MemoryStore(policy="lru")
    assert str(bad.value) == "policy must be 'reject' or 'evict'"
    a = record(user="alice")
    store = MemoryStore(max_bytes=cost(a) + 10)
    await store.create(a, EPOCH)
    with pytest.raises(SessionStoreFullError) as full:
        await store.create(record(user="bob"), EPOCH)
    assert str(full.value) == "session store full: SESSION_MAX_MEMORY_MB reached (SESSION_MEMORY_POLICY=reject)"


async def test_endings_are_counted_but_kept_whole_only_while_detailed() -> None:
    """A store nobody listens to keeps no ending whole; a rotation counts the session's lifetime so far."""
    store = MemoryStore()
    r, ended = record(created=EPOCH, active=EPOCH + 40), Endings()
    await store.create(r, EPOCH + 40)
    await store.rotate(r.session_id, "n" * 43, EPOCH + 50, report=ended.absorb)
    assert ended.counts == {"rotated": 1} and ended.lifetime_s == 40.0
    assert list(ended) == []


async def test_a_growing_write_one_byte_over_the_budget_is_refused() -> None:
    a, b = record(user="alice"), record(user="bob")
    store = MemoryStore(max_bytes=cost(a) + cost(b) + 100)
    await store.create(a, EPOCH)
    await store.create(b, EPOCH)
    grown = a.blob + b" " * 101  # one byte more than the room left
    assert session_bytes(a.session_id, "alice", grown, a.meta) == cost(a) + 101
    with pytest.raises(SessionStoreFullError):
        await store.replace_data(a.session_id, grown, EPOCH + 1)
    assert await store.replace_data(a.session_id, a.blob + b" " * 100, EPOCH + 1) is not None  # exactly fits
