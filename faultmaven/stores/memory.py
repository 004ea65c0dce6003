"""The embedded in-memory store: one process, every operation O(1), cleanup O(expired).

Sessions form a doubly linked list ordered by last activity (activity moves a session to the tail), like
cachetools' TTLCache. Because the idle timeout is the same for every session, the expired sessions are
always a prefix of the list: cleanup pops from the head and stops at the first live session, and the
expired count advances a frontier over that prefix instead of scanning.

The list lives in one dict, id -> tuple, whose tuples link to their neighbours by id. Tuples of strings,
numbers and bytes are untracked by Python's cyclic garbage collector, and so is a dict holding only them:
a million sessions add no work to a full collection (a million linked objects would add about 200 ms of
pause, seen here). Each change of a link writes a new tuple.

Nothing here awaits, so each call is atomic on the event loop: the idle re-check and the removal of a
session can never be split by a concurrent touch. Callers must pass a non-decreasing `now`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Set
from typing import Final, TypeAlias

from faultmaven.exceptions import SessionOverMemoryBudgetError, SessionStoreException
from faultmaven.session import SessionRecord
from faultmaven.stores.base import BatchResult, Ended, EvictionListener, StoreStats

# prev id, next id, user id, created_at, last_activity, data, cost in bytes, position (grows along the list)
Node: TypeAlias = tuple[str | None, str | None, str | None, float, float, bytes, int, int]
PREV: Final = 0
NEXT: Final = 1
USER: Final = 2
CREATED: Final = 3
ACTIVE: Final = 4
BLOB: Final = 5
COST: Final = 6
SEQ: Final = 7

# Bytes one session costs besides its strings: the tuple, two floats, two ints and its share of the dict
# (entry plus index slot at the dict's average fill). Checked against tracemalloc in tests.
_NODE_BYTES = sys.getsizeof((None,) * 8) + 2 * sys.getsizeof(0.0) + 2 * sys.getsizeof(2**20) + 48


def session_bytes(sid: str, user_id: str | None, blob: bytes) -> int:
    """The estimate of what one session costs in memory: what memory_usage_mb adds up."""
    return _NODE_BYTES + sys.getsizeof(sid) + sys.getsizeof(blob) + (sys.getsizeof(user_id) if user_id else 0)


def _with_prev(n: Node, prev: str | None) -> Node:
    return (prev, n[1], n[2], n[3], n[4], n[5], n[6], n[7])


def _with_next(n: Node, nxt: str | None) -> Node:
    return (n[0], nxt, n[2], n[3], n[4], n[5], n[6], n[7])


class MemoryStore:
    """In-process session store; see the module docstring for the data structure.

    With `max_bytes`, a write that would take the estimate over the budget first evicts the least
    recently active sessions (expired ones are at the head, so they go first); a single session larger
    than the whole budget is refused and nothing is evicted for it.
    """

    def __init__(self, max_bytes: int | None = None) -> None:
        self.max_bytes = max_bytes
        self._on_evict: EvictionListener | None = None
        self._index: dict[str, Node] = {}
        self._first: str | None = None  # least recently active
        self._last: str | None = None  # most recently active
        self._seq = 0
        self._bytes = 0
        self._expired = 0  # length of the counted expired prefix
        self._boundary: str | None = None  # its last session
        self._boundary_seq = -1  # a session is counted iff its SEQ <= this
        self._counted_for: tuple[float, float] | None = None  # (now, timeout_s) of the last count

    def __len__(self) -> int:
        return len(self._index)

    # -- list primitives ---------------------------------------------------------------------------

    def _relink(self, prev: str | None, nxt: str | None) -> None:
        """Make `prev` and `nxt` neighbours (None stands for the ends of the list)."""
        index = self._index
        if prev is None:
            self._first = nxt
        else:
            index[prev] = _with_next(index[prev], nxt)
        if nxt is None:
            self._last = prev
        else:
            index[nxt] = _with_prev(index[nxt], prev)

    def _append(self, sid: str, user_id: str | None, created_at: float, active: float, blob: bytes, cost: int) -> None:
        last = self._last
        self._seq += 1
        self._index[sid] = (last, None, user_id, created_at, active, blob, cost, self._seq)
        if last is None:
            self._first = sid
        else:
            self._index[last] = _with_next(self._index[last], sid)
        self._last = sid

    def _unlink(self, sid: str) -> Node:
        """Take one session out of the list and the index; keeps the counts right. Returns its node."""
        node = self._index.pop(sid)
        self._relink(node[PREV], node[NEXT])
        self._bytes -= node[COST]
        if node[SEQ] <= self._boundary_seq:
            self._expired -= 1
            if sid == self._boundary:
                self._set_boundary(node[PREV])
        return node

    def _set_boundary(self, sid: str | None) -> None:
        self._boundary = sid
        self._boundary_seq = -1 if sid is None else self._index[sid][SEQ]

    def _live(self, session_id: str, now: float, timeout_s: float) -> Node | None:
        node = self._index.get(session_id)
        if node is None or now - node[ACTIVE] >= timeout_s:
            return None
        return node

    def _move_to_tail(self, sid: str, node: Node, now: float, blob: bytes, cost: int) -> None:
        """Record activity at `now` (and new data): the session becomes the most recently active."""
        if sid == self._last:
            self._index[sid] = (node[PREV], None, node[USER], node[CREATED], now, blob, cost, node[SEQ])
        else:
            self._relink(node[PREV], node[NEXT])
            self._append(sid, node[USER], node[CREATED], now, blob, cost)

    def _record(self, sid: str) -> SessionRecord | None:
        """The stored session without recording activity (also what tests peek with)."""
        node = self._index.get(sid)
        if node is None:
            return None
        return SessionRecord(sid, node[USER], node[CREATED], node[ACTIVE], node[BLOB])

    def _ids_in_order(self) -> Iterator[str]:
        """Ids from least to most recently active."""
        sid = self._first
        while sid is not None:
            nxt = self._index[sid][NEXT]
            yield sid
            sid = nxt

    # -- memory budget ----------------------------------------------------------------------------

    def _check_budget(self, cost: int) -> None:
        if self.max_bytes is not None and cost > self.max_bytes:
            raise SessionOverMemoryBudgetError(cost, self.max_bytes)

    def _evict_for(self, incoming: int, keep: str | None = None) -> None:
        """Evict from the head until `incoming` more bytes fit the budget (never the session `keep`)."""
        if self.max_bytes is None or self._bytes + incoming <= self.max_bytes:
            return
        evicted = BatchResult()
        sid = self._first
        while self._bytes + incoming > self.max_bytes and sid is not None:
            nxt = self._index[sid][NEXT]
            if sid != keep:
                node = self._unlink(sid)
                evicted.removed += 1
                evicted.freed_bytes += node[COST]
                evicted.lifetime_s += node[ACTIVE] - node[CREATED]
            sid = nxt
        if self._on_evict is not None:
            self._on_evict(evicted)

    # -- SessionStore ------------------------------------------------------------------------------

    async def insert(self, record: SessionRecord, timeout_s: float) -> None:
        sid = record.session_id
        if sid in self._index:
            raise SessionStoreException("session id already stored")
        cost = session_bytes(sid, record.user_id, record.blob)
        self._check_budget(cost)
        self._evict_for(cost)
        self._append(sid, record.user_id, record.created_at, record.last_activity, record.blob, cost)
        self._bytes += cost

    async def touch(self, session_id: str, now: float, timeout_s: float) -> SessionRecord | None:
        node = self._live(session_id, now, timeout_s)
        if node is None:
            return None
        self._move_to_tail(session_id, node, now, node[BLOB], node[COST])
        return SessionRecord(session_id, node[USER], node[CREATED], now, node[BLOB])

    async def replace_data(self, session_id: str, blob: bytes, now: float, timeout_s: float) -> SessionRecord | None:
        node = self._live(session_id, now, timeout_s)
        if node is None:
            return None
        cost = session_bytes(session_id, node[USER], blob)
        self._check_budget(cost)
        self._move_to_tail(session_id, node, now, blob, cost)
        self._evict_for(cost - node[COST], keep=session_id)
        self._bytes += cost - node[COST]
        return SessionRecord(session_id, node[USER], node[CREATED], now, blob)

    async def delete(self, session_id: str, now: float, timeout_s: float) -> Ended | None:
        if session_id not in self._index:
            return None
        node = self._unlink(session_id)
        return Ended(now - node[ACTIVE] < timeout_s, node[ACTIVE] - node[CREATED])

    async def remove_idle(self, now: float, max_idle_s: float, limit: int, exclude: Set[str]) -> BatchResult:
        """Pop idle sessions off the head, relinking the list once per run of removed sessions."""
        index, boundary_seq = self._index, self._boundary_seq
        kept: str | None = None  # the last session left in place before the current run of removed ones
        sid = self._first
        removed = freed = counted = 0
        lifetime = 0.0
        boundary_removed, new_boundary = False, None
        while sid is not None and removed < limit:
            node = index[sid]
            active = node[ACTIVE]
            if now - active < max_idle_s:
                break
            if exclude and sid in exclude:  # failed earlier in this run: leave it where it is
                self._relink(kept, sid)
                kept = sid
                sid = node[NEXT]
                continue
            del index[sid]
            removed += 1
            freed += node[COST]
            lifetime += active - node[CREATED]
            if node[SEQ] <= boundary_seq:
                counted += 1
                if sid == self._boundary:  # the counted prefix now ends at the last session kept before it
                    boundary_removed, new_boundary = True, kept
            sid = node[NEXT]
        self._relink(kept, sid)
        self._bytes -= freed
        self._expired -= counted
        if boundary_removed:
            self._set_boundary(new_boundary)
        exhausted = sid is None or now - index[sid][ACTIVE] < max_idle_s
        return BatchResult(removed=removed, lifetime_s=lifetime, freed_bytes=freed, exhausted=exhausted)

    def listen_evictions(self, listener: EvictionListener) -> None:
        self._on_evict = listener

    def stats(self, now: float, timeout_s: float) -> StoreStats:
        counted_for = self._counted_for
        if counted_for is None or timeout_s != counted_for[1] or now < counted_for[0]:
            self._expired = 0
            self._set_boundary(None)
        self._counted_for = (now, timeout_s)
        index = self._index
        boundary = self._boundary
        sid = self._first if boundary is None else index[boundary][NEXT]
        while sid is not None:
            node = index[sid]
            if now - node[ACTIVE] < timeout_s:
                break
            self._expired += 1
            boundary = sid
            sid = node[NEXT]
        if boundary != self._boundary:
            self._set_boundary(boundary)
        return StoreStats(len(index), self._expired, self._bytes)

    async def refresh_stats(self, now: float, timeout_s: float) -> None:
        """Nothing to do: stats() counts in-process."""

    async def acquire_lease(self, ttl_s: float) -> str | None:
        return "local"  # one process: nobody else to share the work with

    async def renew_lease(self, token: str, ttl_s: float) -> bool:
        return True

    async def release_lease(self, token: str) -> None:
        """Nothing held."""

    async def close(self) -> None:
        """Nothing to release: the sessions live as long as the process."""
