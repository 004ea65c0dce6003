"""The lists of the expiry index: one dict of sessions, linked into lanes (one per timeout, in activity
order) and the creation list, with the byte total and the expired count kept exact on every change.

All lists live in one dict, id -> Node (memory_layout.py), whose tuples link to their neighbours by id: a
million sessions add no work to a full garbage collection. What expired, and its removal, is expiry.py.
"""

from __future__ import annotations

from collections import deque
from collections.abc import ItemsView, Iterator
from itertools import groupby, pairwise, repeat
from operator import itemgetter

from faultmaven.session import SessionRecord
from faultmaven.stores.memory.index_lanes import Ends, Lane, LaneHeaps
from faultmaven.stores.memory.layout import (
    ABSOLUTE,
    ACTIVE,
    CNEXT,
    COST,
    CPREV,
    CREATED,
    LNEXT,
    LPREV,
    MARK,
    STATIC,
    TIMEOUT,
    USER,
    Node,
    Static,
    to_record,
    with_cnext,
    with_cprev,
    with_lnext,
    with_lprev,
)


def _neighbours(ids: list[str], order: list[int]) -> tuple[list[str | None], list[str | None]]:
    """By position: the id before and the id after each session in `order` (None at the ends)."""
    before: list[str | None] = [None] * len(ids)
    after: list[str | None] = [None] * len(ids)
    for prev, i in pairwise(order):
        after[prev] = ids[i]
        before[i] = ids[prev]
    return before, after


def _ends(positions: Iterator[int]) -> tuple[int, int]:
    """The first and the last of a non-empty run of positions."""
    first = next(positions)
    tail = deque(positions, maxlen=1)
    return first, tail[0] if tail else first


class ExpiryLists:
    """Sessions in one dict, linked into lanes and the creation list; counts kept exact on every change.

    Nothing here awaits, so each call is atomic on the event loop. Callers pass a non-decreasing `now`.
    """

    def __init__(self) -> None:
        self._nodes: dict[str, Node] = {}
        self._lanes: dict[float, Lane] = {}
        self._heaps = LaneHeaps()
        self._creation = Ends()  # every session, oldest first; its frontier: counted past the absolute deadline
        self._bytes = 0
        self._expired = 0
        self._mark = 1  # sessions whose MARK equals this are counted in _expired
        self._counted_at = float("-inf")

    # -- reading ------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, sid: object) -> bool:
        return sid in self._nodes

    @property
    def bytes(self) -> int:
        """The summed cost (sizing.session_bytes) of the stored sessions."""
        return self._bytes

    def get(self, sid: str) -> Node | None:
        """The stored node, expired or not, without recording activity."""
        return self._nodes.get(sid)

    def items(self) -> ItemsView[str, Node]:
        return self._nodes.items()

    def frozen(self) -> dict[str, Node]:
        """Every session's node at this instant: one C-level copy of the dict (the nodes are immutable, so a
        snapshot encodes the copy off the loop)."""
        return self._nodes.copy()

    def record(self, sid: str) -> SessionRecord | None:
        """The stored session, expired or not, without recording activity."""
        node = self._nodes.get(sid)
        return None if node is None else to_record(sid, node[ACTIVE], node[STATIC])

    def live(self, sid: str, now: float, user_id: str | None) -> Node | None:
        """The session if it is stored, not expired and visible to `user_id` (None: to anyone)."""
        node = self._nodes.get(sid)
        if node is None:
            return None
        static = node[STATIC]
        if now >= node[ACTIVE] + static[TIMEOUT] or now >= static[ABSOLUTE]:
            return None
        if user_id is not None and static[USER] is not None and static[USER] != user_id:
            return None
        return node

    def least_recently_active(self, keep: str | None) -> str | None:
        """The stored session with the oldest activity, never `keep`: O(timeouts in use)."""
        best: tuple[float, str] | None = None
        for lane in self._lanes.values():
            sid = lane.first
            if sid is None or sid == keep:  # `keep` was just moved to its lane's tail: it heads it only alone
                continue
            active = self._nodes[sid][ACTIVE]
            if best is None or active < best[0]:
                best = (active, sid)
        return None if best is None else best[1]

    def lanes(self) -> Iterator[tuple[float, str | None, str | None, str | None]]:
        """(timeout, first, last, expired frontier) of every lane (what consistency checks walk from)."""
        return ((t, lane.first, lane.last, lane.frontier) for t, lane in self._lanes.items())

    def creation(self) -> tuple[str | None, str | None, str | None]:
        """(first, last, expired frontier) of the creation list."""
        return self._creation.first, self._creation.last, self._creation.frontier

    def counted(self) -> tuple[int, int]:
        """(the expired count, the MARK of the sessions it counts)."""
        return self._expired, self._mark

    # -- linking ------------------------------------------------------------------------------------

    def _relink(self, ends: Ends, prev: str | None, nxt: str | None, lane: bool) -> None:
        """Link `prev` and `nxt` to each other in a lane (`lane`) or in the creation list; None is an end."""
        nodes = self._nodes
        if prev is None:
            ends.first = nxt
        else:
            nodes[prev] = with_lnext(nodes[prev], nxt) if lane else with_cnext(nodes[prev], nxt)
        if nxt is None:
            ends.last = prev
        else:
            nodes[nxt] = with_lprev(nodes[nxt], prev) if lane else with_cprev(nodes[nxt], prev)

    def _lane_relink(self, lane: Lane, prev: str | None, nxt: str | None) -> None:
        self._relink(lane, prev, nxt, True)

    def _creation_relink(self, prev: str | None, nxt: str | None) -> None:
        self._relink(self._creation, prev, nxt, False)

    def append(self, sid: str, active: float, static: Static) -> None:
        """A new session: the tail of its lane and of the creation list."""
        nodes = self._nodes
        timeout = static[TIMEOUT]
        lane = self._lanes.get(timeout)
        clast = self._creation.last
        if lane is None:
            self._lanes[timeout] = lane = Lane(sid)
            self._heaps.add(self._lanes, timeout, active)
            lprev = None
        else:
            lprev = lane.last
            nodes[lprev] = with_lnext(nodes[lprev], sid)  # type: ignore[index]
            lane.last = sid
        nodes[sid] = (lprev, None, clast, None, active, 0, static)
        if clast is None:
            self._creation.first = sid
        else:
            nodes[clast] = with_cnext(nodes[clast], sid)
        self._creation.last = sid
        self._bytes += static[COST]

    def load(self, ids: list[str], actives: list[float], statics: list[Static]) -> list[int]:
        """Fill an empty index at once (a snapshot read back) with sessions given by position (ids, last
        activities, fields): the creation list in creation order and each lane in activity order, as the
        creates and touches in time had left them; sessions created, or last active, at the same instant
        keep the order they are given in. Every pass is C-level, or a plain loop over positions: no lookup
        by id. Returns the positions in activity order. ValueError, the index left empty, if an id
        appears twice."""
        if self._nodes:
            raise ValueError("load() fills an empty index")
        if not ids:
            return []
        created = sorted(range(len(ids)), key=[s[CREATED] for s in statics].__getitem__)
        cprev, cnext = _neighbours(ids, created)
        order = sorted(range(len(ids)), key=actives.__getitem__)
        timeouts = [s[TIMEOUT] for s in statics].__getitem__
        by_lane = sorted(order, key=timeouts)  # each lane's positions together, in activity order
        lprev, lnext = _neighbours(ids, by_lane)
        lanes = [(timeout, *_ends(members)) for timeout, members in groupby(by_lane, key=timeouts)]
        for _, first, last in lanes:
            lprev[first], lnext[last] = None, None  # a lane's ends: no link to the lane beside
        # Nodes built in the order the sessions were read: each list read front to back.
        nodes = dict(zip(ids, zip(lprev, lnext, cprev, cnext, actives, repeat(0), statics), strict=True))
        if len(nodes) != len(ids):
            raise ValueError("a session id appears twice")
        self._nodes = nodes
        self._creation.first, self._creation.last = ids[created[0]], ids[created[-1]]
        for timeout, first, last in lanes:
            lane = self._lanes[timeout] = Lane(ids[first])
            lane.last = ids[last]
            self._heaps.add(self._lanes, timeout, actives[first])
        self._bytes = sum(map(itemgetter(COST), statics))
        return order

    def move_to_tail(self, sid: str, node: Node, now: float, static: Static) -> None:
        """Record activity at `now` (`static`: the same fields, or new data of the same cost): the most
        recently active of its lane."""
        nodes = self._nodes
        lane = self._lanes[static[TIMEOUT]]
        if sid != lane.last:
            self._lane_relink(lane, node[LPREV], node[LNEXT])
            nodes[lane.last] = with_lnext(nodes[lane.last], sid)  # type: ignore[index]
        lprev = lane.last if sid != lane.last else node[LPREV]
        lane.last = sid
        nodes[sid] = (lprev, None, node[2], node[3], now, node[MARK], static)

    def update(self, sid: str, node: Node, now: float, static: Static) -> None:
        """New data (and its cost) and activity at `now`."""
        self.move_to_tail(sid, node, now, static)
        self._bytes += static[COST] - node[STATIC][COST]

    def unlink(self, sid: str) -> Node:
        """Take one session out of the index and every list; returns its node."""
        node = self._nodes.pop(sid)
        self._unlink_lane(sid, node)
        prev = node[CPREV]
        if self._creation.frontier == sid:
            self._creation.frontier = prev
        self._creation_relink(prev, node[CNEXT])
        self._uncount(node)
        return node

    def _uncount(self, node: Node) -> None:
        """The byte total and the expired count without a session just taken out."""
        self._bytes -= node[STATIC][COST]
        if node[MARK] == self._mark:
            self._expired -= 1

    def _unlink_lane(self, sid: str, node: Node) -> None:
        """Out of its lane (already out of the dict): neighbours relinked, the frontier moved back."""
        timeout = node[STATIC][TIMEOUT]
        lane = self._lanes[timeout]
        if lane.frontier == sid:
            lane.frontier = node[LPREV]
        self._lane_relink(lane, node[LPREV], node[LNEXT])
        if lane.first is None:
            del self._lanes[timeout]

    def _unlink_creation_middle(self, prev: str, nxt: str | None) -> None:
        """Out of the creation list, a session that is not its head (`prev` is stored)."""
        nodes = self._nodes
        nodes[prev] = with_cnext(nodes[prev], nxt)
        if nxt is None:
            self._creation.last = prev
        else:
            nodes[nxt] = with_cprev(nodes[nxt], prev)

    def rename(self, sid: str, new_id: str) -> Node:
        """Give a session a new id in place: same position in every list, every link and frontier moved."""
        nodes = self._nodes
        node = nodes[new_id] = nodes.pop(sid)
        lane = self._lanes[node[STATIC][TIMEOUT]]
        self._lane_relink(lane, node[LPREV], new_id)
        self._lane_relink(lane, new_id, node[LNEXT])
        self._creation_relink(node[CPREV], new_id)
        self._creation_relink(new_id, node[CNEXT])
        if lane.frontier == sid:
            lane.frontier = new_id
        if self._creation.frontier == sid:
            self._creation.frontier = new_id
        return nodes[new_id]
