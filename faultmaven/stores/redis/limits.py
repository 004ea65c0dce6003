"""The Redis store's memory limits under policy "reject": which creates it refuses, from what it last read.

A create is refused (SessionStoreFullError) while the master that would hold it is within the reserve of
its maxmemory (info.py says why), or while the stored session bytes reach SESSION_MAX_MEMORY_MB
when that is set. The verdict reads snapshots: each master's INFO memory and which master holds each
shard, plus what this process's creates sent since may add (reserve.py: in flight included, in
Redis' own bytes), so a create far from the limit costs no round trip and no burst can pass the reserve
between two readings. A create the ledger would refuse waits for one fresh reading first, so a stale
reading refuses nothing that fits. At the limit, a create that would resume its pair's live session
still does: that only records activity. The readings' ages are read from an injected monotonic clock
(time.monotonic by default), so tests age them without waiting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as rx
from redis.asyncio.cluster import RedisCluster

from faultmaven.exceptions import SessionStoreException, SessionStoreFullError
from faultmaven.session import SessionRecord
from faultmaven.stores.redis.errors import translated
from faultmaven.stores.redis.info import MAX_AGE_S, NEAR_MAX_AGE_S, SAFE_POLICY, MasterMemory, memory_reasons
from faultmaven.stores.redis.keys import Shard, connections_per_node
from faultmaven.stores.redis.reserve import Hold, Reserve
from faultmaven.stores.redis.stats import StatsSnapshot

log = logging.getLogger("faultmaven.sessions")

Touch = Callable[[str, float, str | None], Awaitable[SessionRecord | None]]


class MemoryLimits:
    """The refusal of creates that do not fit, and the INFO memory snapshot behind it."""

    def __init__(
        self,
        client: aioredis.Redis | RedisCluster,
        shards: Sequence[Shard],
        stats: StatsSnapshot,
        *,
        policy: str,
        reserve: float,
        max_bytes: int | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`policy` "reject" refuses as the module says; "evict" leaves the limits to Redis. `clock`
        (seconds, monotonic) times the INFO readings, so it decides when the next one is due."""
        self._client = client
        self._shards = shards
        self._stats = stats
        self.policy = policy
        self.reserve = reserve
        self.max_bytes = max_bytes
        # Each master's INFO memory, the master of each shard, and what was sent since (the ledger).
        self._masters: dict[str, MasterMemory] = {}
        self._shard_master: list[str] = []
        self.ledger = Reserve(connections_per_node())
        self._clock = clock
        self._memory_at: float | None = None  # the clock at the last INFO reading (or failed attempt)
        self._memory_refresh: asyncio.Task[None] | None = None
        self._warned_policies: set[str] = set()
        self._info_warned = False
        self._refusing: set[str] = set()  # masters that refused a create since the last reading

    def _master_of(self, shard: int) -> str:
        return self._shard_master[shard] if shard < len(self._shard_master) else ""

    def refusal(self, shard: int, hold: Hold | None = None) -> str | None:
        """Why a create (`hold`, None for no new session) in `shard` must be refused now; None: room."""
        incoming, estimate = (0, 0) if hold is None else (hold.cost + hold.transient, hold.estimate)
        stored = self._stats.stored_bytes
        over = stored is not None and stored + self.ledger.pending_estimate() + estimate > (self.max_bytes or 0)
        if self.max_bytes is not None and over:
            return "SESSION_MAX_MEMORY_MB reached (SESSION_MEMORY_POLICY=reject)"
        name = self._master_of(shard)
        master = self._masters.get(name)
        if master is not None and master.full(self.reserve, self.ledger.pending(name) + incoming):
            return "redis used_memory within SESSION_REDIS_MEMORY_RESERVE of maxmemory"
        return None

    def _read(self, now: float) -> Coroutine[Any, Any, None]:
        # With SESSION_MAX_MEMORY_MB the stored bytes are read too (with the memory, see StatsSnapshot).
        return self.refresh_quietly() if self.max_bytes is None else self._stats.refresh_quietly(now)

    def _schedule_refresh(self, shard: int, now: float) -> asyncio.Task[None] | None:
        """Keep the memory snapshot fresh from the create path without waiting for it: at most once a
        MAX_AGE_S, or once a NEAR_MAX_AGE_S while the shard's master is near or in its reserve. The
        reading under way, if any."""
        name = self._master_of(shard)
        master = self._masters.get(name)
        near = master is not None and master.near(self.reserve, self.ledger.pending(name))
        running = self._memory_refresh is not None and not self._memory_refresh.done()
        due = self._memory_at is None or self._clock() - self._memory_at >= (NEAR_MAX_AGE_S if near else MAX_AGE_S)
        if not running and due:
            self._memory_refresh = asyncio.get_running_loop().create_task(self._read(now))
        return self._memory_refresh

    async def check_room(self, shard: int, hold: Hold | None, now: float) -> None:
        """Refuse a create that does not fit (policy reject), else count it as sent. One INFO round trip
        the first time, and one before a refusal that creates answered since the reading may have caused
        (a fresh reading may find they took less than counted)."""
        if self.policy != "reject":
            return
        if self._memory_at is None:
            await self._read(now)
        running = self._schedule_refresh(shard, now)
        reason = self.refusal(shard, hold)
        if reason is not None and self.ledger.pending(self._master_of(shard)) > 0:
            if running is None or running.done():
                running = self._memory_refresh = asyncio.get_running_loop().create_task(self._read(now))
            await asyncio.shield(running)
            reason = self.refusal(shard, hold)
        if reason is not None:
            self._refusing.add(self._master_of(shard))
            raise SessionStoreFullError(reason)
        if hold is not None:
            self.ledger.send(hold)  # no await since the check: the verdict and the count are one step

    async def admit(
        self, shard: int, record: SessionRecord, estimate: int, now: float, touch: Touch
    ) -> tuple[Hold | None, SessionRecord | None]:
        """The create's hold, counted as sent, if it may go on (settle it with its reply); else the pair's
        live session if there is no room but it resumes one (`touch` records the activity); else
        SessionStoreFullError."""
        hold = None
        if self.policy == "reject":
            request = len(record.blob) + len(record.meta)
            hold = self.ledger.hold(self._master_of(shard), estimate, request)
        try:
            await self.check_room(shard, hold, now)
        except SessionStoreFullError:
            resumed = await self._resume_only(self._shards[shard], record, now, touch)
            if resumed is None:
                raise
            return None, resumed
        return hold, None

    def settle(self, hold: Hold | None, stored: bool) -> None:
        """A create's reply came (or its call failed: then `stored` stays True, as it may have)."""
        if hold is not None:
            self.ledger.settle(hold, stored)

    async def _resume_only(self, shard: Shard, record: SessionRecord, now: float, touch: Touch) -> SessionRecord | None:
        """At the limit a create that would resume its (user, client) pair's live session still does: it
        only records activity. None if nothing to resume."""
        if record.client_id is None:
            return None
        with translated("create"):
            existing = await self._client.get(shard.pair(record.user_id, record.client_id))
        if existing is None:
            return None
        sid = existing.decode() if isinstance(existing, bytes) else str(existing)
        resumed = await touch(sid, now, record.user_id)
        return None if resumed is None or resumed.user_id != record.user_id else resumed

    async def _read_info(self) -> tuple[dict[str, MasterMemory], list[str]]:
        """Every master's INFO memory, and the master of each shard ("" on one node)."""
        with translated("INFO memory"):
            if isinstance(self._client, RedisCluster):
                replies = await self._client.info("memory", target_nodes=RedisCluster.PRIMARIES)
                masters = {name: MasterMemory.from_info(info) for name, info in replies.items()}
                nodes = [self._client.get_node_from_key(shard.prefix) for shard in self._shards]
                return masters, ["" if node is None else node.name for node in nodes]
            return {"": MasterMemory.from_info(await self._client.info("memory"))}, [""] * len(self._shards)

    async def refresh(self) -> None:
        """Read used_memory, maxmemory and maxmemory_policy of every master (INFO memory) and which master
        holds each shard; warn once per policy that can evict sessions behind the service's back."""
        mark = self.ledger.mark()  # as the reading is sent: what it certainly includes
        masters, owners = await self._read_info()
        self.ledger.apply(mark, {name: (m.used, m.clients) for name, m in masters.items()})
        self._masters, self._shard_master, self._refusing = masters, owners, set()
        self._memory_at = self._clock()
        for policy in {m.policy for m in masters.values()} - {SAFE_POLICY, ""} - self._warned_policies:
            self._warned_policies.add(policy)
            log.warning(
                "Redis maxmemory_policy can evict sessions with no session-end event",
                extra={"maxmemory_policy": policy, "expected": SAFE_POLICY},
            )

    async def refresh_quietly(self) -> None:
        """A failed INFO (not allowed by an ACL, node down) keeps the last snapshot; creates go on."""
        try:
            await self.refresh()
        except SessionStoreException as exc:
            self._memory_at = self._clock()  # retried after MAX_AGE_S, not on every create
            unreachable = isinstance(exc.__cause__, (rx.ConnectionError, rx.TimeoutError, rx.RedisClusterException))
            if not self._info_warned and not unreachable:  # an unreachable store is reported as such
                self._info_warned = True
                log.warning(
                    "Redis INFO memory failed: creates are not refused before Redis' own maxmemory",
                    extra={"error_type": type(exc.__cause__).__name__},
                )

    def reasons(self) -> list[str]:
        """The /health reasons from the last INFO memory of each master."""
        pending = {name: self.ledger.pending(name) for name in self._masters}
        return memory_reasons(self._masters, self.reserve, pending, self._refusing)

    def close(self) -> None:
        if self._memory_refresh is not None:
            self._memory_refresh.cancel()
