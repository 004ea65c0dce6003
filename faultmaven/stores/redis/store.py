"""The Redis store: one session space shared by every worker and host, surviving restarts.

Layout under a key prefix (default "faultmaven:"), split into 48 shards (see shards.py), each key carrying
its shard's hash tag, `<prefix>{<tag>}`, so that one script touches one hash slot (Redis Cluster) and the
shards spread evenly over a cluster's masters. Per shard:
- `s:<id>`: a hash (user, client, type, created, active, timeout, abs, data, meta, cost, version, order)
  with a native TTL of 60 s past its absolute deadline, set at create: a safety net for sessions no
  cleanup reaches, which no touch has to move;
- `exp`: a sorted set of ids scored by each session's exact deadline, min(active + timeout, abs), so a
  cleanup and the expired count read only what is due, whatever mix of timeouts is stored;
- `c:<client>[\x1f<user>]`: the session a client resumes (TTL: its absolute deadline);
- `u:<user>`: who the user's sessions are (all in the user's shard), changed only when one is created,
  renamed or removed; their activity order is read from the sessions when the user's list or limit needs it;
- `stats`: a hash with the byte count of the shard's sessions and the longest idle timeout stored;
- `lease`: the shard's cleanup lease (SET NX PX with a random token, released only by its holder), so
  replicas clean different shards at the same time.
The same layout runs on one node (`redis://`) and on a cluster (`redis+cluster://host:port[,host:port]`).
The keys and the client are keys.py, the scripts' runner scripts.py, the replies' decoding records.py, the
memory limits limits.py, the stats snapshot stats.py, the leases leases.py: this class holds one of each and
answers the SessionStore calls.

Every operation that checks idleness and acts on it is one Lua script (lua/*.lua), so it runs atomically in Redis: a
touch racing a cleanup either lands first (and the cleanup's re-check keeps the session) or finds the
session gone (and never writes it back). Timestamps travel as repr() strings, so Lua compares exactly the
doubles Python computed. A touch (get, heartbeat) is four Redis commands: the EVALSHA, the read of the
session, the write of its last activity and the move of its deadline.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence, Set
from itertools import count
from typing import Any, Unpack

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from faultmaven.exceptions import (
    SessionDataTooLargeError,
    SessionStoreException,
    SessionStoreFullError,
    SessionVersionConflict,
)
from faultmaven.session import SessionRecord
from faultmaven.stores.base import BatchResult, DataWrite, Report, StoreStats, drop
from faultmaven.stores.redis.keys import CLUSTER_MAX_CONNECTIONS, POOL_SIZE, Shard, connect, shards_under
from faultmaven.stores.redis.leases import Leases
from faultmaven.stores.redis.limits import MemoryLimits
from faultmaven.stores.redis.lua_texts import SCRIPTS
from faultmaven.stores.redis.records import batch_of, endings_of, hand_over, record_of, user_arg
from faultmaven.stores.redis.scripts import ScriptRunner
from faultmaven.stores.redis.shards import SHARDS, new_sharded_id, shard_of_id, shard_of_owner
from faultmaven.stores.redis.stats import StatsSnapshot
from faultmaven.stores.sizing import session_bytes

__all__ = ["CLUSTER_MAX_CONNECTIONS", "POOL_SIZE", "RedisStore", "Shard", "connect"]

NO_LIMIT = 2**62  # the size limit the update script gets for none

# The order of this process' activity: it breaks ties of last activity (two touches at the same clock
# reading), so that a user's sessions are in the order they were used, as the memory store keeps them.
_ACTIVITY_ORDER = count(1)


class RedisStore:
    """SessionStore on a Redis server or cluster (redis-py asyncio). Stats are served from a cached snapshot."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "faultmaven:",
        stats_max_age_s: float = 1.0,
        policy: str = "reject",
        memory_reserve: float = 0.10,
        max_bytes: int | None = None,
        monotonic_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`policy` "reject" refuses new sessions (SessionStoreFullError) while the master that would hold
        one is within `memory_reserve` of its maxmemory, or while the stored session bytes reach
        `max_bytes` (SESSION_MAX_MEMORY_MB, when set explicitly); "evict" leaves the limits to Redis.
        `monotonic_clock` times the stats and INFO memory snapshots (a test's fake ages them at once)."""
        shards = shards_under(prefix)
        if policy not in ("reject", "evict"):
            raise ValueError("policy must be 'reject' or 'evict'")
        if not 0.0 <= memory_reserve <= 0.9:
            raise ValueError("memory_reserve must be a fraction from 0 to 0.9")
        self.url = url
        self.prefix = prefix
        self.client: aioredis.Redis | RedisCluster = connect(url)
        self.shards: tuple[Shard, ...] = shards
        self.scripts = ScriptRunner(self.client, SCRIPTS, at_once=POOL_SIZE)
        self.snapshot = StatsSnapshot(
            self.client, shards, stats_max_age_s, read_memory=self._read_memory, clock=monotonic_clock
        )
        self.memory = MemoryLimits(
            self.client,
            shards,
            self.snapshot,
            policy=policy,
            reserve=memory_reserve,
            max_bytes=max_bytes,
            clock=monotonic_clock,
        )
        self.leases = Leases(self.client, shards, self.scripts)
        self.detailed_endings = False

    def shard_for(self, session_id: str) -> Shard | None:
        """The shard an id names; None for an id of no shard (never stored here)."""
        shard = shard_of_id(session_id)
        return None if shard is None else self.shards[shard]

    def owner_shard(self, user_id: str) -> Shard:
        """The shard of every session of the user."""
        return self.shards[shard_of_owner(user_id, None)]

    def new_id(self, user_id: str | None, client_id: str | None, like: str | None = None) -> str:
        shard = shard_of_id(like) if like is not None else None
        return new_sharded_id(shard_of_owner(user_id, client_id) if shard is None else shard)

    def cleanup_parts(self) -> Sequence[int]:
        """Every shard, in a random order: replicas that start together mostly take different ones first."""
        return random.sample(range(SHARDS), SHARDS)

    # -- SessionStore ------------------------------------------------------------------------------

    async def create(
        self, record: SessionRecord, now: float, max_per_user: int = 0, *, report: Report = drop
    ) -> tuple[SessionRecord, bool]:
        sid = record.session_id
        shard = self.shard_for(sid)
        if shard is None:
            raise SessionStoreException("session id names no shard of this store (use new_id)")
        cost = session_bytes(sid, None, record.blob, record.meta)  # as replace_data counts it
        hold, resumed = await self.memory.admit(shard_of_id(sid) or 0, record, cost, now, self.touch)
        if resumed is not None:
            return resumed, True
        stored = True  # unless the reply says otherwise: a failed call may have stored it
        try:
            created = await self._create(shard, record, cost, now, max_per_user, report)
            stored = created is not None and not created[1]
        finally:
            self.memory.settle(hold, stored)
        if created is None:
            raise SessionStoreException("session id already stored")
        return created

    async def _create(
        self, shard: Shard, record: SessionRecord, cost: int, now: float, max_per_user: int, report: Report
    ) -> tuple[SessionRecord, bool] | None:
        """The script's verdict: the new record, or the pair's live session (True); None if the id was taken."""
        sid = record.session_id
        args: list[Any] = [sid, shard.prefix, repr(now), user_arg(record.user_id), record.client_id or ""]
        args += [record.session_type, repr(record.created_at), repr(record.last_activity), repr(record.timeout_s)]
        args += [repr(record.absolute_at), record.blob, record.meta, cost, max_per_user, record.version]
        args.append(next(_ACTIVITY_ORDER))
        found = await self.scripts.run("create", [shard.key(sid), *shard.indexes], args)
        if not found:
            return None
        stored, removed = found
        hand_over(endings_of(removed), report, detailed=self.detailed_endings)
        if len(stored) == 1:
            return record, False
        return record_of(stored[0].decode(), stored[1]), True

    async def touch(self, session_id: str, now: float, user_id: str | None = None) -> SessionRecord | None:
        shard = self.shard_for(session_id)
        if shard is None:
            return None
        args = [session_id, shard.prefix, repr(now), user_arg(user_id), next(_ACTIVITY_ORDER)]
        found = await self.scripts.run("touch", [shard.key(session_id), *shard.indexes], args)
        return record_of(session_id, found) if found else None

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
        """One script (lua/update.lua) checks the version, merges on the stored text, checks the size and
        writes, so concurrent writers never lose each other's keys. While the shard's master is in its
        reserve (policy reject), the script refuses a write whose data would grow (SessionStoreFullError)."""
        shard = self.shard_for(session_id)
        if shard is None:
            return None
        full = self.memory.refusal(shard_of_id(session_id) or 0) if self.memory.policy == "reject" else None
        base_cost = session_bytes(session_id, None, b"")  # the script adds the stored data's length
        args: list[Any] = [session_id, shard.prefix, repr(now), user_arg(user_id), blob, base_cost]
        limit, if_version = write.get("limit"), write.get("if_version")
        args += [limit if limit is not None else NO_LIMIT, "" if if_version is None else if_version]
        args.append(int(bool(write.get("merge"))))
        args += [int(full is not None), next(_ACTIVITY_ORDER)]
        found = await self.scripts.run("update", [shard.key(session_id), *shard.indexes], args)
        if not found:
            return None
        if len(found) == 2:
            refusal, value = found[0], int(found[1])
            if refusal == b"version":
                raise SessionVersionConflict(value)
            if refusal == b"full":
                raise SessionStoreFullError(full or "store full")
            raise SessionDataTooLargeError(value, limit if limit is not None else NO_LIMIT)
        return record_of(session_id, found)

    async def delete(
        self, session_id: str, now: float, user_id: str | None = None, *, report: Report = drop
    ) -> bool | None:
        shard = self.shard_for(session_id)
        if shard is None:
            return None
        keys = [shard.key(session_id), *shard.indexes]
        found = await self.scripts.run("delete", keys, [session_id, shard.prefix, user_arg(user_id)])
        if not found:
            return None
        record = record_of(session_id, found)
        ending = (session_id, record.user_id, record.client_id, record.created_at, record.last_activity, "deleted")
        hand_over([ending], report, detailed=self.detailed_endings)
        return now < record.expires_at

    async def rotate(
        self, session_id: str, new_id: str, now: float, user_id: str | None = None, *, report: Report = drop
    ) -> SessionRecord | None:
        shard = self.shard_for(session_id)
        if shard is None:
            return None
        if self.shard_for(new_id) is not shard:
            raise SessionStoreException("a rotated id must stay in its shard (use new_id(..., like=old id))")
        keys = [shard.key(session_id), shard.key(new_id), *shard.indexes]
        args = [session_id, new_id, shard.prefix, repr(now), user_arg(user_id)]
        found = await self.scripts.run("rotate", keys, args)
        if found == 0:
            raise SessionStoreException("session id already stored")
        if not found:
            return None
        fields, ending = found
        hand_over(endings_of([ending]), report, detailed=self.detailed_endings)
        return record_of(new_id, fields)

    async def list_user(self, user_id: str, now: float, limit: int, offset: int) -> tuple[list[SessionRecord], int]:
        shard = self.owner_shard(user_id)
        args = [shard.prefix, repr(now), user_arg(user_id), limit, offset]
        total, page = await self.scripts.run("list_user", shard.indexes, args)
        return [record_of(sid.decode(), fields) for sid, fields in page], int(total)

    async def revoke_user(self, user_id: str, now: float, *, report: Report = drop) -> int:
        shard = self.owner_shard(user_id)
        removed = await self.scripts.run("revoke_user", shard.indexes, [shard.prefix, repr(now), user_arg(user_id)])
        hand_over(endings_of(removed), report, detailed=self.detailed_endings)
        return sum(reason == b"revoked" for *_, reason in removed)

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
        shard = self.shards[part]
        max_idle = "" if max_idle_s is None else repr(max_idle_s)
        skip = [sid for sid in exclude if shard_of_id(sid) == part]
        args = [shard.prefix, repr(now), max_idle, limit, int(self.detailed_endings), *skip]
        reply = await self.scripts.run("remove_idle", shard.indexes, args)
        return batch_of(reply, limit, report, detailed=self.detailed_endings)

    # -- memory limits, stats and leases: delegated --------------------------------------------------

    @property
    def budget_from_settings(self) -> bool:
        """SESSION_MAX_MEMORY_MB bounds this store only when set explicitly (Redis has its maxmemory)."""
        return self.memory.max_bytes is not None

    async def refresh_memory(self) -> None:
        """Read every master's INFO memory now (see MemoryLimits.refresh)."""
        await self.memory.refresh()

    async def _read_memory(self) -> None:
        await self.memory.refresh_quietly()

    def memory_reasons(self) -> list[str]:
        """The /health reasons from the last INFO memory of each master."""
        return self.memory.reasons()

    async def refresh_stats(self, now: float) -> None:
        """Read counts and bytes from Redis, so every replica reports the same numbers."""
        await self.snapshot.refresh(now)

    def stats(self, now: float) -> StoreStats:
        return self.snapshot.stats(now)

    async def acquire_lease(self, ttl_s: float, part: int = 0) -> str | None:
        return await self.leases.acquire(ttl_s, part)

    async def renew_lease(self, token: str, ttl_s: float) -> bool:
        return await self.leases.renew(token, ttl_s)

    async def release_lease(self, token: str) -> None:
        await self.leases.release(token)

    async def close(self) -> None:
        self.snapshot.close()
        self.memory.close()
        await self.client.aclose()
