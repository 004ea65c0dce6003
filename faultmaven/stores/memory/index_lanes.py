"""The lanes of the expiry index and the heaps over them that say which lanes have a due head (one by
the head's idle deadline, one by its last activity).

A heap entry is a lower bound of its lane head's key (a head only ever gets later), validated lazily when
popped, so activity never touches a heap. Per-lane bookkeeping grows with the number of distinct
timeouts, never with the number of sessions.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator, Mapping
from typing import TypeAlias

from faultmaven.stores.memory.layout import ACTIVE, Node

Due: TypeAlias = Callable[[float], bool]  # is a heap key (deadline or last activity) due now?


class Ends:
    """The ends of one linked list of sessions, and how far the expired count walked it from `first`."""

    __slots__ = ("first", "frontier", "last")

    def __init__(self, sid: str | None = None) -> None:
        self.first: str | None = sid
        self.last: str | None = sid
        self.frontier: str | None = None  # the last session counted expired, walking from first


class Lane(Ends):
    """The sessions of one timeout, in activity order."""

    __slots__ = ()


def idle_deadline(head_active: float, timeout: float) -> float:
    """A lane keyed by when its head's idle timeout runs out."""
    return head_active + timeout


def last_activity(head_active: float, timeout: float) -> float:
    """A lane keyed by its head's last activity (how long it has been idle)."""
    return head_active


class LaneHeap:
    """The lanes in a heap by `key` of their head: (key, timeout) entries, each a lower bound of its lane
    head's key (a head only ever gets later), validated lazily when popped."""

    __slots__ = ("_entries", "_keys", "key")

    def __init__(self, key: Callable[[float, float], float]) -> None:
        self.key = key  # (head's last activity, timeout) -> the lane's key
        self._entries: list[tuple[float, float]] = []
        self._keys: dict[float, float] = {}  # timeout -> the key of its lane's live entry

    def add(self, lanes: Mapping[float, Lane], timeout: float, head_active: float) -> None:
        """The new lane `lanes[timeout]` enters. Entries of lanes that emptied are dropped when popped; the
        heap is rebuilt when such entries outnumber the lanes, so it stays O(timeouts)."""
        if len(self._entries) > 2 * len(lanes) + 16:
            self._keys = {t: k for t, k in self._keys.items() if t in lanes}
            self._entries = [(k, t) for t, k in self._keys.items()]
            heapq.heapify(self._entries)
        self.set(timeout, head_active)

    def set(self, timeout: float, head_active: float) -> None:
        """The lane of `timeout` is keyed by this head from now on (earlier entries of it turn stale)."""
        key = self._keys[timeout] = self.key(head_active, timeout)
        heapq.heappush(self._entries, (key, timeout))

    def due(self, is_due: Due, lanes: Mapping[float, Lane], nodes: Mapping[str, Node]) -> Iterator[float]:
        """Pop the lanes whose head is due, as their timeouts; stale entries are dropped or re-pushed."""
        heap, keys = self._entries, self._keys
        yielded: set[float] = set()  # each lane once per pass; the pass requeues it afterwards
        while heap and is_due(heap[0][0]):
            key, timeout = heapq.heappop(heap)
            lane = lanes.get(timeout)
            if lane is None or timeout in yielded or keys.get(timeout) != key:
                continue  # the lane emptied, was done in this pass, or this entry was replaced
            head = nodes[lane.first][ACTIVE]  # type: ignore[index]
            real = self.key(head, timeout)
            if real != key and not is_due(real):
                self.set(timeout, head)
                continue
            yielded.add(timeout)
            yield timeout
