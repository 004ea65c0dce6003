"""The lanes of the expiry index and the two heaps over them that say which lanes have a due head.

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
    """The sessions of one timeout in activity order, and the keys of its two heap entries."""

    __slots__ = ("akey", "dkey")

    def __init__(self, sid: str) -> None:
        super().__init__(sid)
        self.dkey = 0.0  # idle-deadline heap entry of this lane (a lower bound of the head's deadline)
        self.akey = 0.0  # activity heap entry (a lower bound of the head's last activity)


class LaneHeaps:
    """(lane head's idle deadline, timeout) and (lane head's last activity, timeout), each a heap."""

    def __init__(self) -> None:
        self._deadlines: list[tuple[float, float]] = []
        self._activity: list[tuple[float, float]] = []

    def add(self, lanes: Mapping[float, Lane], timeout: float, head_active: float) -> None:
        """The new lane `lanes[timeout]` enters both heaps. Entries of lanes that emptied are dropped when
        popped; the heaps are rebuilt when such entries outnumber the lanes, so they stay O(timeouts)."""
        if len(self._activity) > 2 * len(lanes) + 16:
            self._deadlines = [(lane.dkey, t) for t, lane in lanes.items()]
            self._activity = [(lane.akey, t) for t, lane in lanes.items()]
            heapq.heapify(self._deadlines)
            heapq.heapify(self._activity)
        lane = lanes[timeout]
        self.set_key(lane, timeout, head_active + timeout, True)
        self.set_key(lane, timeout, head_active, False)

    def set_key(self, lane: Lane, timeout: float, key: float, deadline_heap: bool) -> None:
        if deadline_heap:
            lane.dkey = key
            heapq.heappush(self._deadlines, (key, timeout))
        else:
            lane.akey = key
            heapq.heappush(self._activity, (key, timeout))

    def due(
        self, deadline_heap: bool, is_due: Due, lanes: Mapping[float, Lane], nodes: Mapping[str, Node]
    ) -> Iterator[float]:
        """Pop the lanes whose head is due, as their timeouts; stale entries are dropped or re-pushed."""
        heap = self._deadlines if deadline_heap else self._activity
        yielded: set[float] = set()  # each lane once per pass; the pass requeues it afterwards
        while heap and is_due(heap[0][0]):
            key, timeout = heapq.heappop(heap)
            lane = lanes.get(timeout)
            if lane is None or timeout in yielded or (lane.dkey if deadline_heap else lane.akey) != key:
                continue  # the lane emptied, was done in this pass, or this entry was replaced
            head = nodes[lane.first][ACTIVE]  # type: ignore[index]
            real = head + timeout if deadline_heap else head
            if real != key and not is_due(real):
                self.set_key(lane, timeout, real, deadline_heap)
                continue
            yielded.add(timeout)
            yield timeout
