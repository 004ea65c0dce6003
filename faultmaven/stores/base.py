"""The one small protocol every session store implements.

Every method that reads or writes a session takes `now` and the idle limit, so the expiry rule
(`now - last_activity >= limit` means expired) is applied by the store atomically with the operation:
no read shows an expired session and no activity revives one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence, Set
from dataclasses import dataclass, field
from itertools import chain
from typing import Protocol, TypedDict, Unpack

from faultmaven.session import SessionRecord


@dataclass(slots=True)
class BatchResult:
    """How far one cleanup batch got (what it ended goes to the caller's `report`, like every removal)."""

    removed: int = 0
    failed: list[str] = field(default_factory=list)  # ids whose removal failed; the run skips them
    exhausted: bool = True  # no more idle sessions past this batch


class DataWrite(TypedDict, total=False):
    """How replace_data writes: `limit` on the data and metadata together (bytes), `merge` the new data
    into the stored one as an RFC 7396 patch, only `if_version` is still the current version."""

    limit: int | None
    merge: bool
    if_version: int | None


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


Ending = tuple[str, str | None, str | None, float, float, str]
"""One removed session as a store reports it: id, user id, client id, created_at, last activity, reason."""

REASONS = ("expired", "idle", "deleted", "revoked", "user_limit", "evicted", "rotated")


class Endings:
    """What a store call ended: the one way every removal is reported (to the `report` the caller gave).

    Always kept: how many sessions ended for each reason, their summed lifetime (last activity minus
    creation) and the bytes freed, so every counter and the average lifetime see every ending. Kept only
    while the store's `detailed_endings` is on (someone listens): each Ending, in order, possibly produced
    lazily by the store (`attach`), so a cleanup nobody listens to pays nothing per session for them.
    """

    __slots__ = ("_details", "counts", "freed_bytes", "lifetime_s")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.lifetime_s = 0.0
        self.freed_bytes = 0
        self._details: list[Iterable[Ending]] | None = None  # made on the first detail: most never get one

    def tally(self, reason: str, count: int, lifetime_s: float = 0.0, freed_bytes: int = 0) -> None:
        """`count` sessions ended for `reason` (their details, if kept, come through add() or attach())."""
        if count:
            self.counts[reason] = self.counts.get(reason, 0) + count
        self.lifetime_s += lifetime_s
        self.freed_bytes += freed_bytes

    def add(self, ending: Ending, *, detailed: bool, freed_bytes: int = 0) -> None:
        """One ending: tallied, and kept whole when `detailed`."""
        self.tally(ending[5], 1, ending[4] - ending[3], freed_bytes)
        if detailed:
            self.attach((ending,))

    def attach(self, details: Iterable[Ending]) -> None:
        """Details of endings already tallied, read only when someone iterates."""
        if self._details is None:
            self._details = [details]
        else:
            self._details.append(details)

    def absorb(self, other: Endings) -> None:
        """Add what `other` holds: its counts, and its details (read lazily, from `other`) if it has any."""
        for reason, count in other.counts.items():
            self.tally(reason, count)
        self.lifetime_s += other.lifetime_s
        self.freed_bytes += other.freed_bytes
        if other.has_details():
            self.attach(other)

    def has_details(self) -> bool:
        return self._details is not None

    def __len__(self) -> int:
        return sum(self.counts.values())

    def __iter__(self) -> Iterator[Ending]:
        return chain.from_iterable(self._details or ())


Report = Callable[[Endings], None]
"""Where a store call hands what it ended (see SessionOperations)."""


def drop(endings: Endings) -> None:
    """The report of a caller that does not want what a call ended."""


class SessionOperations(Protocol):
    """Storage for sessions with per-session idle timeouts and an absolute deadline.

    Every call that reads or writes a session takes `now` and applies the expiry rule (expired from
    `min(last_activity + timeout, absolute deadline)` on) atomically with what it does, so no read shows
    an expired session and no activity revives one. Where a call takes `user_id`, a session owned by
    another user is treated as absent (sessions without a user are visible to anyone).

    Every call that can end sessions takes `report`: what the call ended is handed to it, as one Endings
    (each ending once), before the call returns or raises, and only there; it is not called when nothing
    ended; the default, `drop`, discards them.
    """

    detailed_endings: bool  # while True (someone listens), each ending is kept whole, not only counted

    async def create(
        self, record: SessionRecord, now: float, max_per_user: int = 0, *, report: Report = drop
    ) -> tuple[SessionRecord, bool]:
        """Store `record`, or, if its (user, client) pair has a live session, record activity on that one
        and return it with True (resumed). One atomic step: concurrent creates of a pair make one session.
        With `max_per_user`, first end the user's least recently active live sessions (reason user_limit)
        until the new one fits."""

    async def list_user(self, user_id: str, now: float, limit: int, offset: int) -> tuple[list[SessionRecord], int]:
        """A page of the user's live sessions, most recently active first, and how many there are."""

    async def revoke_user(self, user_id: str, now: float, *, report: Report = drop) -> int:
        """Remove every session of the user (reason revoked; expired ones: expired); how many were live."""

    async def rotate(
        self, session_id: str, new_id: str, now: float, user_id: str | None = None, *, report: Report = drop
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
        *,
        report: Report = drop,
        **write: Unpack[DataWrite],
    ) -> SessionRecord | None:
        """Replace the data (with `merge`: apply `blob` to it as an RFC 7396 merge patch) and record activity,
        or return None if unknown, expired or not the user's. The data's version goes up by one if its
        encoded bytes changed. One atomic step, which changes nothing when it raises:
        SessionVersionConflict if `if_version` is given and is not the current version;
        SessionDataTooLargeError if the new data and the stored metadata together exceed `limit`.
        The options are those of DataWrite, all optional."""

    async def delete(
        self, session_id: str, now: float, user_id: str | None = None, *, report: Report = drop
    ) -> bool | None:
        """Remove the session whatever its state (reason deleted): whether it was still live; None if it was
        not stored (or not the user's)."""

    def new_id(self, user_id: str | None, client_id: str | None, like: str | None = None) -> str:
        """A fresh session id for a session of this user and client (or in the same place as `like`, for
        rotation): a sharded store puts the shard in it."""


class CleanupOperations(Protocol):
    """What a cleanup run needs of a store: its parts, a batch of removals (its endings handed to
    `report`, as SessionOperations' calls do) and the leases."""

    def cleanup_parts(self) -> Sequence[int]:
        """The parts a cleanup run visits one after the other, each under its own lease (a sharded store:
        its shards, in an order that spreads replicas over them)."""

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
        """Remove up to `limit` sessions of `part` that are expired or, with `max_idle_s`, idle at least
        that long.

        The check and the removal are one atomic step per session. Ids in `exclude` (failures earlier in
        the same run) are passed over.
        """

    async def acquire_lease(self, ttl_s: float, part: int = 0) -> str | None:
        """The cleanup lease of `part`: a token if this process may clean it now, else None."""

    async def renew_lease(self, token: str, ttl_s: float) -> bool:
        """Extend a held lease; False once it was lost (expired, or taken by another replica)."""

    async def release_lease(self, token: str) -> None: ...


class StoreMetrics(Protocol):
    """What the stats and the memory pressure need of a store: counts, and its own memory limits."""

    @property
    def budget_from_settings(self) -> bool:
        """Whether SESSION_MAX_MEMORY_MB bounds this store (in memory: always; Redis: only when set)."""

    def stats(self, now: float) -> StoreStats:
        """Session counts and memory estimate; cheap enough for every /health call. `age_s` None (and the
        counts None) until a store that reads them over I/O has read them once."""

    async def refresh_stats(self, now: float) -> None:
        """Bring what stats() serves up to date (a store that needs I/O serves a snapshot)."""

    def memory_reasons(self) -> list[str]:
        """Why the store's own memory limits are pressing, for /health ([] when nothing is)."""


class SessionStore(SessionOperations, CleanupOperations, StoreMetrics, Protocol):
    """A whole store, as the manager takes it: sessions, cleanup and metrics, and closing it."""

    async def close(self) -> None: ...
