"""The embedded in-memory store: one process, every operation O(1), cleanup O(expired + timeouts in use).

Each session has its own idle timeout and an absolute deadline, so the expired sessions are no longer a
prefix of one activity-ordered list. They are a prefix of one of these lists, which the store keeps:
- one *lane* per distinct timeout: the sessions with that timeout in order of last activity (activity
  moves a session to its lane's tail), so a lane's idle-expired sessions are a prefix of it;
- the *creation list*: every session in order of creation, so with one absolute lifetime the sessions
  past their absolute deadline are a prefix of it.
Cleanup finds the lanes whose head is due through two small heaps over lanes (keyed by the head's idle
deadline, and by the head's last activity for a max-age run), pops each due prefix, and pops the due
prefix of the creation list. A heap entry is a lower bound of its lane head's key (a head only ever
gets later), validated lazily when popped, so activity never touches a heap.

All lists live in one dict, id -> tuple, whose tuples link to their neighbours by id; a session's fields
that change only on update sit in an inner tuple shared between versions. Tuples of strings, numbers and
bytes are untracked by Python's cyclic garbage collector, and so is a dict holding only them: a million
sessions add no work to a full collection. Per-lane bookkeeping (lists, heap entries) grows with the
number of distinct timeouts, never with the number of sessions.

Nothing here awaits, so each call is atomic on the event loop: the expiry re-check and the removal of a
session can never be split by a concurrent touch. Callers must pass a non-decreasing `now`.
"""

from __future__ import annotations

import heapq
import sys
from collections.abc import Callable, Iterator, Set
from typing import Final, TypeAlias

from faultmaven.exceptions import SessionDataTooLargeError, SessionOverMemoryBudgetError, SessionStoreException
from faultmaven.session import SessionRecord
from faultmaven.stores.base import BatchResult, Ended, EvictionListener, StoreStats

# user id, client id, session type, created_at, timeout (s), absolute deadline, data, metadata, cost
Static: TypeAlias = tuple[str | None, str | None, str, float, float, float, bytes, bytes, int]
USER: Final = 0
CLIENT: Final = 1
TYPE: Final = 2
CREATED: Final = 3
TIMEOUT: Final = 4
ABSOLUTE: Final = 5
BLOB: Final = 6
META: Final = 7
COST: Final = 8
# lane prev, lane next, creation prev, creation next, last activity, counted mark, static fields
Node: TypeAlias = tuple[str | None, str | None, str | None, str | None, float, int, Static]
_Due: TypeAlias = Callable[[float], bool]  # is a heap key (deadline or last activity) due now?
LPREV: Final = 0
LNEXT: Final = 1
CPREV: Final = 2
CNEXT: Final = 3
ACTIVE: Final = 4
MARK: Final = 5
STATIC: Final = 6

# Bytes one session costs besides its strings: both tuples, three floats, two ints, its share of the dict
# (entry plus index slot at the dict's average fill). Checked against tracemalloc in tests.
_NODE_BYTES = sys.getsizeof((None,) * 7) + sys.getsizeof((None,) * 9) + 3 * sys.getsizeof(0.0) + 2 * 32 + 48


def session_bytes(sid: str, user_id: str | None, blob: bytes, meta: bytes = b"{}", client_id: str | None = None) -> int:
    """The estimate of what one session costs in memory: what memory_usage_mb adds up."""
    strings = sys.getsizeof(sid) + sys.getsizeof(blob) + (sys.getsizeof(meta) if meta != b"{}" else 0)
    for extra in (user_id, client_id):
        if extra:
            strings += sys.getsizeof(extra)
    return _NODE_BYTES + strings


def pair_key(user_id: str | None, client_id: str) -> str:
    """The resume key: a client id alone for anonymous sessions, else client and user (never ambiguous:
    user ids carry no control characters)."""
    return client_id if user_id is None else f"{client_id}\x1f{user_id}"


def _lnext(n: Node, v: str | None) -> Node:
    return (n[0], v, n[2], n[3], n[4], n[5], n[6])


def _lprev(n: Node, v: str | None) -> Node:
    return (v, n[1], n[2], n[3], n[4], n[5], n[6])


def _cnext(n: Node, v: str | None) -> Node:
    return (n[0], n[1], n[2], v, n[4], n[5], n[6])


def _cprev(n: Node, v: str | None) -> Node:
    return (n[0], n[1], v, n[3], n[4], n[5], n[6])


class _Lane:
    """The sessions of one timeout in activity order, and the keys of its two heap entries."""

    __slots__ = ("akey", "dkey", "first", "frontier", "last")

    def __init__(self, sid: str) -> None:
        self.first: str | None = sid
        self.last: str | None = sid
        self.frontier: str | None = None  # last session counted expired by stats(), walking from first
        self.dkey = 0.0  # idle-deadline heap entry of this lane (a lower bound of the head's deadline)
        self.akey = 0.0  # activity heap entry (a lower bound of the head's last activity)


class MemoryStore:
    """In-process session store; see the module docstring for the data structure.

    With `max_bytes`, a write that would take the estimate over the budget first evicts: expired sessions,
    then the least recently active ones; a single session larger than the whole budget is refused and
    nothing is evicted for it.
    """

    def __init__(self, max_bytes: int | None = None) -> None:
        self.max_bytes = max_bytes
        self._on_evict: EvictionListener | None = None
        self._index: dict[str, Node] = {}
        self._pairs: dict[str, str] = {}  # resume key -> session id
        self._lanes: dict[float, _Lane] = {}
        self._deadlines: list[tuple[float, float]] = []  # (lane head's idle deadline, timeout): a heap
        self._activity: list[tuple[float, float]] = []  # (lane head's last activity, timeout): a heap
        self._cfirst: str | None = None  # oldest session
        self._clast: str | None = None
        self._cfrontier: str | None = None  # last session counted past its absolute deadline
        self._bytes = 0
        self._expired = 0
        self._mark = 1  # sessions whose MARK equals this are counted in _expired
        self._counted_at = float("-inf")

    def __len__(self) -> int:
        return len(self._index)

    # -- list primitives ---------------------------------------------------------------------------

    def _lane_relink(self, lane: _Lane, prev: str | None, nxt: str | None) -> None:
        index = self._index
        if prev is None:
            lane.first = nxt
        else:
            index[prev] = _lnext(index[prev], nxt)
        if nxt is None:
            lane.last = prev
        else:
            index[nxt] = _lprev(index[nxt], prev)

    def _creation_relink(self, prev: str | None, nxt: str | None) -> None:
        index = self._index
        if prev is None:
            self._cfirst = nxt
        else:
            index[prev] = _cnext(index[prev], nxt)
        if nxt is None:
            self._clast = prev
        else:
            index[nxt] = _cprev(index[nxt], prev)

    def _append(self, sid: str, active: float, static: Static) -> None:
        """A new session: the tail of its lane and of the creation list."""
        index = self._index
        timeout = static[TIMEOUT]
        lane = self._lanes.get(timeout)
        clast = self._clast
        if lane is None:
            lane = self._lanes[timeout] = _Lane(sid)
            self._push_lane(lane, timeout, active)
            lprev = None
        else:
            lprev = lane.last
            index[lprev] = _lnext(index[lprev], sid)  # type: ignore[index]
            lane.last = sid
        index[sid] = (lprev, None, clast, None, active, 0, static)
        if clast is None:
            self._cfirst = sid
        else:
            index[clast] = _cnext(index[clast], sid)
        self._clast = sid

    def _push_lane(self, lane: _Lane, timeout: float, head_active: float) -> None:
        """A new lane enters both heaps. Entries of lanes that emptied are dropped when popped; the heaps are
        rebuilt when such entries outnumber the lanes, so they stay O(timeouts in use)."""
        if len(self._activity) > 2 * len(self._lanes) + 16:
            self._deadlines = [(lane.dkey, t) for t, lane in self._lanes.items()]
            self._activity = [(lane.akey, t) for t, lane in self._lanes.items()]
            heapq.heapify(self._deadlines)
            heapq.heapify(self._activity)
        self._set_key(lane, timeout, head_active + timeout, True)
        self._set_key(lane, timeout, head_active, False)

    def _move_to_tail(self, sid: str, node: Node, now: float, static: Static) -> None:
        """Record activity at `now` (and new data): the session becomes its lane's most recently active."""
        lane = self._lanes[static[TIMEOUT]]
        if sid == lane.last:
            self._index[sid] = (node[0], None, node[2], node[3], now, node[5], static)
            return
        self._lane_relink(lane, node[LPREV], node[LNEXT])
        last = lane.last
        self._index[last] = _lnext(self._index[last], sid)  # type: ignore[index]
        self._index[sid] = (last, None, node[2], node[3], now, node[5], static)
        lane.last = sid

    def _forget(self, removed: dict[str, Node]) -> None:
        """Relink both lists around sessions already popped from the index: one relink per run of
        consecutive removed sessions, so removing a prefix costs one relink. Keeps every count right."""
        lanes, pairs, mark = self._lanes, self._pairs, self._mark
        freed = counted = 0
        for sid, node in removed.items():
            static = node[STATIC]
            freed += static[COST]
            if node[MARK] == mark:
                counted += 1
            if static[CLIENT] is not None:
                key = pair_key(static[USER], static[CLIENT])
                if pairs.get(key) == sid:
                    del pairs[key]
            lane = lanes.get(static[TIMEOUT])
            if lane is not None:  # None: this run already emptied the lane
                if lane.frontier == sid:
                    lane.frontier = _first_kept(removed, node[LPREV], LPREV)
                prev = node[LPREV]
                if prev is None or prev not in removed:  # the first of a run in its lane
                    self._lane_relink(lane, prev, _first_kept(removed, node[LNEXT], LNEXT))
                    if lane.first is None:
                        del lanes[static[TIMEOUT]]
            prev = node[CPREV]
            if prev is None or prev not in removed:
                self._creation_relink(prev, _first_kept(removed, node[CNEXT], CNEXT))
        if self._cfrontier is not None and self._cfrontier in removed:
            self._cfrontier = _first_kept(removed, self._cfrontier, CPREV)
        self._bytes -= freed
        self._expired -= counted

    def _unlink(self, sid: str) -> Node:
        """Take one session out of every list and the index; returns its node."""
        node = self._index.pop(sid)
        self._forget({sid: node})
        return node

    def _live(self, session_id: str, now: float, user_id: str | None) -> Node | None:
        """The session if it is stored, not expired and visible to `user_id` (None: to anyone)."""
        node = self._index.get(session_id)
        if node is None:
            return None
        static = node[STATIC]
        if now >= node[ACTIVE] + static[TIMEOUT] or now >= static[ABSOLUTE]:
            return None
        if user_id is not None and static[USER] is not None and static[USER] != user_id:
            return None
        return node

    def _record(self, sid: str) -> SessionRecord | None:
        """The stored session without recording activity (also what tests peek with)."""
        node = self._index.get(sid)
        return None if node is None else _to_record(sid, node[ACTIVE], node[STATIC])

    def _ids_in_order(self) -> Iterator[str]:
        """Ids in creation order."""
        sid = self._cfirst
        while sid is not None:
            nxt = self._index[sid][CNEXT]
            yield sid
            sid = nxt

    # -- finding due sessions ------------------------------------------------------------------------

    def _due_lanes(self, heap: list[tuple[float, float]], is_due: _Due, deadline_heap: bool) -> Iterator[float]:
        """Pop the lanes whose head is due, as their timeouts; stale entries are dropped or re-pushed."""
        lanes, index = self._lanes, self._index
        yielded: set[float] = set()  # each lane once per pass; the pass requeues it afterwards
        while heap and is_due(heap[0][0]):
            key, timeout = heapq.heappop(heap)
            lane = lanes.get(timeout)
            if lane is None or timeout in yielded or (lane.dkey if deadline_heap else lane.akey) != key:
                continue  # the lane emptied, was done in this pass, or this entry was replaced
            head = index[lane.first][ACTIVE]  # type: ignore[index]
            real = head + timeout if deadline_heap else head
            if real != key and not is_due(real):
                self._set_key(lane, timeout, real, deadline_heap)
                continue
            yielded.add(timeout)
            yield timeout

    def _set_key(self, lane: _Lane, timeout: float, key: float, deadline_heap: bool) -> None:
        if deadline_heap:
            lane.dkey = key
            heapq.heappush(self._deadlines, (key, timeout))
        else:
            lane.akey = key
            heapq.heappush(self._activity, (key, timeout))

    def _requeue(self, timeout: float, deadline_heap: bool) -> None:
        """Put a processed lane back into the heap it came from, keyed by its (new) head."""
        lane = self._lanes.get(timeout)
        if lane is not None:
            head = self._index[lane.first][ACTIVE]  # type: ignore[index]
            self._set_key(lane, timeout, head + timeout if deadline_heap else head, deadline_heap)

    # -- memory budget ----------------------------------------------------------------------------

    def _check_budget(self, cost: int) -> None:
        if self.max_bytes is not None and cost > self.max_bytes:
            raise SessionOverMemoryBudgetError(cost, self.max_bytes)

    def _evict_for(self, incoming: int, now: float, keep: str | None = None) -> None:
        """Evict until `incoming` more bytes fit the budget (never the session `keep`): expired sessions
        first (a normal cleanup batch), then the least recently active."""
        if self.max_bytes is None or self._bytes + incoming <= self.max_bytes:
            return
        evicted = BatchResult()
        protect = {keep} if keep is not None else set()
        while self._bytes + incoming > self.max_bytes:
            batch = self._remove_due(now, None, 64, protect, need=self._bytes + incoming - self.max_bytes)
            if not batch.removed:
                break
            _add(evicted, batch)
        while self._bytes + incoming > self.max_bytes:
            victim = self._least_recently_active(keep)
            if victim is None:
                break
            node = self._unlink(victim)
            evicted.removed += 1
            evicted.freed_bytes += node[STATIC][COST]
            evicted.lifetime_s += node[ACTIVE] - node[STATIC][CREATED]
        if self._on_evict is not None:
            self._on_evict(evicted)

    def _least_recently_active(self, keep: str | None) -> str | None:
        best: tuple[float, str] | None = None
        for lane in self._lanes.values():  # O(timeouts in use), and only when the budget is full
            sid = lane.first
            if sid == keep and sid is not None:
                sid = self._index[sid][LNEXT]
            if sid is not None:
                active = self._index[sid][ACTIVE]
                if best is None or active < best[0]:
                    best = (active, sid)
        return None if best is None else best[1]

    # -- SessionStore ------------------------------------------------------------------------------

    async def create(self, record: SessionRecord, now: float) -> tuple[SessionRecord, bool]:
        if record.client_id is not None:
            key = pair_key(record.user_id, record.client_id)
            existing = self._pairs.get(key)
            if existing is not None:
                node = self._live(existing, now, None)
                if node is not None:
                    self._move_to_tail(existing, node, now, node[STATIC])
                    return _to_record(existing, now, node[STATIC]), True
        sid = record.session_id
        if sid in self._index:
            raise SessionStoreException("session id already stored")
        cost = session_bytes(sid, record.user_id, record.blob, record.meta, record.client_id)
        self._check_budget(cost)
        self._evict_for(cost, now)
        static: Static = (
            record.user_id,
            record.client_id,
            record.session_type,
            record.created_at,
            record.timeout_s,
            record.absolute_at,
            record.blob,
            record.meta,
            cost,
        )
        self._append(sid, record.last_activity, static)
        self._bytes += cost
        if record.client_id is not None:
            self._pairs[pair_key(record.user_id, record.client_id)] = sid
        return record, False

    async def touch(self, session_id: str, now: float, user_id: str | None = None) -> SessionRecord | None:
        node = self._live(session_id, now, user_id)
        if node is None:
            return None
        self._move_to_tail(session_id, node, now, node[STATIC])
        return _to_record(session_id, now, node[STATIC])

    async def replace_data(
        self, session_id: str, blob: bytes, now: float, user_id: str | None = None, limit: int | None = None
    ) -> SessionRecord | None:
        node = self._live(session_id, now, user_id)
        if node is None:
            return None
        old = node[STATIC]
        if limit is not None and len(blob) + len(old[META]) > limit:
            raise SessionDataTooLargeError(len(blob) + len(old[META]), limit)
        cost = session_bytes(session_id, old[USER], blob, old[META], old[CLIENT])
        self._check_budget(cost)
        static: Static = (*old[:BLOB], blob, old[META], cost)
        self._move_to_tail(session_id, node, now, static)
        self._evict_for(cost - old[COST], now, keep=session_id)
        self._bytes += cost - old[COST]
        return _to_record(session_id, now, static)

    async def delete(self, session_id: str, now: float, user_id: str | None = None) -> Ended | None:
        node = self._index.get(session_id)
        if node is None:
            return None
        owner = node[STATIC][USER]
        if user_id is not None and owner is not None and owner != user_id:
            return None
        was_live = self._live(session_id, now, None) is not None
        self._unlink(session_id)
        return Ended(was_live, node[ACTIVE] - node[STATIC][CREATED])

    async def remove_idle(self, now: float, max_idle_s: float | None, limit: int, exclude: Set[str]) -> BatchResult:
        """Remove up to `limit` expired sessions (and, with `max_idle_s`, those idle at least that long)."""
        return self._remove_due(now, max_idle_s, limit, exclude)

    def _remove_due(
        self, now: float, max_idle_s: float | None, limit: int, exclude: Set[str], need: int | None = None
    ) -> BatchResult:
        """One batch: the due prefix of each due lane, then of the creation list; one relink per pass."""
        result = BatchResult()

        def room() -> int:
            return 0 if need is not None and result.freed_bytes >= need else limit - result.removed

        self._lanes_pass(self._deadlines, lambda key: now >= key, True, now, max_idle_s, room, exclude, result)
        if max_idle_s is not None and room() > 0:
            is_idle: _Due = lambda key: now - key >= max_idle_s  # noqa: E731
            self._lanes_pass(self._activity, is_idle, False, now, max_idle_s, room, exclude, result)
        if room() > 0:
            self._absolute_pass(now, room, exclude, result)
        result.exhausted = room() > 0 and not self._any_due(now, max_idle_s, exclude)
        return result

    def _lanes_pass(
        self,
        heap: list[tuple[float, float]],
        is_due: _Due,
        deadline_heap: bool,
        now: float,
        max_idle_s: float | None,
        room: Callable[[], int],
        exclude: Set[str],
        result: BatchResult,
    ) -> None:
        """Pop the due prefix of every lane the heap says is due (or until the batch is full)."""
        index = self._index
        removed: dict[str, Node] = {}
        requeue: list[float] = []
        for timeout in self._due_lanes(heap, is_due, deadline_heap):
            requeue.append(timeout)
            sid = self._lanes[timeout].first
            while sid is not None and len(removed) < room():
                node = index[sid]
                active = node[ACTIVE]
                if now < active + timeout and (max_idle_s is None or now - active < max_idle_s):
                    break
                if sid not in exclude:
                    del index[sid]
                    removed[sid] = node
                sid = node[LNEXT]
            if len(removed) >= room():
                break
        self._settle(removed, result)
        for timeout in requeue:
            self._requeue(timeout, deadline_heap)

    def _absolute_pass(self, now: float, room: Callable[[], int], exclude: Set[str], result: BatchResult) -> None:
        """Pop the sessions past their absolute deadline: a prefix of the creation list."""
        index = self._index
        removed: dict[str, Node] = {}
        sid = self._cfirst
        while sid is not None and len(removed) < room():
            node = index[sid]
            if now < node[STATIC][ABSOLUTE]:
                break
            if sid not in exclude:
                del index[sid]
                removed[sid] = node
            sid = node[CNEXT]
        self._settle(removed, result)

    def _settle(self, removed: dict[str, Node], result: BatchResult) -> None:
        """Relink around what a pass removed and add it to the batch's result."""
        if not removed:
            return
        self._forget(removed)
        result.removed += len(removed)
        for node in removed.values():
            static = node[STATIC]
            result.freed_bytes += static[COST]
            result.lifetime_s += node[ACTIVE] - static[CREATED]

    def _any_due(self, now: float, max_idle_s: float | None, exclude: Set[str]) -> bool:
        """Whether a next batch could find something (excluded sessions left at a head do not count)."""
        if exclude:
            return True  # cheap and safe: the manager stops on a batch that removes nothing
        if self._deadlines and now >= self._deadlines[0][0]:
            return True
        if max_idle_s is not None and self._activity and now - self._activity[0][0] >= max_idle_s:
            return True
        first = self._cfirst
        return first is not None and now >= self._index[first][STATIC][ABSOLUTE]

    def listen_evictions(self, listener: EvictionListener) -> None:
        self._on_evict = listener

    def stats(self, now: float) -> StoreStats:
        """Counts expired sessions by advancing one frontier per lane and one over the creation list:
        O(timeouts in use + newly expired), each session counted once (its MARK)."""
        if now < self._counted_at:  # time went backwards: count afresh
            self._mark += 1
            self._expired = 0
            self._cfrontier = None
            for lane in self._lanes.values():
                lane.frontier = None
        self._counted_at = now
        index, mark = self._index, self._mark
        for timeout, lane in self._lanes.items():
            sid = lane.first if lane.frontier is None else index[lane.frontier][LNEXT]
            while sid is not None:
                node = index[sid]
                if now < node[ACTIVE] + timeout:
                    break
                self._count(sid, node, mark)
                lane.frontier = sid
                sid = node[LNEXT]
        sid = self._cfirst if self._cfrontier is None else index[self._cfrontier][CNEXT]
        while sid is not None:
            node = index[sid]
            if now < node[STATIC][ABSOLUTE]:
                break
            self._count(sid, index[sid], mark)
            self._cfrontier = sid
            sid = node[CNEXT]
        return StoreStats(len(index), self._expired, self._bytes)

    def _count(self, sid: str, node: Node, mark: int) -> None:
        if node[MARK] != mark:
            self._index[sid] = (node[0], node[1], node[2], node[3], node[4], mark, node[6])
            self._expired += 1

    async def refresh_stats(self, now: float) -> None:
        """Nothing to do: stats() counts in-process."""

    async def acquire_lease(self, ttl_s: float) -> str | None:
        return "local"  # one process: nobody else to share the work with

    async def renew_lease(self, token: str, ttl_s: float) -> bool:
        return True

    async def release_lease(self, token: str) -> None:
        """Nothing held."""

    async def close(self) -> None:
        """Nothing to release: the sessions live as long as the process."""


def _first_kept(removed: dict[str, Node], sid: str | None, pos: int) -> str | None:
    """Follow links at `pos` from `sid` past removed sessions: the first session still stored."""
    while sid is not None and sid in removed:
        sid = removed[sid][pos]  # type: ignore[assignment]
    return sid


def _to_record(sid: str, active: float, s: Static) -> SessionRecord:
    return SessionRecord(
        sid, s[USER], s[CLIENT], s[TYPE], s[CREATED], active, s[TIMEOUT], s[ABSOLUTE], s[BLOB], s[META]
    )


def _add(total: BatchResult, batch: BatchResult) -> None:
    total.removed += batch.removed
    total.freed_bytes += batch.freed_bytes
    total.lifetime_s += batch.lifetime_s
