"""The Redis store: one session space shared by every worker and host, surviving restarts.

Layout under a key prefix (default "faultmaven:"):
- `s:<id>`: a hash (user, created, active, data, cost) with a native TTL of 2 x timeout + 60 s, a safety
  net for sessions no cleanup reaches;
- `idx`: a sorted set of ids scored by last activity, so cleanup reads only the idle head;
- `stats`: a hash with the byte count of all stored sessions;
- `lease`: the cleanup lease (SET NX PX with a random token, released only by its holder).

Every operation that checks idleness and acts on it is one Lua script, so it runs atomically in Redis: a
touch racing a cleanup either lands first (and the cleanup's re-check keeps the session) or finds the
session gone (and never writes it back). Timestamps travel as repr() strings, so Lua compares exactly the
doubles Python computed.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Set
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from faultmaven.exceptions import SessionStoreException
from faultmaven.session import SessionRecord
from faultmaven.stores.base import BatchResult, Ended, EvictionListener, StoreStats
from faultmaven.stores.memory import session_bytes

_INSERT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'user', ARGV[2], 'created', ARGV[3], 'active', ARGV[4], 'data', ARGV[5], 'cost', ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('HINCRBY', KEYS[3], 'bytes', ARGV[6])
return 1
"""

# KEYS: session, idx, stats. ARGV: id, now, timeout, ttl_ms[, data, cost]
_TOUCH = """
local f = redis.call('HMGET', KEYS[1], 'user', 'created', 'active', 'data', 'cost')
if not f[3] then return false end
if tonumber(ARGV[2]) - tonumber(f[3]) >= tonumber(ARGV[3]) then return false end
redis.call('HSET', KEYS[1], 'active', ARGV[2])
local data = f[4]
if ARGV[5] then
  data = ARGV[5]
  redis.call('HSET', KEYS[1], 'data', data, 'cost', ARGV[6])
  redis.call('HINCRBY', KEYS[3], 'bytes', tonumber(ARGV[6]) - tonumber(f[5]))
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return {f[1], f[2], data}
"""

# KEYS: session, idx, stats. ARGV: id
_DELETE = """
local f = redis.call('HMGET', KEYS[1], 'created', 'active', 'cost')
redis.call('ZREM', KEYS[2], ARGV[1])
if not f[2] then return false end
redis.call('DEL', KEYS[1])
redis.call('HINCRBY', KEYS[3], 'bytes', -tonumber(f[3]))
return {f[1], f[2]}
"""

# KEYS: idx, stats. ARGV: key prefix, now, max_idle, limit, excluded ids...
# Reads a little past the cutoff by score, then applies the exact rule to each id in activity order.
_REMOVE_IDLE = """
local now, max_idle, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local excluded = {}
for i = 5, #ARGV do excluded[ARGV[i]] = true end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - max_idle + 1, 'LIMIT', 0, limit + #ARGV - 3)
local removed, freed, lifetime, failed, gone, keys = 0, 0, 0, {}, {}, {}
for _, id in ipairs(ids) do
  if removed + #failed >= limit then break end
  if not excluded[id] then
    local key = ARGV[1] .. 's:' .. id
    local ok, f = pcall(redis.call, 'HMGET', key, 'created', 'active', 'cost')
    if not ok then
      failed[#failed + 1] = id
    elseif not f[2] then
      gone[#gone + 1] = id  -- its hash already expired by TTL: drop the stale index entry
      removed = removed + 1
    else
      if now - tonumber(f[2]) < max_idle then break end
      gone[#gone + 1] = id
      keys[#keys + 1] = key
      removed = removed + 1
      freed = freed + tonumber(f[3])
      lifetime = lifetime + (tonumber(f[2]) - tonumber(f[1]))
    end
  end
end
for i = 1, #gone, 500 do
  redis.call('ZREM', KEYS[1], unpack(gone, i, math.min(i + 499, #gone)))
end
for i = 1, #keys, 500 do
  redis.call('DEL', unpack(keys, i, math.min(i + 499, #keys)))
end
if freed > 0 then redis.call('HINCRBY', KEYS[2], 'bytes', -freed) end
return {removed, freed, string.format('%.17g', lifetime), failed}
"""

# KEYS: idx, stats. ARGV: now, timeout. Exact count near the cutoff, ZCOUNT below it.
_STATS = """
local now, timeout = tonumber(ARGV[1]), tonumber(ARGV[2])
local cutoff = now - timeout
local expired = redis.call('ZCOUNT', KEYS[1], '-inf', '(' .. (cutoff - 1))
local near = redis.call('ZRANGEBYSCORE', KEYS[1], cutoff - 1, cutoff + 1, 'WITHSCORES')
for i = 2, #near, 2 do
  if now - tonumber(near[i]) >= timeout then expired = expired + 1 end
end
return {redis.call('ZCARD', KEYS[1]), expired, redis.call('HGET', KEYS[2], 'bytes') or '0'}
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _decode_user(raw: bytes) -> str | None:
    return raw[2:].decode() if raw else None  # "u:" + id, or empty for no user


class RedisStore:
    """SessionStore on a Redis server (redis-py asyncio). Stats are served from a cached snapshot."""

    def __init__(self, url: str, *, prefix: str = "faultmaven:", stats_max_age_s: float = 1.0) -> None:
        self.url = url
        self.prefix = prefix
        self.stats_max_age_s = stats_max_age_s
        self._client = aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._idx, self._stats_key, self._lease = prefix + "idx", prefix + "stats", prefix + "lease"
        self._scripts = {
            name: self._client.register_script(lua)
            for name, lua in [
                ("insert", _INSERT),
                ("touch", _TOUCH),
                ("delete", _DELETE),
                ("remove_idle", _REMOVE_IDLE),
                ("stats", _STATS),
                ("renew", _RENEW),
                ("release", _RELEASE),
            ]
        }
        self._snapshot: StoreStats | None = None
        self._snapshot_at = 0.0
        self._snapshot_error: str | None = None
        self._refreshing: asyncio.Task[None] | None = None

    def _key(self, session_id: str) -> str:
        return f"{self.prefix}s:{session_id}"

    @staticmethod
    def _ttl_ms(timeout_s: float) -> int:
        return int((2 * timeout_s + 60) * 1000)

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self._scripts[name](keys=keys, args=args)
        except RedisError as exc:
            raise SessionStoreException(f"redis {name} failed: {type(exc).__name__}: {exc}") from exc

    # -- SessionStore ------------------------------------------------------------------------------

    async def insert(self, record: SessionRecord, timeout_s: float) -> None:
        user = "u:" + record.user_id if record.user_id is not None else ""
        cost = session_bytes(record.session_id, None, record.blob)  # as replace_data counts it: id and data
        args = [record.session_id, user, repr(record.created_at), repr(record.last_activity), record.blob, cost]
        args.append(self._ttl_ms(timeout_s))
        if not await self._run("insert", [self._key(record.session_id), self._idx, self._stats_key], args):
            raise SessionStoreException("session id already stored")

    async def _touch(
        self, session_id: str, now: float, timeout_s: float, blob: bytes | None = None
    ) -> SessionRecord | None:
        args: list[Any] = [session_id, repr(now), repr(timeout_s), self._ttl_ms(timeout_s)]
        if blob is not None:
            args += [blob, session_bytes(session_id, None, blob)]
        found = await self._run("touch", [self._key(session_id), self._idx, self._stats_key], args)
        if not found:
            return None
        user, created, data = found
        return SessionRecord(session_id, _decode_user(user), float(created), now, bytes(data))

    async def touch(self, session_id: str, now: float, timeout_s: float) -> SessionRecord | None:
        return await self._touch(session_id, now, timeout_s)

    async def replace_data(self, session_id: str, blob: bytes, now: float, timeout_s: float) -> SessionRecord | None:
        return await self._touch(session_id, now, timeout_s, blob)

    async def delete(self, session_id: str, now: float, timeout_s: float) -> Ended | None:
        found = await self._run("delete", [self._key(session_id), self._idx, self._stats_key], [session_id])
        if not found:
            return None
        created, active = float(found[0]), float(found[1])
        return Ended(now - active < timeout_s, active - created)

    async def remove_idle(self, now: float, max_idle_s: float, limit: int, exclude: Set[str]) -> BatchResult:
        args = [self.prefix, repr(now), repr(max_idle_s), limit, *exclude]
        removed, freed, lifetime, failed = await self._run("remove_idle", [self._idx, self._stats_key], args)
        return BatchResult(
            removed=int(removed),
            lifetime_s=float(lifetime),
            freed_bytes=int(freed),
            failed=[f.decode() for f in failed],
            exhausted=int(removed) + len(failed) < limit,
        )

    def listen_evictions(self, listener: EvictionListener) -> None:
        """Redis enforces its own maxmemory policy; this store never evicts on a write."""

    async def refresh_stats(self, now: float, timeout_s: float) -> None:
        """Read counts and bytes from Redis, so every replica reports the same numbers."""
        try:
            stored, expired, stored_bytes = await self._run(
                "stats", [self._idx, self._stats_key], [repr(now), repr(timeout_s)]
            )
        except SessionStoreException as exc:
            self._snapshot_error = str(exc)
            raise
        self._snapshot = StoreStats(int(stored), int(expired), int(stored_bytes))
        self._snapshot_at = time.monotonic()
        self._snapshot_error = None

    def stats(self, now: float, timeout_s: float) -> StoreStats:
        """The last snapshot (at most about stats_max_age_s old); a stale one schedules a refresh."""
        age = time.monotonic() - self._snapshot_at
        if age > self.stats_max_age_s and (self._refreshing is None or self._refreshing.done()):
            with contextlib.suppress(RuntimeError):  # no running loop: the caller gets the last snapshot
                self._refreshing = asyncio.get_running_loop().create_task(self._refresh_quietly(now, timeout_s))
        if self._snapshot_error is not None:
            raise SessionStoreException(self._snapshot_error)
        if self._snapshot is None:
            raise SessionStoreException("redis stats not read yet")
        return StoreStats(self._snapshot.stored, self._snapshot.expired, self._snapshot.memory_bytes, age)

    async def _refresh_quietly(self, now: float, timeout_s: float) -> None:
        with contextlib.suppress(SessionStoreException):  # recorded in _snapshot_error; stats() reports it
            await self.refresh_stats(now, timeout_s)

    async def acquire_lease(self, ttl_s: float) -> str | None:
        token = secrets.token_hex(16)
        try:
            taken = await self._client.set(self._lease, token, nx=True, px=int(ttl_s * 1000))
        except RedisError as exc:
            raise SessionStoreException(f"redis lease failed: {type(exc).__name__}: {exc}") from exc
        return token if taken else None

    async def renew_lease(self, token: str, ttl_s: float) -> bool:
        return bool(await self._run("renew", [self._lease], [token, int(ttl_s * 1000)]))

    async def release_lease(self, token: str) -> None:
        await self._run("release", [self._lease], [token])

    async def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
        await self._client.aclose()
