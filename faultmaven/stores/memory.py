"""The embedded in-memory store: one process, every operation O(1), cleanup O(expired).

Sessions live in a dict for lookup and in a doubly linked list ordered by last activity (activity moves a
session to the tail), like cachetools' TTLCache. Because the idle timeout is the same for every session,
the expired sessions are always a prefix of the list: cleanup pops from the head and stops at the first
live session, and the expired count advances a frontier over that prefix instead of scanning.

Nothing here awaits, so each call is atomic on the event loop: the idle re-check and the removal of a
session can never be split by a concurrent touch. Callers must pass a non-decreasing `now`.
"""

from __future__ import annotations

import sys
from collections.abc import Set

from faultmaven.exceptions import SessionOverMemoryBudgetError, SessionStoreException
from faultmaven.session import SessionRecord
from faultmaven.stores.base import BatchResult, Ended, EvictionListener, StoreStats


class _Node:
    __slots__ = ("blob", "cost", "counted", "created_at", "last_activity", "next", "prev", "sid", "user_id")

    def __init__(self, sid: str, user_id: str | None, created_at: float, last_activity: float, blob: bytes) -> None:
        self.sid = sid
        self.user_id = user_id
        self.created_at = created_at
        self.last_activity = last_activity
        self.blob = blob
        self.cost = 0
        self.prev: _Node = self
        self.next: _Node = self
        self.counted = False  # inside the counted expired prefix

    def record(self) -> SessionRecord:
        return SessionRecord(self.sid, self.user_id, self.created_at, self.last_activity, self.blob)


_DETACHED = _Node("", None, 0.0, 0.0, b"")  # where unlinked nodes point

# Bytes one session costs besides its strings: the node, its two float timestamps and its share of the
# index dict (entry plus index slot at the dict's average fill). Checked against tracemalloc in tests.
_NODE_BYTES = sys.getsizeof(_Node("", None, 0.0, 0.0, b"")) + 2 * sys.getsizeof(0.0) + 48


def _cost(sid: str, user_id: str | None, blob: bytes) -> int:
    return _NODE_BYTES + sys.getsizeof(sid) + sys.getsizeof(blob) + (sys.getsizeof(user_id) if user_id else 0)


class MemoryStore:
    """In-process session store; see the module docstring for the data structure.

    With `max_bytes`, a write that would take the estimate over the budget first evicts the least
    recently active sessions (expired ones are at the head, so they go first); a single session larger
    than the whole budget is refused and nothing is evicted for it.
    """

    def __init__(self, max_bytes: int | None = None) -> None:
        self.max_bytes = max_bytes
        self._on_evict: EvictionListener | None = None
        self._head = _Node("", None, 0.0, 0.0, b"")  # sentinel: head.next is the oldest, head.prev the newest
        self._index: dict[str, _Node] = {}
        self._bytes = 0
        self._expired = 0
        self._boundary = self._head  # last node of the counted expired prefix
        self._counted_for: tuple[float, float] | None = None  # (now, timeout_s) of the last count

    def __len__(self) -> int:
        return len(self._index)

    # -- list primitives -------------------------------------------------------------------------

    def _append(self, node: _Node) -> None:
        head = self._head
        tail = head.prev
        node.prev = tail
        node.next = head
        tail.next = node
        head.prev = node

    def _unlink(self, node: _Node) -> None:
        prev, nxt = node.prev, node.next
        prev.next = nxt
        nxt.prev = prev
        node.prev = node.next = _DETACHED  # no links back into the list: freed by refcount, no GC cycle
        if node.counted:
            node.counted = False
            self._expired -= 1
            if node is self._boundary:
                self._boundary = prev

    def _remove(self, node: _Node) -> None:
        """Take one session out of the list, the index and the byte count."""
        self._unlink(node)
        del self._index[node.sid]
        self._bytes -= node.cost

    def _check_budget(self, cost: int) -> None:
        if self.max_bytes is not None and cost > self.max_bytes:
            raise SessionOverMemoryBudgetError(cost, self.max_bytes)

    def _evict_for(self, incoming: int, keep: _Node | None = None) -> None:
        """Evict from the head until `incoming` more bytes fit the budget (never the node `keep`)."""
        if self.max_bytes is None or self._bytes + incoming <= self.max_bytes:
            return
        evicted = BatchResult()
        node = self._head.next
        while self._bytes + incoming > self.max_bytes and node is not self._head:
            nxt = node.next
            if node is not keep:
                self._remove(node)
                evicted.removed += 1
                evicted.freed_bytes += node.cost
                evicted.lifetime_s += node.last_activity - node.created_at
            node = nxt
        if self._on_evict is not None:
            self._on_evict(evicted)

    def _live(self, session_id: str, now: float, timeout_s: float) -> _Node | None:
        node = self._index.get(session_id)
        if node is None or now - node.last_activity >= timeout_s:
            return None
        return node

    def _mark_active(self, node: _Node, now: float) -> None:
        node.last_activity = now
        if node is not self._head.prev:
            self._unlink(node)
            self._append(node)

    # -- SessionStore ------------------------------------------------------------------------------

    async def insert(self, record: SessionRecord) -> None:
        if record.session_id in self._index:
            raise SessionStoreException("session id already stored")
        node = _Node(record.session_id, record.user_id, record.created_at, record.last_activity, record.blob)
        node.cost = _cost(node.sid, node.user_id, node.blob)
        self._check_budget(node.cost)
        self._evict_for(node.cost)
        self._index[node.sid] = node
        self._append(node)
        self._bytes += node.cost

    async def touch(self, session_id: str, now: float, timeout_s: float) -> SessionRecord | None:
        node = self._live(session_id, now, timeout_s)
        if node is None:
            return None
        self._mark_active(node, now)
        return node.record()

    async def replace_data(self, session_id: str, blob: bytes, now: float, timeout_s: float) -> SessionRecord | None:
        node = self._live(session_id, now, timeout_s)
        if node is None:
            return None
        cost = _cost(node.sid, node.user_id, blob)
        self._check_budget(cost)
        self._mark_active(node, now)
        self._evict_for(cost - node.cost, keep=node)
        self._bytes += cost - node.cost
        node.blob, node.cost = blob, cost
        return node.record()

    async def delete(self, session_id: str, now: float, timeout_s: float) -> Ended | None:
        node = self._index.get(session_id)
        if node is None:
            return None
        self._remove(node)
        return Ended(now - node.last_activity < timeout_s, node.last_activity - node.created_at)

    async def remove_idle(self, now: float, max_idle_s: float, limit: int, exclude: Set[str]) -> BatchResult:
        """Pop idle sessions off the head, relinking the list once per run of removed nodes."""
        head, index, boundary, detached = self._head, self._index, self._boundary, _DETACHED
        kept = head  # the last node left in place before the current run of removed ones
        node = head.next
        removed = freed = counted = 0
        lifetime = 0.0
        while node is not head and removed < limit:
            last_activity = node.last_activity
            if now - last_activity < max_idle_s:
                break
            if exclude and node.sid in exclude:  # failed earlier in this run: leave it where it is
                kept.next = node
                node.prev = kept
                kept = node
                node = node.next
                continue
            nxt = node.next
            node.next = detached  # the removed run keeps only backward links: no reference cycle
            del index[node.sid]
            removed += 1
            freed += node.cost
            lifetime += last_activity - node.created_at
            if node.counted:
                counted += 1
                if node is boundary:
                    self._boundary = kept
            node = nxt
        kept.next = node
        node.prev = kept
        self._bytes -= freed
        self._expired -= counted
        exhausted = node is head or now - node.last_activity < max_idle_s
        return BatchResult(removed=removed, lifetime_s=lifetime, freed_bytes=freed, exhausted=exhausted)

    def listen_evictions(self, listener: EvictionListener) -> None:
        self._on_evict = listener

    def stats(self, now: float, timeout_s: float) -> StoreStats:
        counted_for = self._counted_for
        if counted_for is None or timeout_s != counted_for[1] or now < counted_for[0]:
            self._reset_count()
        self._counted_for = (now, timeout_s)
        head, boundary = self._head, self._boundary
        node = boundary.next
        while node is not head and now - node.last_activity >= timeout_s:
            node.counted = True
            self._expired += 1
            boundary = node
            node = node.next
        self._boundary = boundary
        return StoreStats(len(self._index), self._expired, self._bytes)

    def _reset_count(self) -> None:
        node = self._head.next
        while node.counted:
            node.counted = False
            node = node.next
        self._expired = 0
        self._boundary = self._head

    async def close(self) -> None:
        """Nothing to release: the sessions live as long as the process."""
