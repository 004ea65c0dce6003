"""The embedded in-memory store: one process, every operation O(1), cleanup O(expired + timeouts in use).

The store composes what it keeps, each part owning its own state:
- ExpiryIndex (index.py): the sessions, their lanes per timeout, the creation list, the heaps over the
  lanes, the expired count and the byte total; no per-session object the garbage collector tracks;
- SessionOwners (owners.py): each user's sessions and the resume pairs (user, client) -> session;
- MemoryBudget (budget.py): SESSION_MAX_MEMORY_MB and its policy;
- EndingsLog (endings.py): what the current call ended, handed to the caller's report as it returns.
- OneProcess (local.py): the cleanup and metrics members a store nobody shares answers trivially.
Nothing here awaits, so each call is atomic on the event loop: the expiry re-check and the removal of a
session can never be split by a concurrent touch.
"""

from __future__ import annotations

from collections.abc import Set
from typing import ClassVar, Unpack

from faultmaven.exceptions import SessionDataTooLargeError, SessionStoreException, SessionVersionConflict
from faultmaven.merge_patch import merge_blobs
from faultmaven.session import SessionRecord, new_session_id
from faultmaven.stores.base import BatchResult, DataWrite, Report, StoreStats, drop
from faultmaven.stores.memory.budget import MemoryBudget
from faultmaven.stores.memory.endings import EndingsLog
from faultmaven.stores.memory.index import ExpiryIndex
from faultmaven.stores.memory.layout import (
    ACTIVE,
    BLOB,
    CLIENT,
    COST,
    META,
    STATIC,
    USER,
    VERSION,
    Node,
    Static,
    to_record,
)
from faultmaven.stores.memory.local import OneProcess
from faultmaven.stores.memory.owners import SessionOwners
from faultmaven.stores.sizing import session_bytes

__all__ = ["MemoryStore", "session_bytes"]

_EVICT_BATCH = 64  # expired sessions removed per step while a write makes room


class MemoryStore(OneProcess):
    """In-process session store. With `max_bytes`, a write that would take the estimate over the budget
    first removes expired sessions; if it still does not fit, `policy` decides: "reject" refuses it
    (SessionStoreFullError, nothing else changed), so a flood of new sessions can never end live ones;
    "evict" ends the least recently active live sessions until it fits. A single session larger than the
    whole budget is refused either way."""

    index_type: ClassVar[type[ExpiryIndex]] = ExpiryIndex  # the parts' classes: fault-injecting tests
    owners_type: ClassVar[type[SessionOwners]] = SessionOwners  # subclass them

    def __init__(self, max_bytes: int | None = None, policy: str = "reject") -> None:
        self.budget = MemoryBudget(max_bytes, policy)
        self.index = self.index_type()
        self.owners = self.owners_type()
        self.log = EndingsLog()

    @property
    def detailed_endings(self) -> bool:
        """While True (someone listens), each ending is kept whole, not only counted."""
        return self.log.detailed

    @detailed_endings.setter
    def detailed_endings(self, value: bool) -> None:
        self.log.detailed = value

    def __len__(self) -> int:
        return len(self.index)

    def load(self, ids: list[str], actives: list[float], statics: list[Static]) -> None:
        """Fill this empty store with sessions given by position: ids, last activities, fields (a snapshot
        read back). Those last active at the same instant keep the order they are given in, in every
        list. ValueError, the store left empty, if an id appears twice."""
        order = self.index.load(ids, actives, statics)
        self.owners.load(ids, statics, order)

    def check(self) -> None:
        """AssertionError naming the first broken invariant of the index, the user lists or the pairs."""
        self.index.check()
        self.owners.check(self.index.frozen())

    # -- parts working together ---------------------------------------------------------------------

    def _end(self, sid: str, reason: str) -> None:
        """Remove one session from every part, and log its ending."""
        node = self.index.unlink(sid)
        self.owners.forget(sid, node[STATIC])
        self.log.end(sid, node, reason)

    def _activity(self, sid: str, node: Node, now: float, static: Static) -> None:
        """Activity at `now` (with new data: `static` of its new cost), in the index and the user's list."""
        self.index.update(sid, node, now, static)
        if static[USER] is not None:
            self.owners.users.move_to_tail(sid, static[USER])

    def _remove_due(self, now: float, max_idle_s: float | None, limit: int, exclude: Set[str]) -> BatchResult:
        return self.index.remove_due(now, max_idle_s, limit, exclude, self.log, self.owners)

    def _make_room(self, incoming: int, now: float, keep: str | None = None, freed_later: int = 0) -> None:
        """Make room for `incoming` more bytes: expired sessions first (a normal cleanup batch), then, under
        "evict", the least recently active (never the session `keep`). Under "reject", refuse if it still
        does not fit once `freed_later` bytes (sessions the caller is about to end) are gone."""
        budget, index = self.budget, self.index
        while budget.over(index.bytes, incoming):  # `keep` was just touched: never expired here
            if not self._remove_due(now, None, _EVICT_BATCH, frozenset()).removed:
                break
        budget.refuse_if_over(index.bytes - freed_later, incoming)
        while budget.evicts and budget.over(index.bytes, incoming):
            victim = index.least_recently_active(keep)
            if victim is None:
                break
            self._end(victim, "evicted")

    def _resume(self, user_id: str | None, client_id: str, now: float) -> SessionRecord | None:
        """The live session of the (user, client) pair, its activity recorded; None if there is none."""
        existing = self.owners.pairs.get(user_id, client_id)
        node = None if existing is None else self.index.live(existing, now, None)
        if existing is None or node is None:
            return None
        self._activity(existing, node, now, node[STATIC])
        return to_record(existing, now, node[STATIC])

    def _over_user_limit(self, user_id: str, now: float, max_per_user: int) -> list[str]:
        """The user's live sessions to end (least recently active) so one more fits SESSION_MAX_PER_USER."""
        live = [sid for sid in self.owners.users.ids(user_id) if self.index.live(sid, now, None) is not None]
        return live[max_per_user - 1 :]

    # -- SessionStore ------------------------------------------------------------------------------

    async def create(
        self, record: SessionRecord, now: float, max_per_user: int = 0, *, report: Report = drop
    ) -> tuple[SessionRecord, bool]:
        with self.log.to(report):
            if record.client_id is not None:
                resumed = self._resume(record.user_id, record.client_id, now)
                if resumed is not None:
                    return resumed, True
            sid = record.session_id
            if sid in self.index:
                raise SessionStoreException("session id already stored")
            cost = session_bytes(sid, record.user_id, record.blob, record.meta, record.client_id)
            self.budget.check(cost)
            over: list[str] = []
            if record.user_id is not None and max_per_user:
                over = self._over_user_limit(record.user_id, now, max_per_user)
            if not self.budget.evicts:  # refused before anything changes: the user keeps every session
                freed = sum(node[STATIC][COST] for node in map(self.index.get, over) if node is not None)
                self._make_room(cost, now, freed_later=freed)
            for old in reversed(over):
                self._end(old, "user_limit")
            self._make_room(cost, now)
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
                record.version,
            )
            self.index.append(sid, record.last_activity, static)
            self.owners.add(sid, static)
            return record, False

    async def touch(self, session_id: str, now: float, user_id: str | None = None) -> SessionRecord | None:
        index = self.index
        node = index.live(session_id, now, user_id)
        if node is None:
            return None
        static = node[STATIC]
        index.move_to_tail(session_id, node, now, static)
        if static[USER] is not None:
            self.owners.users.move_to_tail(session_id, static[USER])
        return to_record(session_id, now, static)

    async def replace_data(
        self,
        session_id: str,
        blob: bytes,
        now: float,
        user_id: str | None = None,
        *,
        report: Report = drop,
        **write: Unpack[DataWrite],
    ) -> SessionRecord | None:
        with self.log.to(report):
            node = self.index.live(session_id, now, user_id)
            if node is None:
                return None
            old = node[STATIC]
            if_version, limit = write.get("if_version"), write.get("limit")
            if if_version is not None and if_version != old[VERSION]:
                raise SessionVersionConflict(old[VERSION])
            if write.get("merge"):
                blob = merge_blobs(old[BLOB], blob)
            if limit is not None and len(blob) + len(old[META]) > limit:
                raise SessionDataTooLargeError(len(blob) + len(old[META]), limit)
            cost = session_bytes(session_id, old[USER], blob, old[META], old[CLIENT])
            self.budget.check(cost)
            if not self.budget.evicts:  # refused before the session changes (its own activity included)
                self._make_room(cost - old[COST], now, keep=session_id)
            version = old[VERSION] + 1 if blob != old[BLOB] else old[VERSION]
            static: Static = (*old[:BLOB], blob, old[META], cost, version)
            self._activity(session_id, node, now, static)  # the byte total now holds the new cost
            self._make_room(0, now, keep=session_id)
            return to_record(session_id, now, static)

    async def delete(
        self, session_id: str, now: float, user_id: str | None = None, *, report: Report = drop
    ) -> bool | None:
        node = self.index.get(session_id)
        if node is None:
            return None
        owner = node[STATIC][USER]
        if user_id is not None and owner is not None and owner != user_id:
            return None
        was_live = self.index.live(session_id, now, None) is not None
        with self.log.to(report):
            self._end(session_id, "deleted")
        return was_live

    async def list_user(self, user_id: str, now: float, limit: int, offset: int) -> tuple[list[SessionRecord], int]:
        live = []
        for sid in self.owners.users.ids(user_id):
            node = self.index.live(sid, now, None)
            if node is not None:
                live.append(to_record(sid, node[ACTIVE], node[STATIC]))
        return live[offset : offset + limit], len(live)

    async def revoke_user(self, user_id: str, now: float, *, report: Report = drop) -> int:
        revoked = 0
        with self.log.to(report):
            for sid in self.owners.users.ids(user_id):
                live = self.index.live(sid, now, None) is not None
                self._end(sid, "revoked" if live else "expired")
                revoked += live
        return revoked

    async def rotate(
        self, session_id: str, new_id: str, now: float, user_id: str | None = None, *, report: Report = drop
    ) -> SessionRecord | None:
        node = self.index.live(session_id, now, user_id)
        if node is None:
            return None
        if new_id in self.index:
            raise SessionStoreException("session id already stored")
        node = self.index.rename(session_id, new_id)  # same place in every list: last activity is kept too
        self.owners.rename(session_id, new_id, node[STATIC])
        with self.log.to(report):
            self.log.rotated(session_id, node)
        return to_record(new_id, node[ACTIVE], node[STATIC])

    def new_id(self, user_id: str | None, client_id: str | None, like: str | None = None) -> str:
        return new_session_id()

    async def remove_idle(
        self,
        now: float,
        max_idle_s: float | None,
        limit: int,
        exclude: Set[str],
        part: int = 0,
        *,
        report: Report = drop,
    ) -> BatchResult:
        """Remove up to `limit` expired sessions (and, with `max_idle_s`, those idle at least that long)."""
        with self.log.to(report):
            return self._remove_due(now, max_idle_s, limit, exclude)

    def stats(self, now: float) -> StoreStats:
        return StoreStats(len(self.index), self.index.count_expired(now), self.index.bytes)
