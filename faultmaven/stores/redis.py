"""The Redis store: one session space shared by every worker and host, surviving restarts.

Layout under a key prefix (default "faultmaven:"), split into 48 shards (see shards.py), each key carrying
its shard's hash tag, `<prefix>{<tag>}`, so that one script touches one hash slot (Redis Cluster) and the
shards spread evenly over a cluster's masters. Per shard:
- `s:<id>`: a hash (user, client, type, created, active, timeout, abs, data, meta, cost) with a native TTL
  of 60 s past the earlier of twice its idle timeout and its absolute deadline, a safety net for sessions
  no cleanup reaches;
- `exp`: a sorted set of ids scored by each session's exact deadline, min(active + timeout, abs), so a
  cleanup and the expired count read only what is due, whatever mix of timeouts is stored;
- `idx`: a sorted set of ids scored by last activity, so a max-age cleanup reads only the idle head;
- `c:<client>[\x1f<user>]`: the session a client resumes (TTL: its absolute deadline);
- `u:<user>`: the user's sessions in activity order (all of a user's sessions are in the user's shard);
- `stats`: a hash with the byte count of the shard's sessions;
- `lease`: the shard's cleanup lease (SET NX PX with a random token, released only by its holder), so
  replicas clean different shards at the same time.
The same layout runs on one node (`redis://`) and on a cluster (`redis+cluster://host:port[,host:port]`).

Every operation that checks idleness and acts on it is one Lua script (lua/*.lua), so it runs atomically in Redis: a
touch racing a cleanup either lands first (and the cleanup's re-check keeps the session) or finds the
session gone (and never writes it back). Timestamps travel as repr() strings, so Lua compares exactly the
doubles Python computed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections.abc import Sequence, Set
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import OutOfMemoryError, RedisError

from faultmaven.config.config import cluster_nodes
from faultmaven.exceptions import (
    SessionDataTooLargeError,
    SessionStoreException,
    SessionStoreFullError,
    SessionVersionConflict,
)
from faultmaven.session import SessionRecord
from faultmaven.stores.base import BatchResult, Ending, Endings, StoreStats
from faultmaven.stores.redis_memory import MAX_AGE_S, NEAR_MAX_AGE_S, SAFE_POLICY, MasterMemory, memory_reasons
from faultmaven.stores.scripts import SCRIPTS
from faultmaven.stores.shards import SHARDS, new_sharded_id, shard_of_id, shard_of_owner, shard_tags
from faultmaven.stores.sizing import session_bytes

log = logging.getLogger("faultmaven.sessions")


def _decode_user(raw: bytes) -> str | None:
    return raw[2:].decode() if raw else None  # "u:" + id, or empty for no user


def _user_arg(user_id: str | None) -> str:
    return "" if user_id is None else "u:" + user_id


def _record(session_id: str, f: list[bytes]) -> SessionRecord:
    """A session from the hash fields in the scripts' FIELDS order (lua/common.lua)."""
    user, client, kind, created, active, timeout, absolute, data, meta, _cost, version = f
    return SessionRecord(
        session_id,
        _decode_user(user),
        client.decode() or None,
        kind.decode(),
        float(created),
        float(active),
        float(timeout),
        float(absolute),
        bytes(data),
        bytes(meta),
        int(version) if version else 1,  # a hash stored before sessions had versions: version 1
    )


POOL_SIZE = 128  # connections to one node, per process
CLUSTER_MAX_CONNECTIONS = 1024  # per node, per process


@dataclass(frozen=True, slots=True)
class _Shard:
    """The keys of one shard: every one carries the shard's hash tag."""

    prefix: str  # "<prefix>{<tag>}": what the scripts build the shard's other keys from

    def key(self, session_id: str) -> str:
        return f"{self.prefix}s:{session_id}"

    @property
    def indexes(self) -> list[str]:
        return [self.prefix + "idx", self.prefix + "exp", self.prefix + "stats"]

    @property
    def lease(self) -> str:
        return self.prefix + "lease"


def connect(url: str) -> aioredis.Redis | RedisCluster:
    """A client for redis://... (one node) or redis+cluster://[user:password@]host:port[,host:port...]."""
    options: dict[str, Any] = {"socket_timeout": 5, "socket_connect_timeout": 5}
    if not url.startswith("redis+cluster://"):
        # A burst beyond the pool waits (up to 5 s) for a free connection instead of failing at once, as
        # redis-py's default pool does past 100 connections.
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=POOL_SIZE, timeout=5, **options)
        return aioredis.Redis.from_pool(pool)  # closing the client closes the pool
    parts = urlsplit(url)
    nodes = [ClusterNode(host, port) for host, port in cluster_nodes(url)]
    if parts.username:
        options["username"] = unquote(parts.username)
    if parts.password:
        options["password"] = unquote(parts.password)
    # redis-py's cluster client fails a call (MaxConnectionsError) rather than wait once a node has
    # max_connections in use (32 by default): a burst of concurrent requests must not fail so.
    return RedisCluster(startup_nodes=nodes, max_connections=CLUSTER_MAX_CONNECTIONS, **options)


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
    ) -> None:
        """`policy` "reject" refuses new sessions (SessionStoreFullError) while the master that would hold
        one is within `memory_reserve` of its maxmemory, or while the stored session bytes reach
        `max_bytes` (SESSION_MAX_MEMORY_MB, when set explicitly); "evict" leaves the limits to Redis."""
        if "{" in prefix or "}" in prefix:
            raise ValueError("the key prefix must not contain a hash tag: the store adds one per shard")
        if policy not in ("reject", "evict"):
            raise ValueError("policy must be 'reject' or 'evict'")
        if not 0.0 <= memory_reserve <= 0.9:
            raise ValueError("memory_reserve must be a fraction from 0 to 0.9")
        self.policy = policy
        self.memory_reserve = memory_reserve
        self.max_bytes = max_bytes
        self.url = url
        self.prefix = prefix
        self.stats_max_age_s = stats_max_age_s
        self._client = connect(url)
        self._shards = [_Shard(f"{prefix}{{{tag}}}") for tag in shard_tags()]
        self._leases: dict[str, _Shard] = {}  # token -> the shard it holds
        self._scripts = {name: self._client.register_script(lua) for name, lua in SCRIPTS.items()}
        self._preparing = asyncio.Lock()
        self._prepared = False
        self.detailed_endings = False
        self._endings = Endings()
        self._snapshot: StoreStats | None = None
        self._snapshot_at = 0.0
        self._snapshot_error: str | None = None
        self._refreshing: asyncio.Task[None] | None = None
        # Each master's INFO memory, the master of each shard, and bytes created since the last reading.
        self._masters: dict[str, MasterMemory] = {}
        self._shard_master: list[str] = []
        self._pending: dict[str, int] = {}
        self._memory_at = 0.0
        self._memory_refresh: asyncio.Task[None] | None = None
        self._warned_policies: set[str] = set()
        self._info_warned = False
        self._refusing: set[str] = set()  # masters that refused a create since the last reading

    def _shard(self, session_id: str) -> _Shard | None:
        """The shard an id names; None for an id of no shard (never stored here)."""
        shard = shard_of_id(session_id)
        return None if shard is None else self._shards[shard]

    def _owner_shard(self, user_id: str) -> _Shard:
        return self._shards[shard_of_owner(user_id, None)]

    async def _prepare(self) -> None:
        """Load every script once, before the first call: on a cluster, many calls at once that each found
        a script missing and loaded it raced in redis-py (a connection used while reconnecting)."""
        async with self._preparing:
            if not self._prepared:
                for script in self._scripts.values():
                    await self._client.script_load(script.script)
                self._prepared = True

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        try:
            if not self._prepared:
                await self._prepare()
            return await self._scripts[name](keys=keys, args=args)
        except OutOfMemoryError as exc:
            raise SessionStoreFullError(f"redis refused a write over maxmemory ({name})") from exc
        except RedisError as exc:
            if str(exc).startswith("OOM "):  # as a script's error reply, depending on the client's parser
                raise SessionStoreFullError(f"redis refused a write over maxmemory ({name})") from exc
            raise SessionStoreException(f"redis {name} failed: {type(exc).__name__}: {exc}") from exc

    def new_id(self, user_id: str | None, client_id: str | None, like: str | None = None) -> str:
        shard = shard_of_id(like) if like is not None else None
        return new_sharded_id(shard_of_owner(user_id, client_id) if shard is None else shard)

    def cleanup_parts(self) -> Sequence[int]:
        """Every shard, in a random order: replicas that start together mostly take different ones first."""
        return random.sample(range(SHARDS), SHARDS)

    # -- SessionStore ------------------------------------------------------------------------------

    def take_endings(self) -> Endings:
        endings, self._endings = self._endings, Endings()
        return endings

    def _report(self, raw: list[list[bytes]]) -> None:
        """Count (and keep, while detailed) the endings a script returned: {id, user, client, created,
        active, reason} each."""
        for sid, user, client, created, active, reason in raw:
            ending: Ending = (
                sid.decode(),
                _decode_user(user),
                client.decode() or None,
                float(created),
                float(active),
                reason.decode(),
            )
            self._endings.add(ending, detailed=self.detailed_endings)

    async def create(self, record: SessionRecord, now: float, max_per_user: int = 0) -> tuple[SessionRecord, bool]:
        sid = record.session_id
        shard = self._shard(sid)
        if shard is None:
            raise SessionStoreException("session id names no shard of this store (use new_id)")
        cost = session_bytes(sid, None, record.blob, record.meta)  # as replace_data counts it
        try:
            await self._check_room(shard_of_id(sid) or 0, cost, now)
        except SessionStoreFullError:
            resumed = await self._resume_only(shard, record, now)
            if resumed is None:
                raise
            return resumed, True
        args: list[Any] = [sid, shard.prefix, repr(now), _user_arg(record.user_id), record.client_id or ""]
        args += [record.session_type, repr(record.created_at), repr(record.last_activity), repr(record.timeout_s)]
        args += [repr(record.absolute_at), record.blob, record.meta, cost, max_per_user, record.version]
        found = await self._run("create", [shard.key(sid), *shard.indexes], args)
        if not found:
            raise SessionStoreException("session id already stored")
        stored, ended = found
        self._report(ended)
        if len(stored) == 1:
            master = self._master_of(shard_of_id(sid) or 0)
            self._pending[master] = self._pending.get(master, 0) + cost
            return record, False
        return _record(stored[0].decode(), stored[1]), True

    async def touch(self, session_id: str, now: float, user_id: str | None = None) -> SessionRecord | None:
        shard = self._shard(session_id)
        if shard is None:
            return None
        args = [session_id, shard.prefix, repr(now), _user_arg(user_id)]
        found = await self._run("touch", [shard.key(session_id), *shard.indexes], args)
        return _record(session_id, found) if found else None

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
        """One script (lua/update.lua) checks the version, merges on the stored text, checks the size and
        writes, so concurrent writers never lose each other's keys. While the shard's master is in its
        reserve (policy reject), the script refuses a write whose data would grow (SessionStoreFullError)."""
        shard = self._shard(session_id)
        if shard is None:
            return None
        full = self._refusal(shard_of_id(session_id) or 0, 0) if self.policy == "reject" else None
        base_cost = session_bytes(session_id, None, b"")  # the script adds the stored data's length
        args: list[Any] = [session_id, shard.prefix, repr(now), _user_arg(user_id), blob, base_cost]
        args += [limit if limit is not None else 2**62, "" if if_version is None else if_version, int(merge)]
        args.append(int(full is not None))
        found = await self._run("update", [shard.key(session_id), *shard.indexes], args)
        if not found:
            return None
        if len(found) == 2:
            refusal, value = found[0], int(found[1])
            if refusal == b"version":
                raise SessionVersionConflict(value)
            if refusal == b"full":
                raise SessionStoreFullError(full or "store full")
            raise SessionDataTooLargeError(value, limit if limit is not None else 2**62)
        return _record(session_id, found)

    async def delete(self, session_id: str, now: float, user_id: str | None = None) -> bool | None:
        shard = self._shard(session_id)
        if shard is None:
            return None
        keys = [shard.key(session_id), *shard.indexes]
        found = await self._run("delete", keys, [session_id, shard.prefix, _user_arg(user_id)])
        if not found:
            return None
        record = _record(session_id, found)
        ending = (session_id, record.user_id, record.client_id, record.created_at, record.last_activity, "deleted")
        self._endings.add(ending, detailed=self.detailed_endings)
        return now < record.expires_at

    async def rotate(
        self, session_id: str, new_id: str, now: float, user_id: str | None = None
    ) -> SessionRecord | None:
        shard = self._shard(session_id)
        if shard is None:
            return None
        if self._shard(new_id) is not shard:
            raise SessionStoreException("a rotated id must stay in its shard (use new_id(..., like=old id))")
        keys = [shard.key(session_id), shard.key(new_id), *shard.indexes]
        found = await self._run("rotate", keys, [session_id, new_id, shard.prefix, repr(now), _user_arg(user_id)])
        if found == 0:
            raise SessionStoreException("session id already stored")
        if not found:
            return None
        fields, ending = found
        self._report([ending])
        return _record(new_id, fields)

    async def list_user(self, user_id: str, now: float, limit: int, offset: int) -> tuple[list[SessionRecord], int]:
        shard = self._owner_shard(user_id)
        args = [shard.prefix, repr(now), _user_arg(user_id), limit, offset]
        total, page = await self._run("list_user", shard.indexes, args)
        return [_record(sid.decode(), fields) for sid, fields in page], int(total)

    async def revoke_user(self, user_id: str, now: float) -> int:
        shard = self._owner_shard(user_id)
        ended = await self._run("revoke_user", shard.indexes, [shard.prefix, repr(now), _user_arg(user_id)])
        self._report(ended)
        return sum(reason == b"revoked" for *_, reason in ended)

    async def remove_idle(
        self, now: float, max_idle_s: float | None, limit: int, exclude: Set[str], part: int = 0
    ) -> BatchResult:
        shard = self._shards[part]
        max_idle = "" if max_idle_s is None else repr(max_idle_s)
        skip = [sid for sid in exclude if shard_of_id(sid) == part]
        args = [shard.prefix, repr(now), max_idle, limit, int(self.detailed_endings), *skip]
        removed, freed, lifetime, failed, ended, idle = await self._run("remove_idle", shard.indexes, args)
        if ended:  # details: counted here, one by one
            self._report(ended)
            self._endings.freed_bytes += int(freed)
        else:
            self._endings.tally("idle", int(idle))
            self._endings.tally("expired", int(removed) - int(idle), float(lifetime), int(freed))
        return BatchResult(int(removed), [f.decode() for f in failed], int(removed) + len(failed) < limit)

    # -- memory limits -----------------------------------------------------------------------------

    def _master_of(self, shard: int) -> str:
        return self._shard_master[shard] if shard < len(self._shard_master) else ""

    def _refusal(self, shard: int, incoming: int) -> str | None:
        """Why a create of `incoming` bytes in `shard` must be refused now, from the snapshots; None: room."""
        stored = None if self._snapshot is None else self._snapshot.memory_bytes
        over = stored is not None and stored + sum(self._pending.values()) + incoming > (self.max_bytes or 0)
        if self.max_bytes is not None and over:
            return "SESSION_MAX_MEMORY_MB reached (SESSION_MEMORY_POLICY=reject)"
        name = self._master_of(shard)
        master = self._masters.get(name)
        if master is not None and master.full(self.memory_reserve, self._pending.get(name, 0) + incoming):
            return "redis used_memory within SESSION_REDIS_MEMORY_RESERVE of maxmemory"
        return None

    def _schedule_memory_refresh(self, shard: int, now: float) -> None:
        """Keep the memory snapshot fresh from the create path without waiting for it: at most once a
        MAX_AGE_S, or once a NEAR_MAX_AGE_S while the shard's master is near or in its reserve."""
        name = self._master_of(shard)
        master = self._masters.get(name)
        near = master is not None and master.near(self.memory_reserve, self._pending.get(name, 0))
        if time.monotonic() - self._memory_at < (NEAR_MAX_AGE_S if near else MAX_AGE_S):
            return
        if self._memory_refresh is None or self._memory_refresh.done():
            # With SESSION_MAX_MEMORY_MB the stored bytes are read too (the pending bytes restart at 0).
            refresh = self._refresh_memory_quietly() if self.max_bytes is None else self._refresh_quietly(now)
            self._memory_refresh = asyncio.get_running_loop().create_task(refresh)

    async def _check_room(self, shard: int, incoming: int, now: float) -> None:
        """Refuse a create that does not fit (policy reject): one INFO round trip the first time only."""
        if self.policy != "reject":
            return
        if self._memory_at == 0.0:
            await (self._refresh_memory_quietly() if self.max_bytes is None else self._refresh_quietly(now))
        self._schedule_memory_refresh(shard, now)
        reason = self._refusal(shard, incoming)
        if reason is not None:
            self._refusing.add(self._master_of(shard))
            raise SessionStoreFullError(reason)

    async def _resume_only(self, shard: _Shard, record: SessionRecord, now: float) -> SessionRecord | None:
        """At the limit a create that would resume its (user, client) pair's live session still does: it
        only records activity. The pair's key as the scripts build it; None if nothing to resume."""
        if record.client_id is None:
            return None
        key = f"{shard.prefix}c:{record.client_id}"
        if record.user_id is not None:
            key += f"\x1f{record.user_id}"
        try:
            existing = await self._client.get(key)
        except RedisError as exc:
            raise SessionStoreException(f"redis create failed: {type(exc).__name__}: {exc}") from exc
        if existing is None:
            return None
        sid = existing.decode() if isinstance(existing, bytes) else str(existing)
        resumed = await self.touch(sid, now, record.user_id)
        return None if resumed is None or resumed.user_id != record.user_id else resumed

    async def refresh_memory(self) -> None:
        """Read used_memory, maxmemory and maxmemory_policy of every master (INFO memory) and which master
        holds each shard; warn once per policy that can evict sessions behind the service's back."""
        try:
            if isinstance(self._client, RedisCluster):
                replies = await self._client.info("memory", target_nodes=RedisCluster.PRIMARIES)
                masters = {name: MasterMemory.from_info(info) for name, info in replies.items()}
                nodes = [self._client.get_node_from_key(shard.prefix) for shard in self._shards]
                owners = ["" if node is None else node.name for node in nodes]
            else:
                masters = {"": MasterMemory.from_info(await self._client.info("memory"))}
                owners = [""] * len(self._shards)
        except RedisError as exc:
            raise SessionStoreException(f"redis INFO memory failed: {type(exc).__name__}: {exc}") from exc
        self._masters, self._shard_master, self._pending, self._refusing = masters, owners, {}, set()
        self._memory_at = time.monotonic()
        for policy in {m.policy for m in masters.values()} - {SAFE_POLICY, ""} - self._warned_policies:
            self._warned_policies.add(policy)
            log.warning(
                "Redis maxmemory_policy can evict sessions with no session-end event",
                extra={"maxmemory_policy": policy, "expected": SAFE_POLICY},
            )

    async def _refresh_memory_quietly(self) -> None:
        """A failed INFO (not allowed by an ACL, node down) keeps the last snapshot; creates go on."""
        try:
            await self.refresh_memory()
        except SessionStoreException as exc:
            self._memory_at = time.monotonic()  # retried after MAX_AGE_S, not on every create
            if not self._info_warned:
                self._info_warned = True
                log.warning(
                    "Redis INFO memory failed: creates are not refused before Redis' own maxmemory",
                    extra={"error_type": type(exc.__cause__).__name__},
                )

    @property
    def budget_from_settings(self) -> bool:
        """SESSION_MAX_MEMORY_MB bounds this store only when set explicitly (Redis has its maxmemory)."""
        return self.max_bytes is not None

    def memory_reasons(self) -> list[str]:
        """The /health reasons from the last INFO memory of each master."""
        return memory_reasons(self._masters, self.memory_reserve, self._pending, self._refusing)

    async def refresh_stats(self, now: float) -> None:
        """Read counts and bytes from Redis, so every replica reports the same numbers: three commands per
        shard in one pipeline (on a cluster, one round trip per master), added up."""
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for shard in self._shards:
                    _, exp, stats = shard.indexes
                    pipe.zcard(exp)
                    pipe.zcount(exp, "-inf", repr(now))
                    pipe.hget(stats, "bytes")
                replies = await pipe.execute()
        except RedisError as exc:
            self._snapshot_error = f"redis stats failed: {type(exc).__name__}: {exc}"
            raise SessionStoreException(self._snapshot_error) from exc
        stored, expired, stored_bytes = (sum(int(x or 0) for x in replies[i::3]) for i in range(3))
        await self._refresh_memory_quietly()
        self._snapshot = StoreStats(stored, expired, stored_bytes)
        self._snapshot_at = time.monotonic()
        self._snapshot_error = None

    def stats(self, now: float) -> StoreStats:
        """The last snapshot (at most about stats_max_age_s old); a stale one schedules a refresh.
        Before the first read: counts and age None (never an error)."""
        age = time.monotonic() - self._snapshot_at
        if age > self.stats_max_age_s and (self._refreshing is None or self._refreshing.done()):
            with contextlib.suppress(RuntimeError):  # no running loop: the caller gets the last snapshot
                self._refreshing = asyncio.get_running_loop().create_task(self._refresh_quietly(now))
        if self._snapshot_error is not None:
            raise SessionStoreException(self._snapshot_error)
        if self._snapshot is None:
            return StoreStats(None, None, None, None)
        return StoreStats(self._snapshot.stored, self._snapshot.expired, self._snapshot.memory_bytes, age)

    async def _refresh_quietly(self, now: float) -> None:
        with contextlib.suppress(SessionStoreException):  # recorded in _snapshot_error; stats() reports it
            await self.refresh_stats(now)

    async def acquire_lease(self, ttl_s: float, part: int = 0) -> str | None:
        token, shard = secrets.token_hex(16), self._shards[part]
        try:
            taken = await self._client.set(shard.lease, token, nx=True, px=int(ttl_s * 1000))
        except RedisError as exc:
            raise SessionStoreException(f"redis lease failed: {type(exc).__name__}: {exc}") from exc
        if not taken:
            return None
        self._leases[token] = shard
        return token

    async def renew_lease(self, token: str, ttl_s: float) -> bool:
        shard = self._leases.get(token)
        return shard is not None and bool(await self._run("renew", [shard.lease], [token, int(ttl_s * 1000)]))

    async def release_lease(self, token: str) -> None:
        shard = self._leases.pop(token, None)
        if shard is not None:
            await self._run("release", [shard.lease], [token])

    async def close(self) -> None:
        for task in (self._refreshing, self._memory_refresh):
            if task is not None:
                task.cancel()
        await self._client.aclose()
