"""The one small protocol every session store implements.

Every method that reads or writes a session takes `now` and the idle limit, so the expiry rule
(`now - last_activity >= limit` means expired) is applied by the store atomically with the operation:
no read shows an expired session and no activity revives one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence, Set
from dataclasses import dataclass, field
from typing import Protocol

from faultmaven.session import SessionRecord


@dataclass(slots=True)
class BatchResult:
    """What one cleanup batch did."""

    removed: int = 0
    idle: int = 0  # of the removed, those a max-age run took before they expired
    lifetime_s: float = 0.0  # sum of last_activity - created_at over the removed sessions
    freed_bytes: int = 0
    failed: list[str] = field(default_factory=list)  # ids whose removal failed; the run skips them
    exhausted: bool = True  # no more idle sessions past this batch


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Counts a store keeps up to date, so reading them costs O(1) (amortised)."""

    stored: int | None
    expired: int | None
    memory_bytes: int | None
    age_s: float | None = 0.0  # how old the numbers may be (0 in-process; None: never read yet)

    @property
    def active(self) -> int | None:
        return None if self.stored is None or self.expired is None else self.stored - self.expired


@dataclass(frozen=True, slots=True)
class Ended:
    """A session removed by delete: whether it was still live, and how long it lasted."""

    was_live: bool
    lifetime_s: float


EvictionListener = Callable[[BatchResult], None]
# What a removal ended: session id, user id, client id, created_at, last activity, reason.
Ending = tuple[str, str | None, str | None, float, float, str]


class Endings(Protocol):
    """What take_ended() hands over: sized (empty means nothing to publish) and iterable once delivered."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Ending]: ...


class SessionStore(Protocol):
    """Storage for sessions with per-session idle timeouts and an absolute deadline.

    Every call that reads or writes a session takes `now` and applies the expiry rule (expired from
    `min(last_activity + timeout, absolute deadline)` on) atomically with what it does, so no read shows
    an expired session and no activity revives one. Where a call takes `user_id`, a session owned by
    another user is treated as absent (sessions without a user are visible to anyone).
    """

    report_ended: bool  # while True (someone listens), every removal is kept for take_ended()

    def take_ended(self) -> Endings:
        """What this process's calls removed since the last call, each with its reason (once each)."""

    async def create(self, record: SessionRecord, now: float, max_per_user: int = 0) -> tuple[SessionRecord, bool, int]:
        """Store `record`, or, if its (user, client) pair has a live session, record activity on that one
        and return it with True (resumed). One atomic step: concurrent creates of a pair make one session.
        With `max_per_user`, first end the user's least recently active live sessions (reason user_limit)
        until the new one fits; the third value says how many ended so."""

    async def list_user(self, user_id: str, now: float, limit: int, offset: int) -> tuple[list[SessionRecord], int]:
        """A page of the user's live sessions, most recently active first, and how many there are."""

    async def revoke_user(self, user_id: str, now: float) -> int:
        """Remove every session of the user (reason revoked; expired ones: expired); how many were live."""

    async def rotate(
        self, session_id: str, new_id: str, now: float, user_id: str | None = None
    ) -> SessionRecord | None:
        """Atomically give a live session `new_id`, everything else kept (its last activity too); the old
        id ends (reason rotated). None if not live or not the user's."""

    async def touch(self, session_id: str, now: float, user_id: str | None = None) -> SessionRecord | None:
        """Record activity at `now` and return the session, or None if unknown, expired or not the user's."""

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
        """Replace the data (with `merge`: apply `blob` to it as an RFC 7396 merge patch) and record activity,
        or return None if unknown, expired or not the user's. The data's version goes up by one if its
        encoded bytes changed. One atomic step, which changes nothing when it raises:
        SessionVersionConflict if `if_version` is given and is not the current version;
        SessionDataTooLargeError if the new data and the stored metadata together exceed `limit`."""

    async def delete(self, session_id: str, now: float, user_id: str | None = None) -> Ended | None:
        """Remove the session whatever its state; None if it was not stored (or not the user's)."""

    def new_id(self, user_id: str | None, client_id: str | None, like: str | None = None) -> str:
        """A fresh session id for a session of this user and client (or in the same place as `like`, for
        rotation): a sharded store puts the shard in it."""

    def cleanup_parts(self) -> Sequence[int]:
        """The parts a cleanup run visits one after the other, each under its own lease (a sharded store:
        its shards, in an order that spreads replicas over them)."""

    async def remove_idle(
        self, now: float, max_idle_s: float | None, limit: int, exclude: Set[str], part: int = 0
    ) -> BatchResult:
        """Remove up to `limit` sessions of `part` that are expired or, with `max_idle_s`, idle at least
        that long.

        The check and the removal are one atomic step per session. Ids in `exclude` (failures earlier in
        the same run) are passed over.
        """

    def listen_evictions(self, listener: EvictionListener) -> None:
        """Call `listener` with what was evicted whenever a write makes room under the memory budget."""

    def stats(self, now: float) -> StoreStats:
        """Session counts and memory estimate; cheap enough for every /health call. `age_s` None (and the
        counts None) until a store that reads them over I/O has read them once."""

    async def refresh_stats(self, now: float) -> None:
        """Bring what stats() serves up to date (a store that needs I/O serves a snapshot)."""

    async def acquire_lease(self, ttl_s: float, part: int = 0) -> str | None:
        """The cleanup lease of `part`: a token if this process may clean it now, else None."""

    async def renew_lease(self, token: str, ttl_s: float) -> bool:
        """Extend a held lease; False once it was lost (expired, or taken by another replica)."""

    async def release_lease(self, token: str) -> None: ...

    async def close(self) -> None: ...
