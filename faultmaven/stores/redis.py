"""The Redis store: one session space shared by every worker and host, surviving restarts.

Layout under a key prefix (default "faultmaven:"):
- `s:<id>`: a hash (user, client, type, created, active, timeout, abs, data, meta, cost) with a native TTL
  of 60 s past the earlier of twice its idle timeout and its absolute deadline, a safety net for sessions
  no cleanup reaches;
- `exp`: a sorted set of ids scored by each session's exact deadline, min(active + timeout, abs), so a
  cleanup and the expired count read only what is due, whatever mix of timeouts is stored;
- `idx`: a sorted set of ids scored by last activity, so a max-age cleanup reads only the idle head;
- `c:<client>[\x1f<user>]`: the session a client resumes (TTL: its absolute deadline);
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

from faultmaven.exceptions import SessionDataTooLargeError, SessionStoreException
from faultmaven.session import SessionRecord
from faultmaven.stores.base import BatchResult, Ended, EvictionListener, StoreStats
from faultmaven.stores.memory import session_bytes

# Fields of a session hash, in the order the scripts return them.
_FIELDS = "'user', 'client', 'type', 'created', 'active', 'timeout', 'abs', 'data', 'meta', 'cost'"

# Shared Lua: the expiry rule, activity, and removal with every index kept in step.
_LIB = f"""
local FIELDS = {{{_FIELDS}}}
local function deadline(f) return math.min(tonumber(f[5]) + tonumber(f[6]), tonumber(f[7])) end
local function ttl_ms(f, now)
  return math.floor((math.min(tonumber(f[5]) + 2 * tonumber(f[6]), tonumber(f[7])) - now + 60) * 1000)
end
local function num(x) return string.format('%.17g', x) end  -- exact: Lua's own tostring keeps 14 digits
local function activity(key, idx, exp, id, f, now, now_text)
  f[5] = now_text
  redis.call('HSET', key, 'active', now_text)
  redis.call('ZADD', idx, now_text, id)
  redis.call('ZADD', exp, num(deadline(f)), id)
  redis.call('PEXPIRE', key, ttl_ms(f, now))
end
local function pair_key(prefix, user, client)
  if user == '' then return prefix .. 'c:' .. client end
  return prefix .. 'c:' .. client .. string.char(31) .. string.sub(user, 3)
end
local function drop_pair(prefix, id, user, client)
  if client and client ~= '' then
    local pk = pair_key(prefix, user, client)
    if redis.call('GET', pk) == id then redis.call('DEL', pk) end
  end
end
"""

# KEYS: session, idx, exp, stats. ARGV: id, prefix, now, user, client, type, created, active, timeout, abs,
# data, meta, cost. Resumes the live session of the (user, client) pair, else inserts.
_CREATE = (
    _LIB
    + """
local now = tonumber(ARGV[3])
local pk = nil
if ARGV[5] ~= '' then
  pk = pair_key(ARGV[2], ARGV[4], ARGV[5])
  local existing = redis.call('GET', pk)
  if existing then
    local key = ARGV[2] .. 's:' .. existing
    local f = redis.call('HMGET', key, unpack(FIELDS))
    if f[5] and now < deadline(f) then
      activity(key, KEYS[2], KEYS[3], existing, f, now, ARGV[3])
      return {existing, f}
    end
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local f = {ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13]}
for i = 1, #FIELDS do redis.call('HSET', KEYS[1], FIELDS[i], f[i]) end
redis.call('HINCRBY', KEYS[4], 'bytes', ARGV[13])
activity(KEYS[1], KEYS[2], KEYS[3], ARGV[1], f, now, ARGV[3])
if pk then redis.call('SET', pk, ARGV[1], 'PX', math.floor((tonumber(ARGV[10]) - now + 60) * 1000)) end
return {ARGV[1]}
"""
)

# KEYS: session, idx, exp, stats. ARGV: id, now, user ('' for anyone)[, data, cost, limit]
_TOUCH = (
    _LIB
    + """
local f = redis.call('HMGET', KEYS[1], unpack(FIELDS))
if not f[5] then return false end
local now = tonumber(ARGV[2])
if now >= deadline(f) then return false end
if ARGV[3] ~= '' and f[1] ~= '' and f[1] ~= ARGV[3] then return false end
if ARGV[4] then
  local size = #ARGV[4] + #f[9]
  if size > tonumber(ARGV[6]) then return size end
  redis.call('HSET', KEYS[1], 'data', ARGV[4], 'cost', ARGV[5])
  redis.call('HINCRBY', KEYS[4], 'bytes', tonumber(ARGV[5]) - tonumber(f[10]))
  f[8] = ARGV[4]
end
activity(KEYS[1], KEYS[2], KEYS[3], ARGV[1], f, now, ARGV[2])
return f
"""
)

# KEYS: session, idx, exp, stats. ARGV: id, prefix, user ('' for anyone)
_DELETE = (
    _LIB
    + """
local f = redis.call('HMGET', KEYS[1], unpack(FIELDS))
if not f[5] then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  return false
end
if ARGV[3] ~= '' and f[1] ~= '' and f[1] ~= ARGV[3] then return false end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[1])
redis.call('HINCRBY', KEYS[4], 'bytes', -tonumber(f[10]))
drop_pair(ARGV[2], ARGV[1], f[1], f[2])
return f
"""
)

# KEYS: idx, exp, stats. ARGV: key prefix, now, max_idle ('' for none), limit, excluded ids...
# First the expired (the deadline index up to now), then, for a max-age run, the idle (the activity index,
# read a little past the cutoff, the exact rule applied to each id in activity order). Each candidate is
# re-read and re-checked before it goes.
_REMOVE_IDLE = (
    _LIB
    + """
local prefix, now, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[4])
local max_idle = tonumber(ARGV[3])
local excluded = {}
for i = 5, #ARGV do excluded[ARGV[i]] = true end
local removed, freed, lifetime, failed, gone, keys = 0, 0, 0, {}, {}, {}
local seen = {}  -- ids the first sweep took: the second one (max age) must not count them again
local function sweep(index, upto, by_idle)
  local ids = redis.call('ZRANGEBYSCORE', index, '-inf', upto, 'LIMIT', 0, limit + #ARGV - 4)
  for _, id in ipairs(ids) do
    if removed + #failed >= limit then return end
    if not excluded[id] and not seen[id] then
      local key = prefix .. 's:' .. id
      local ok, f = pcall(redis.call, 'HMGET', key, 'active', 'timeout', 'abs', 'created', 'cost', 'user', 'client')
      if not ok then
        failed[#failed + 1] = id
      elseif not f[1] then  -- its hash already expired by TTL: drop the stale index entries
        gone[#gone + 1] = id
        removed = removed + 1
      else
        local active = tonumber(f[1])
        if now < math.min(active + tonumber(f[2]), tonumber(f[3])) and not (by_idle and now - active >= max_idle) then
          return  -- the re-check: in use again, and everything after it in this index too
        end
        gone[#gone + 1] = id
        keys[#keys + 1] = key
        removed = removed + 1
        freed = freed + tonumber(f[5])
        lifetime = lifetime + (active - tonumber(f[4]))
        if f[7] ~= '' then drop_pair(prefix, id, f[6], f[7]) end
      end
      if max_idle then seen[id] = true end
    end
  end
end
sweep(KEYS[2], ARGV[2], false)
if max_idle then sweep(KEYS[1], num(now - max_idle + 1), true) end
for i = 1, #gone, 500 do
  local last = math.min(i + 499, #gone)
  redis.call('ZREM', KEYS[1], unpack(gone, i, last))
  redis.call('ZREM', KEYS[2], unpack(gone, i, last))
end
for i = 1, #keys, 500 do
  redis.call('DEL', unpack(keys, i, math.min(i + 499, #keys)))
end
if freed > 0 then redis.call('HINCRBY', KEYS[3], 'bytes', -freed) end
return {removed, freed, num(lifetime), failed}
"""
)

# KEYS: idx, exp, stats. ARGV: now. The deadline index is scored by the exact deadline: ZCOUNT is exact.
_STATS = """
return {redis.call('ZCARD', KEYS[1]), redis.call('ZCOUNT', KEYS[2], '-inf', ARGV[1]),
        redis.call('HGET', KEYS[3], 'bytes') or '0'}
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


def _user_arg(user_id: str | None) -> str:
    return "" if user_id is None else "u:" + user_id


def _record(session_id: str, f: list[bytes]) -> SessionRecord:
    """A session from the hash fields in _FIELDS order."""
    user, client, kind, created, active, timeout, absolute, data, meta, _cost = f
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
    )


class RedisStore:
    """SessionStore on a Redis server (redis-py asyncio). Stats are served from a cached snapshot."""

    def __init__(self, url: str, *, prefix: str = "faultmaven:", stats_max_age_s: float = 1.0) -> None:
        self.url = url
        self.prefix = prefix
        self.stats_max_age_s = stats_max_age_s
        self._client = aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._idx, self._exp = prefix + "idx", prefix + "exp"
        self._stats_key, self._lease = prefix + "stats", prefix + "lease"
        self._scripts = {
            name: self._client.register_script(lua)
            for name, lua in [
                ("create", _CREATE),
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

    def _session_keys(self, session_id: str) -> list[str]:
        return [self._key(session_id), self._idx, self._exp, self._stats_key]

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self._scripts[name](keys=keys, args=args)
        except RedisError as exc:
            raise SessionStoreException(f"redis {name} failed: {type(exc).__name__}: {exc}") from exc

    # -- SessionStore ------------------------------------------------------------------------------

    async def create(self, record: SessionRecord, now: float) -> tuple[SessionRecord, bool]:
        sid = record.session_id
        cost = session_bytes(sid, None, record.blob, record.meta)  # as replace_data counts it
        args: list[Any] = [sid, self.prefix, repr(now), _user_arg(record.user_id), record.client_id or ""]
        args.append(record.session_type)
        args += [repr(record.created_at), repr(record.last_activity), repr(record.timeout_s)]
        args += [repr(record.absolute_at), record.blob, record.meta, cost]
        found = await self._run("create", self._session_keys(sid), args)
        if not found:
            raise SessionStoreException("session id already stored")
        if len(found) == 1:
            return record, False
        return _record(found[0].decode(), found[1]), True

    async def _touch(
        self, session_id: str, now: float, user_id: str | None, blob: bytes | None = None, limit: int | None = None
    ) -> SessionRecord | None:
        args: list[Any] = [session_id, repr(now), _user_arg(user_id)]
        if blob is not None:
            args += [blob, session_bytes(session_id, None, blob), limit if limit is not None else 2**62]
        found = await self._run("touch", self._session_keys(session_id), args)
        if isinstance(found, int) and limit is not None:
            raise SessionDataTooLargeError(found, limit)
        return _record(session_id, found) if found else None

    async def touch(self, session_id: str, now: float, user_id: str | None = None) -> SessionRecord | None:
        return await self._touch(session_id, now, user_id)

    async def replace_data(
        self, session_id: str, blob: bytes, now: float, user_id: str | None = None, limit: int | None = None
    ) -> SessionRecord | None:
        return await self._touch(session_id, now, user_id, blob, limit)

    async def delete(self, session_id: str, now: float, user_id: str | None = None) -> Ended | None:
        found = await self._run("delete", self._session_keys(session_id), [session_id, self.prefix, _user_arg(user_id)])
        if not found:
            return None
        record = _record(session_id, found)
        return Ended(now < record.expires_at, record.last_activity - record.created_at)

    async def remove_idle(self, now: float, max_idle_s: float | None, limit: int, exclude: Set[str]) -> BatchResult:
        max_idle = "" if max_idle_s is None else repr(max_idle_s)
        args = [self.prefix, repr(now), max_idle, limit, *exclude]
        keys = [self._idx, self._exp, self._stats_key]
        removed, freed, lifetime, failed = await self._run("remove_idle", keys, args)
        return BatchResult(
            removed=int(removed),
            lifetime_s=float(lifetime),
            freed_bytes=int(freed),
            failed=[f.decode() for f in failed],
            exhausted=int(removed) + len(failed) < limit,
        )

    def listen_evictions(self, listener: EvictionListener) -> None:
        """Redis enforces its own maxmemory policy; this store never evicts on a write."""

    async def refresh_stats(self, now: float) -> None:
        """Read counts and bytes from Redis, so every replica reports the same numbers."""
        try:
            keys = [self._idx, self._exp, self._stats_key]
            stored, expired, stored_bytes = await self._run("stats", keys, [repr(now)])
        except SessionStoreException as exc:
            self._snapshot_error = str(exc)
            raise
        self._snapshot = StoreStats(int(stored), int(expired), int(stored_bytes))
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
