"""The expiry index behind the in-memory store: the sessions, and what expired found and removed
without a scan.

Each session has its own idle timeout and an absolute deadline, so the expired sessions are not a prefix
of one activity-ordered list. They are a prefix of one of the lists the index keeps, all in one dict,
id -> Node (layout.py), whose tuples link to their neighbours by id (a million sessions add no work to a
full garbage collection):
- one *lane* per distinct timeout: the sessions with that timeout in order of last activity, so a lane's
  idle-expired sessions are a prefix of it;
- the *creation list*: every session in order of creation, so with one absolute lifetime the sessions
  past their absolute deadline are a prefix of it.
A cleanup batch finds the lanes whose head is due through two small heaps over lanes (index_lanes.py),
pops each due prefix, and pops the due prefix of the creation list: O(removed + timeouts in use).

The expired count advances one frontier per lane and one over the creation list and marks each session
it counts (MARK), so each is counted once: O(timeouts in use + newly expired) per read. The byte total
and the expired count are kept exact on every change.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Set
from itertools import groupby, pairwise, repeat
from operator import itemgetter
from typing import Any, Protocol

from faultmaven.stores.base import BatchResult
from faultmaven.stores.memory.endings import EndingsLog
from faultmaven.stores.memory.index_lanes import Due, Ends, Lane, LaneHeap, idle_deadline, last_activity
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
    require,
    with_cnext,
    with_cprev,
    with_lnext,
    with_lprev,
)

__all__ = ["ExpiryIndex", "Owners"]


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


class Owners(Protocol):
    """What else links a session by its user or client id (told when a cleanup removes such a session)."""

    def forget(self, sid: str, static: Static) -> None: ...


class _Batch:
    """One cleanup batch's arguments and progress, shared by its passes."""

    __slots__ = ("exclude", "limit", "log", "max_idle_s", "now", "owners", "result")

    def __init__(
        self, now: float, max_idle_s: float | None, limit: int, exclude: Set[str], log: EndingsLog, owners: Owners
    ) -> None:
        self.now, self.max_idle_s, self.limit, self.exclude = now, max_idle_s, limit, exclude
        self.log, self.owners, self.result = log, owners, BatchResult()

    def room(self) -> int:
        return self.limit - self.result.removed


# The lists, the removal of what is due and the expired count keep the same invariants over the same
# private state: cut in two, one half reached into the other's privates some 40 times.
# shape: one data structure
class ExpiryIndex:
    """Sessions in one dict, linked into lanes and the creation list; what is due removed, what expired
    counted, without a scan.

    Nothing here awaits, so each call is atomic on the event loop. Callers pass a non-decreasing `now`.
    """

    def __init__(self) -> None:
        self._nodes: dict[str, Node] = {}
        self._lanes: dict[float, Lane] = {}
        self._by_deadline = LaneHeap(idle_deadline)  # the lanes whose head's idle timeout ran out
        self._by_activity = LaneHeap(last_activity)  # the lanes whose head is idle past a max age
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

    def frozen(self) -> dict[str, Node]:
        """Every session's node at this instant: one C-level copy of the dict (the nodes are immutable, so a
        snapshot encodes the copy off the loop)."""
        return self._nodes.copy()

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

    def lane_heads(self) -> list[str]:
        """The least recently active session of every lane (a lane is never empty)."""
        return [lane.first for lane in self._lanes.values()]  # type: ignore[misc]

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

    def _add_lane(self, timeout: float, head_active: float) -> None:
        """A new lane enters both heaps."""
        self._by_deadline.add(self._lanes, timeout, head_active)
        self._by_activity.add(self._lanes, timeout, head_active)

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
            self._add_lane(timeout, active)
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
            self._add_lane(timeout, actives[first])
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

    # -- what is due ---------------------------------------------------------------------------------

    def remove_due(
        self, now: float, max_idle_s: float | None, limit: int, exclude: Set[str], log: EndingsLog, owners: Owners
    ) -> BatchResult:
        """One batch: the due prefix of each due lane, then of the creation list; one relink per pass.
        Each removal is tallied in `log`; a removed session with a user or client id is told to `owners`."""
        batch = _Batch(now, max_idle_s, limit, exclude, log, owners)
        due_now: Due = lambda key: now >= key  # noqa: E731
        self._lanes_pass(self._by_deadline, due_now, batch)
        if max_idle_s is not None and batch.room() > 0:
            is_idle: Due = lambda key: now - key >= max_idle_s  # noqa: E731
            self._lanes_pass(self._by_activity, is_idle, batch)
        if batch.room() > 0:
            self._absolute_pass(batch)
        # A batch with room left ran every pass to its end: nothing is due but what it was told to leave.
        batch.result.exhausted = batch.room() > 0 and not exclude
        return batch.result

    # shape: split into per-lane and per-session helpers it costs 1.27x per removed session (503 -> 641 ns)
    def _lanes_pass(self, heap: LaneHeap, is_due: Due, batch: _Batch) -> None:  # noqa: C901
        """Pop the due prefix of every lane the heap says is due (or until the batch is full). A lane is
        relinked once per run of removed sessions (sessions in `exclude` stay where they are); each
        removed session leaves the creation list at once."""
        nodes, lanes, mark, cfrontier = self._nodes, self._lanes, self._mark, self._creation.frontier
        now, max_idle_s, exclude, log, owners = batch.now, batch.max_idle_s, batch.exclude, batch.log, batch.owners
        report, swept, ended = log.detailed, log.swept.append, log.ended
        requeue: list[float] = []
        space, count, freed, lifetime, counted, idle = batch.room(), 0, 0, 0.0, 0, 0
        head = unset = object()  # the creation list's new head, once a removal moved it
        old_head: str | None = None  # the head this pass removed last (its successor's back link names it)
        for timeout in heap.due(is_due, lanes, nodes):
            requeue.append(timeout)
            lane = lanes[timeout]
            kept: str | None = None  # the last excluded session left in place before the current run
            sid = lane.first
            # The hot loop of every cleanup, kept to the fewest steps for the common case (a session that
            # is the creation list's head, counted by no one, without user or client): literal indexes
            # (see layout.Node), the rare cases in one branch each. Split into a per-lane and a
            # per-session helper (McCabe <= 10, 40 lines) it took 1.27x the time per removed session at
            # batches of 1000, 1.12x at 50 (best of 12 over 100k expired sessions).
            while sid is not None and count < space:
                node = nodes[sid]
                active = node[4]
                if now < active + timeout and (max_idle_s is None or now - active < max_idle_s):
                    break
                if exclude and sid in exclude:
                    self._lane_relink(lane, kept, sid)
                    kept = sid
                    sid = node[1]
                    continue
                del nodes[sid]
                cprev = node[2]
                if cprev is None or cprev == old_head:  # the creation list's head: its successor becomes
                    old_head, head, cprev = sid, node[3], None  # the head, its back link fixed after the loop
                else:
                    self._unlink_creation_middle(cprev, node[3])
                static = node[6]
                if max_idle_s is not None and now < active + timeout and now < static[5]:
                    idle += 1  # removed by the max age, not expired
                    if report:
                        ended += (sid, node, "idle")
                elif report:
                    swept(sid)  # two appends: the cheapest record of an expired session
                    swept(node)
                if node[5] == mark:  # counted: it may be a frontier
                    counted += 1
                    if sid == lane.frontier:
                        lane.frontier = kept
                    if sid == cfrontier:
                        cfrontier = self._creation.frontier = cprev
                if static[0] is not None or static[1] is not None:
                    owners.forget(sid, static)
                count += 1
                freed += static[8]
                lifetime += active - static[3]
                sid = node[1]
            self._lane_relink(lane, kept, sid)
            if lane.first is None:
                del lanes[timeout]
            if count >= space:
                break
        if head is not unset:
            self._creation.first = head  # type: ignore[assignment]
            if head is None:
                self._creation.last = None
            else:
                nodes[head] = with_cprev(nodes[head], None)  # type: ignore[index]
        self._bytes -= freed
        self._expired -= counted
        log.swept_pass(count, idle, lifetime, freed)
        batch.result.removed += count
        for timeout in requeue:
            self._requeue(timeout, heap)

    def _requeue(self, timeout: float, heap: LaneHeap) -> None:
        """Put a processed lane back into the heap it came from, keyed by its (new) head."""
        lane = self._lanes.get(timeout)
        if lane is not None:
            heap.set(timeout, self._nodes[lane.first][ACTIVE])  # type: ignore[index]

    def _absolute_pass(self, batch: _Batch) -> None:
        """Pop the sessions past their absolute deadline: a prefix of the creation list."""
        nodes, now, exclude, log, owners = self._nodes, batch.now, batch.exclude, batch.log, batch.owners
        space, count = batch.room(), 0
        kept: str | None = None
        sid = self._creation.first
        while sid is not None and count < space:
            node = nodes[sid]
            if now < node[STATIC][ABSOLUTE]:
                break
            if exclude and sid in exclude:
                self._creation_relink(kept, sid)
                kept = sid
            else:
                del nodes[sid]
                self._unlink_lane(sid, node)
                self._uncount(node)
                owners.forget(sid, node[STATIC])
                log.end(sid, node, "expired")
                if self._creation.frontier == sid:
                    self._creation.frontier = kept
                count += 1
            sid = node[CNEXT]
        self._creation_relink(kept, sid)
        batch.result.removed += count

    def count_expired(self, now: float) -> int:
        """Counts expired sessions by advancing one frontier per lane and one over the creation list:
        O(timeouts in use + newly expired), each session counted once (its MARK)."""
        if now < self._counted_at:  # time went backwards: count afresh
            self._mark += 1
            self._expired = 0
            self._creation.frontier = None
            for lane in self._lanes.values():
                lane.frontier = None
        self._counted_at = now
        nodes, mark = self._nodes, self._mark
        for timeout, lane in self._lanes.items():
            sid = lane.first if lane.frontier is None else nodes[lane.frontier][LNEXT]
            while sid is not None:
                node = nodes[sid]
                if now < node[ACTIVE] + timeout:
                    break
                self._count(sid, node, mark)
                lane.frontier = sid
                sid = node[LNEXT]
        sid = self._creation.first if self._creation.frontier is None else nodes[self._creation.frontier][CNEXT]
        while sid is not None:
            node = nodes[sid]
            if now < node[STATIC][ABSOLUTE]:
                break
            self._count(sid, node, mark)
            self._creation.frontier = sid
            sid = node[CNEXT]
        return self._expired

    def _count(self, sid: str, node: Node, mark: int) -> None:
        if node[MARK] != mark:
            self._nodes[sid] = (node[0], node[1], node[2], node[3], node[4], mark, node[6])
            self._expired += 1

    # -- checking -----------------------------------------------------------------------------------

    def lists(self) -> dict[str, list[str]]:
        """Every list in order, walked from its head with each back link checked: "lane <timeout>" for
        each lane and "created" for the creation list (AssertionError if a link is broken). A circle cannot
        be walked: the first session reached twice has a back link that names one of its two
        predecessors only."""
        found = {f"lane {timeout}": self._walk(lane, LPREV, LNEXT) for timeout, lane in self._lanes.items()}
        found["created"] = self._walk(self._creation, CPREV, CNEXT)
        return found

    def _walk(self, ends: Ends, back: int, forward: int) -> list[str]:
        nodes, ids, prev, sid = self._nodes, list[str](), None, ends.first
        while sid is not None:
            node: Any = nodes.get(sid)
            require(node is not None, "a list links to a session that is not stored")
            require(node[back] == prev, "a back link disagrees with the forward link")
            ids.append(sid)
            prev, sid = sid, node[forward]
        require(ends.last == prev, "a list's tail is wrong")
        return ids

    def check(self) -> None:
        """AssertionError naming the first broken invariant: the lists linked both ways; every session in
        the creation list and in exactly one lane, the lane of its timeout, in activity order; no empty
        lane; each frontier in its list; the byte total and the expired count exact."""
        nodes, found = self._nodes, self.lists()
        created = found.pop("created")
        require(sorted(created) == sorted(nodes), "the creation list and the index disagree")
        require(self._creation.frontier in (None, *created), "the creation list's frontier is not in it")
        in_lanes: list[str] = []
        for timeout, lane in self._lanes.items():
            ids = found[f"lane {timeout}"]
            require(bool(ids), "an empty lane was kept")
            actives = [nodes[sid][ACTIVE] for sid in ids]
            require(actives == sorted(actives), "a lane is out of activity order")
            require(all(nodes[sid][STATIC][TIMEOUT] == timeout for sid in ids), "a session is in another lane")
            require(lane.frontier in (None, *ids), "a lane's frontier is not in it")
            in_lanes += ids
        require(sorted(in_lanes) == sorted(nodes), "a session is in no lane or in two")
        require(self._bytes == sum(node[STATIC][COST] for node in nodes.values()), "the byte total is wrong")
        counted = sum(node[MARK] == self._mark for node in nodes.values())
        require(self._expired == counted, "the expired count is wrong")
