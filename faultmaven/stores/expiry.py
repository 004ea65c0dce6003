"""The data structure behind the in-memory store: sessions in expiry order without a per-session object.

Each session has its own idle timeout and an absolute deadline, so the expired sessions are not a prefix
of one activity-ordered list. They are a prefix of one of these lists, kept here:
- one *lane* per distinct timeout: the sessions with that timeout in order of last activity (activity
  moves a session to its lane's tail), so a lane's idle-expired sessions are a prefix of it;
- the *creation list*: every session in order of creation, so with one absolute lifetime the sessions
  past their absolute deadline are a prefix of it.
A cleanup batch finds the lanes whose head is due through two small heaps over lanes (keyed by the head's
idle deadline, and by the head's last activity for a max-age run), pops each due prefix, and pops the
due prefix of the creation list. A heap entry is a lower bound of its lane head's key (a head only ever
gets later), validated lazily when popped, so activity never touches a heap.

All lists live in one dict, id -> tuple, whose tuples link to their neighbours by id; a session's fields
that change only on update sit in an inner tuple shared between versions. Tuples of strings, numbers and
bytes are untracked by Python's cyclic garbage collector, and so is a dict holding only them: a million
sessions add no work to a full collection. Per-lane bookkeeping (objects, heap entries) grows with the
number of distinct timeouts, never with the number of sessions.

The expired count advances one frontier per lane and one over the creation list and marks each session
it counts (MARK), so each is counted once: O(timeouts in use + newly expired) per read.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator, Set
from typing import Any, Final, TypeAlias

from faultmaven.session import SessionRecord
from faultmaven.stores.base import BatchResult, Ending, Endings
from faultmaven.stores.sizing import pair_key

# user id, client id, session type, created_at, timeout (s), absolute deadline, data, metadata, cost, version
Static: TypeAlias = tuple[str | None, str | None, str, float, float, float, bytes, bytes, int, int]
USER: Final = 0
CLIENT: Final = 1
TYPE: Final = 2
CREATED: Final = 3
TIMEOUT: Final = 4
ABSOLUTE: Final = 5
BLOB: Final = 6
META: Final = 7
COST: Final = 8
VERSION: Final = 9
# lane prev, lane next, creation prev, creation next, last activity, counted mark, static fields
Node: TypeAlias = tuple[str | None, str | None, str | None, str | None, float, int, Static]
LPREV: Final = 0
LNEXT: Final = 1
CPREV: Final = 2
CNEXT: Final = 3
ACTIVE: Final = 4
MARK: Final = 5
STATIC: Final = 6
# A user's session also has (user prev, user next) in a dict of its own, so that sessions without a user
# (and the cleanup's hot loop) carry no user links at all.
UserLinks: TypeAlias = tuple[str | None, str | None]
_Due: TypeAlias = Callable[[float], bool]  # is a heap key (deadline or last activity) due now?


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


class _UserList:
    """One user's sessions in activity order (most recent last)."""

    __slots__ = ("first", "last")

    def __init__(self, sid: str) -> None:
        self.first: str | None = sid
        self.last: str | None = sid


class _NodeDetails:
    """Endings' details as the store kept them, flat: (id, removed node, reason) each, then (id, node) each
    for the expired sessions a cleanup swept. A cleanup pays two appends per removed session (a tuple per
    ending cost it 10-20% more); the fields are read from each node only when the events are delivered."""

    __slots__ = ("_flat", "_swept")

    def __init__(self, flat: list[Any], swept: list[Any]) -> None:
        self._flat, self._swept = flat, swept

    def __iter__(self) -> Iterator[Ending]:
        flat, swept = self._flat, self._swept
        for i in range(0, len(flat), 3):
            yield _ending(flat[i], flat[i + 1], flat[i + 2])
        for i in range(0, len(swept), 2):
            yield _ending(swept[i], swept[i + 1], "expired")


def _ending(sid: str, node: Node, reason: str) -> Ending:
    static = node[STATIC]
    return sid, static[USER], static[CLIENT], static[CREATED], node[ACTIVE], reason


class ExpiryLists:
    """Sessions in one dict, linked into lanes and the creation list; counts kept exact on every change.

    Nothing here awaits, so each call is atomic on the event loop. Callers pass a non-decreasing `now`.
    """

    def __init__(self) -> None:
        self._index: dict[str, Node] = {}
        self._pairs: dict[str, str] = {}  # resume key -> session id
        self._lanes: dict[float, _Lane] = {}
        self._users: dict[str, _UserList] = {}
        self._ulinks: dict[str, UserLinks] = {}  # (user prev, user next) of each session that has a user
        self._deadlines: list[tuple[float, float]] = []  # (lane head's idle deadline, timeout): a heap
        self._activity: list[tuple[float, float]] = []  # (lane head's last activity, timeout): a heap
        self._cfirst: str | None = None  # oldest session
        self._clast: str | None = None
        self._cfrontier: str | None = None  # last session counted past its absolute deadline
        self._bytes = 0
        self._expired = 0
        self._mark = 1  # sessions whose MARK equals this are counted in _expired
        self._counted_at = float("-inf")
        self.detailed_endings = False  # keep each ending whole, for session-end events
        self._endings = Endings()
        self._ended: list[Any] = []  # flat: id, node, reason per removal (see _NodeDetails)
        self._swept: list[Any] = []  # flat: id, node per expired session a cleanup removed

    def take_endings(self) -> Endings:
        """What was removed since the last call, counted, and with details while `detailed_endings`."""
        endings, self._endings = self._endings, Endings()
        if self._ended or self._swept:
            endings.attach(_NodeDetails(self._ended, self._swept))
            self._ended, self._swept = [], []
        return endings

    def __len__(self) -> int:
        return len(self._index)

    # -- linking ------------------------------------------------------------------------------------

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

    def _user_relink(self, users: _UserList, prev: str | None, nxt: str | None) -> None:
        links = self._ulinks
        if prev is None:
            users.first = nxt
        else:
            links[prev] = (links[prev][0], nxt)
        if nxt is None:
            users.last = prev
        else:
            links[nxt] = (prev, links[nxt][1])

    def _append(self, sid: str, active: float, static: Static) -> None:
        """A new session: the tail of its lane, of the creation list and of its user's list."""
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
        if static[USER] is not None:
            self._ulinks[sid] = (self._user_append(sid, static[USER]), None)
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

    def _user_append(self, sid: str, user: str) -> str | None:
        """Link `sid` after its user's last session (the caller writes its links); returns that session."""
        users = self._users.get(user)
        if users is None:
            self._users[user] = _UserList(sid)
            return None
        prev = users.last
        self._ulinks[prev] = (self._ulinks[prev][0], sid)  # type: ignore[index]
        users.last = sid
        return prev

    def _move_to_tail(self, sid: str, node: Node, now: float, static: Static) -> None:
        """Record activity at `now` (and new data): the most recently active of its lane and of its user."""
        index = self._index
        lane = self._lanes[static[TIMEOUT]]
        if sid != lane.last:
            self._lane_relink(lane, node[LPREV], node[LNEXT])
            index[lane.last] = _lnext(index[lane.last], sid)  # type: ignore[index]
        lprev = lane.last if sid != lane.last else node[LPREV]
        lane.last = sid
        user = static[USER]
        if user is not None:
            users = self._users[user]
            if sid != users.last:
                links = self._ulinks
                self._user_relink(users, *links[sid])
                links[users.last] = (links[users.last][0], sid)  # type: ignore[index]
                links[sid] = (users.last, None)
                users.last = sid
        index[sid] = (lprev, None, node[2], node[3], now, node[MARK], static)

    def _unlink(self, sid: str, reason: str) -> Node:
        """Take one session out of the index and every list; returns its node."""
        node = self._index.pop(sid)
        self._unlink_lane(sid, node)
        self._unlink_creation(sid, node)
        self._unlink_user(sid, node)
        self._drop(sid, node, reason)
        return node

    def _unlink_user(self, sid: str, node: Node) -> None:
        user = node[STATIC][USER]
        if user is None:
            return
        users = self._users[user]
        self._user_relink(users, *self._ulinks.pop(sid))
        if users.first is None:
            del self._users[user]

    def _unlink_lane(self, sid: str, node: Node) -> None:
        """Out of its lane (already out of the index): neighbours relinked, the frontier moved back."""
        timeout = node[STATIC][TIMEOUT]
        lane = self._lanes[timeout]
        if lane.frontier == sid:
            lane.frontier = node[LPREV]
        self._lane_relink(lane, node[LPREV], node[LNEXT])
        if lane.first is None:
            del self._lanes[timeout]

    def _unlink_creation_middle(self, prev: str, nxt: str | None) -> None:
        """Out of the creation list, a session that is not its head (`prev` is stored)."""
        index = self._index
        index[prev] = _cnext(index[prev], nxt)
        if nxt is None:
            self._clast = prev
        else:
            index[nxt] = _cprev(index[nxt], prev)

    def _forget_owner(self, sid: str, node: Node) -> None:
        """Out of its user's list, and its resume pair gone (a session just taken out of the index)."""
        self._unlink_user(sid, node)
        self._drop_pair(sid, node[STATIC])

    def _drop_pair(self, sid: str, static: Static) -> None:
        if static[CLIENT] is not None:
            key = pair_key(static[USER], static[CLIENT])
            if self._pairs.get(key) == sid:
                del self._pairs[key]

    def _unlink_creation(self, sid: str, node: Node) -> None:
        prev = node[CPREV]
        if self._cfrontier == sid:
            self._cfrontier = prev
        self._creation_relink(prev, node[CNEXT])

    def _drop(self, sid: str, node: Node, reason: str) -> None:
        """The counts, the resume pair and the ending of a session just taken out (not its user's list)."""
        static = node[STATIC]
        self._endings.tally(reason, 1, node[ACTIVE] - static[CREATED], static[COST])
        if self.detailed_endings:
            self._ended += (sid, node, reason)
        self._bytes -= static[COST]
        if node[MARK] == self._mark:
            self._expired -= 1
        self._drop_pair(sid, static)

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

    def _remove_due(self, now: float, max_idle_s: float | None, limit: int, exclude: Set[str]) -> BatchResult:
        """One batch: the due prefix of each due lane, then of the creation list; one relink per pass."""
        result = BatchResult()

        def room() -> int:
            return limit - result.removed

        self._lanes_pass(self._deadlines, lambda key: now >= key, True, now, max_idle_s, room, exclude, result)
        if max_idle_s is not None and room() > 0:
            is_idle: _Due = lambda key: now - key >= max_idle_s  # noqa: E731
            self._lanes_pass(self._activity, is_idle, False, now, max_idle_s, room, exclude, result)
        if room() > 0:
            self._absolute_pass(now, room, exclude, result)
        # A batch with room left ran every pass to its end: nothing is due but what it was told to leave.
        result.exhausted = room() > 0 and not exclude
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
        """Pop the due prefix of every lane the heap says is due (or until the batch is full). A lane is
        relinked once per run of removed sessions (sessions in `exclude` stay where they are); each
        removed session leaves the creation list at once."""
        index, lanes, mark, cfrontier = self._index, self._lanes, self._mark, self._cfrontier
        report, swept = self.detailed_endings, self._swept.append
        requeue: list[float] = []
        space, count, freed, lifetime, counted, idle = room(), 0, 0, 0.0, 0, 0
        head = unset = object()  # the creation list's new head, once a removal moved it
        old_head: str | None = None  # the head this pass removed last (its successor's back link names it)
        for timeout in self._due_lanes(heap, is_due, deadline_heap):
            requeue.append(timeout)
            lane = lanes[timeout]
            kept: str | None = None  # the last excluded session left in place before the current run
            sid = lane.first
            # The hot loop of every cleanup, kept to the fewest steps for the common case (a session that
            # is the creation list's head, counted by no one, without user or client): literal indexes
            # (see Node), the rare cases in one branch each.
            while sid is not None and count < space:
                node = index[sid]
                active = node[4]
                if now < active + timeout and (max_idle_s is None or now - active < max_idle_s):
                    break
                if exclude and sid in exclude:
                    self._lane_relink(lane, kept, sid)
                    kept = sid
                    sid = node[1]
                    continue
                del index[sid]
                cprev = node[2]
                if cprev is None or cprev == old_head:  # the creation list's head: its successor becomes
                    old_head, head, cprev = sid, node[3], None  # the head, its back link fixed after the loop
                else:
                    self._unlink_creation_middle(cprev, node[3])
                static = node[6]
                if max_idle_s is not None and now < active + timeout and now < static[5]:
                    idle += 1  # removed by the max age, not expired
                    if report:
                        self._ended += (sid, node, "idle")
                elif report:
                    swept(sid)  # two appends: the cheapest record of an expired session
                    swept(node)
                if node[5] == mark:  # counted: it may be a frontier
                    counted += 1
                    if sid == lane.frontier:
                        lane.frontier = kept
                    if sid == cfrontier:
                        cfrontier = self._cfrontier = cprev
                if static[0] is not None or static[1] is not None:
                    self._forget_owner(sid, node)
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
            self._cfirst = head  # type: ignore[assignment]
            if head is None:
                self._clast = None
            else:
                index[head] = _cprev(index[head], None)  # type: ignore[index]
        self._bytes -= freed
        self._expired -= counted
        self._endings.tally("idle", idle)
        self._endings.tally("expired", count - idle, lifetime, freed)
        result.removed += count
        for timeout in requeue:
            self._requeue(timeout, deadline_heap)

    def _absolute_pass(self, now: float, room: Callable[[], int], exclude: Set[str], result: BatchResult) -> None:
        """Pop the sessions past their absolute deadline: a prefix of the creation list."""
        index = self._index
        space, count = room(), 0
        kept: str | None = None
        sid = self._cfirst
        while sid is not None and count < space:
            node = index[sid]
            if now < node[STATIC][ABSOLUTE]:
                break
            if exclude and sid in exclude:
                self._creation_relink(kept, sid)
                kept = sid
            else:
                del index[sid]
                self._unlink_lane(sid, node)
                self._unlink_user(sid, node)
                self._drop(sid, node, "expired")
                if self._cfrontier == sid:
                    self._cfrontier = kept
                count += 1
            sid = node[CNEXT]
        self._creation_relink(kept, sid)
        result.removed += count

    # -- a user's sessions --------------------------------------------------------------------------

    def _user_ids(self, user_id: str) -> list[str]:
        """The user's stored sessions, most recently active first: O(the user's sessions)."""
        users = self._users.get(user_id)
        ids, sid = [], users.last if users is not None else None
        while sid is not None:
            ids.append(sid)
            sid = self._ulinks[sid][0]
        return ids

    def _rename(self, sid: str, new_id: str) -> Node:
        """Give a session a new id in place: same position in every list, every link and pointer moved."""
        index = self._index
        node = index.pop(sid)
        index[new_id] = node
        static = node[STATIC]
        lane = self._lanes[static[TIMEOUT]]
        self._lane_relink(lane, node[LPREV], new_id)
        self._lane_relink(lane, new_id, node[LNEXT])
        self._creation_relink(node[CPREV], new_id)
        self._creation_relink(new_id, node[CNEXT])
        if static[USER] is not None:
            users = self._users[static[USER]]
            links = self._ulinks[new_id] = self._ulinks.pop(sid)
            self._user_relink(users, links[0], new_id)
            self._user_relink(users, new_id, links[1])
        if lane.frontier == sid:
            lane.frontier = new_id
        if self._cfrontier == sid:
            self._cfrontier = new_id
        if static[CLIENT] is not None:
            key = pair_key(static[USER], static[CLIENT])
            if self._pairs.get(key) == sid:
                self._pairs[key] = new_id
        self._endings.tally("rotated", 1, node[ACTIVE] - static[CREATED])
        if self.detailed_endings:
            self._ended += (sid, node, "rotated")
        return index[new_id]

    def _count_expired(self, now: float) -> int:
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
        return self._expired

    def _count(self, sid: str, node: Node, mark: int) -> None:
        if node[MARK] != mark:
            self._index[sid] = (node[0], node[1], node[2], node[3], node[4], mark, node[6])
            self._expired += 1


def _to_record(sid: str, active: float, s: Static) -> SessionRecord:
    return SessionRecord(
        sid, s[USER], s[CLIENT], s[TYPE], s[CREATED], active, s[TIMEOUT], s[ABSOLUTE], s[BLOB], s[META], s[VERSION]
    )
