"""The embedded in-memory store: one process, every operation O(1), cleanup O(expired + timeouts in use).

The sessions live in `ExpiryLists` (faultmaven/stores/expiry.py: lanes per timeout, a creation list,
heaps over the lanes, no per-session object the garbage collector tracks); this module adds the
SessionStore calls, resume by client id and the memory budget. Nothing here awaits, so each call is
atomic on the event loop: the expiry re-check and the removal of a session can never be split by a
concurrent touch.
"""

from __future__ import annotations

from collections.abc import Sequence, Set

from faultmaven.exceptions import (
    SessionDataTooLargeError,
    SessionOverMemoryBudgetError,
    SessionStoreException,
    SessionStoreFullError,
    SessionVersionConflict,
)
from faultmaven.merge_patch import merge_blobs
from faultmaven.session import SessionRecord, new_session_id
from faultmaven.stores.base import BatchResult, StoreStats
from faultmaven.stores.expiry import (
    ACTIVE,
    BLOB,
    CLIENT,
    COST,
    META,
    STATIC,
    USER,
    VERSION,
    ExpiryLists,
    Static,
    _to_record,
)
from faultmaven.stores.sizing import pair_key, session_bytes

__all__ = ["MemoryStore", "session_bytes"]

_EVICT_BATCH = 64  # expired sessions removed per step while a write makes room


class MemoryStore(ExpiryLists):
    """In-process session store.

    With `max_bytes`, a write that would take the estimate over the budget first removes expired sessions;
    if it still does not fit, `policy` decides: "reject" refuses it (SessionStoreFullError, nothing else
    changed), so a flood of new sessions can never end live ones; "evict" ends the least recently active
    live sessions until it fits. A single session larger than the whole budget is refused either way.
    """

    def __init__(self, max_bytes: int | None = None, policy: str = "reject") -> None:
        super().__init__()
        if policy not in ("reject", "evict"):
            raise ValueError("policy must be 'reject' or 'evict'")
        self.max_bytes = max_bytes
        self.policy = policy

    # -- memory budget ----------------------------------------------------------------------------

    def _check_budget(self, cost: int) -> None:
        if self.max_bytes is not None and cost > self.max_bytes:
            raise SessionOverMemoryBudgetError(cost, self.max_bytes)

    def _evict_for(self, incoming: int, now: float, keep: str | None = None, freed_later: int = 0) -> None:
        """Make room for `incoming` more bytes: expired sessions first (a normal cleanup batch), then, under
        "evict", the least recently active (never the session `keep`). Under "reject", refuse if it still
        does not fit once `freed_later` bytes (sessions the caller is about to end) are gone."""
        if self.max_bytes is None or self._bytes + incoming <= self.max_bytes:
            return
        while self._bytes + incoming > self.max_bytes:  # `keep` was just touched: never expired here
            if not self._remove_due(now, None, _EVICT_BATCH, frozenset()).removed:
                break
        if self.policy == "reject":
            if self._bytes - freed_later + incoming > self.max_bytes:
                raise SessionStoreFullError("SESSION_MAX_MEMORY_MB reached (SESSION_MEMORY_POLICY=reject)")
            return
        while self._bytes + incoming > self.max_bytes:
            victim = self._least_recently_active(keep)
            if victim is None:
                break
            self._unlink(victim, "evicted")

    def _least_recently_active(self, keep: str | None) -> str | None:
        best: tuple[float, str] | None = None
        for lane in self._lanes.values():  # O(timeouts in use), and only when the budget is full
            sid = lane.first
            if sid is None or sid == keep:  # `keep` was just moved to its lane's tail: it heads it only alone
                continue
            active = self._index[sid][ACTIVE]
            if best is None or active < best[0]:
                best = (active, sid)
        return None if best is None else best[1]

    # -- SessionStore ------------------------------------------------------------------------------

    async def create(self, record: SessionRecord, now: float, max_per_user: int = 0) -> tuple[SessionRecord, bool]:
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
        over: list[str] = []
        if record.user_id is not None and max_per_user:
            over = self._over_user_limit(record.user_id, now, max_per_user)
        if self.policy == "reject":  # refused before anything changes: the user keeps every session
            self._evict_for(cost, now, freed_later=sum(self._index[old][STATIC][COST] for old in over))
        for old in reversed(over):
            self._unlink(old, "user_limit")
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
            record.version,
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
        self,
        session_id: str,
        blob: bytes,
        now: float,
        user_id: str | None = None,
        limit: int | None = None,
        *,
        merge: bool = False,
        if_version: int | None = None,
    ) -> SessionRecord | None:
        node = self._live(session_id, now, user_id)
        if node is None:
            return None
        old = node[STATIC]
        if if_version is not None and if_version != old[VERSION]:
            raise SessionVersionConflict(old[VERSION])
        if merge:
            blob = merge_blobs(old[BLOB], blob)
        if limit is not None and len(blob) + len(old[META]) > limit:
            raise SessionDataTooLargeError(len(blob) + len(old[META]), limit)
        cost = session_bytes(session_id, old[USER], blob, old[META], old[CLIENT])
        self._check_budget(cost)
        if self.policy == "reject":  # refused before the session changes (its own activity included)
            self._evict_for(cost - old[COST], now, keep=session_id)
        version = old[VERSION] + 1 if blob != old[BLOB] else old[VERSION]
        static: Static = (*old[:BLOB], blob, old[META], cost, version)
        self._move_to_tail(session_id, node, now, static)
        self._evict_for(cost - old[COST], now, keep=session_id)
        self._bytes += cost - old[COST]
        return _to_record(session_id, now, static)

    async def delete(self, session_id: str, now: float, user_id: str | None = None) -> bool | None:
        node = self._index.get(session_id)
        if node is None:
            return None
        owner = node[STATIC][USER]
        if user_id is not None and owner is not None and owner != user_id:
            return None
        was_live = self._live(session_id, now, None) is not None
        self._unlink(session_id, "deleted")
        return was_live

    def _over_user_limit(self, user_id: str, now: float, max_per_user: int) -> list[str]:
        """The user's live sessions to end (least recently active) so one more fits SESSION_MAX_PER_USER."""
        live = [sid for sid in self._user_ids(user_id) if self._live(sid, now, None) is not None]
        return live[max_per_user - 1 :]

    async def list_user(self, user_id: str, now: float, limit: int, offset: int) -> tuple[list[SessionRecord], int]:
        live = []
        for sid in self._user_ids(user_id):
            node = self._live(sid, now, None)
            if node is not None:
                live.append(_to_record(sid, node[ACTIVE], node[STATIC]))
        return live[offset : offset + limit], len(live)

    async def revoke_user(self, user_id: str, now: float) -> int:
        revoked = 0
        for sid in self._user_ids(user_id):
            live = self._live(sid, now, None) is not None
            self._unlink(sid, "revoked" if live else "expired")
            revoked += live
        return revoked

    async def rotate(
        self, session_id: str, new_id: str, now: float, user_id: str | None = None
    ) -> SessionRecord | None:
        node = self._live(session_id, now, user_id)
        if node is None:
            return None
        if new_id in self._index:
            raise SessionStoreException("session id already stored")
        node = self._rename(session_id, new_id)  # same place in every list: last activity is kept too
        return _to_record(new_id, node[ACTIVE], node[STATIC])

    def new_id(self, user_id: str | None, client_id: str | None, like: str | None = None) -> str:
        return new_session_id()

    def cleanup_parts(self) -> Sequence[int]:
        return (0,)  # one process, one part

    async def remove_idle(
        self, now: float, max_idle_s: float | None, limit: int, exclude: Set[str], part: int = 0
    ) -> BatchResult:
        """Remove up to `limit` expired sessions (and, with `max_idle_s`, those idle at least that long)."""
        return self._remove_due(now, max_idle_s, limit, exclude)

    def stats(self, now: float) -> StoreStats:
        return StoreStats(len(self._index), self._count_expired(now), self._bytes)

    async def refresh_stats(self, now: float) -> None:
        """Nothing to do: stats() counts in-process."""

    async def acquire_lease(self, ttl_s: float, part: int = 0) -> str | None:
        return "local"  # one process: nobody else to share the work with

    async def renew_lease(self, token: str, ttl_s: float) -> bool:
        return True

    async def release_lease(self, token: str) -> None:
        """Nothing held."""

    async def close(self) -> None:
        """Nothing to release: the sessions live as long as the process."""
