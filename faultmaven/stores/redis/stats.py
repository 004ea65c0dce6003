"""The Redis store's stats: counts and bytes read from Redis, so every replica reports the same numbers,
served from a snapshot so that /health and the metrics cost no round trip. The snapshot's age is read from
an injected monotonic clock (time.monotonic by default), so tests age it without waiting."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from faultmaven.exceptions import SessionStoreException
from faultmaven.stores.base import StoreStats
from faultmaven.stores.redis.errors import translated
from faultmaven.stores.redis.keys import Shard


class StatsSnapshot:
    """The last reading of every shard's counts and bytes, refreshed in the background once stale."""

    def __init__(
        self,
        client: aioredis.Redis | RedisCluster,
        shards: Sequence[Shard],
        max_age_s: float,
        read_memory: Callable[[], Awaitable[None]],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`read_memory` runs with each reading, before it is served (the memory limits read INFO then);
        `clock` (seconds, monotonic) times the readings and the snapshot's age."""
        self._client = client
        self._shards = shards
        self.max_age_s = max_age_s
        self._read_memory = read_memory
        self._clock = clock
        self._snapshot: StoreStats | None = None
        self._at: float | None = None  # the clock at the last successful reading
        self._error: str | None = None
        self._refreshing: asyncio.Task[None] | None = None

    @property
    def read_at(self) -> float:
        """The clock's reading at the last successful reading; 0.0 before the first."""
        return 0.0 if self._at is None else self._at

    @property
    def error(self) -> str | None:
        """Why the last reading failed; None once one succeeded."""
        return self._error

    @property
    def stored_bytes(self) -> int | None:
        """The stored sessions' bytes at the last reading; None before the first."""
        return None if self._snapshot is None else self._snapshot.memory_bytes

    async def refresh(self, now: float) -> None:
        """Three commands per shard in one pipeline (on a cluster, one round trip per master), added up."""
        try:
            with translated("stats"):
                replies = await self._read(now)
        except SessionStoreException as exc:
            self._error = str(exc)
            raise
        stored, expired, stored_bytes = (sum(int(x or 0) for x in replies[i::3]) for i in range(3))
        await self._read_memory()
        self._snapshot = StoreStats(stored, expired, stored_bytes)
        self._at = self._clock()
        self._error = None

    async def _read(self, now: float) -> list[Any]:
        async with self._client.pipeline(transaction=False) as pipe:
            for shard in self._shards:
                pipe.zcard(shard.deadlines)
                pipe.zcount(shard.deadlines, "-inf", repr(now))
                pipe.hget(shard.stats, "bytes")
            return list(await pipe.execute())

    async def refresh_quietly(self, now: float) -> None:
        with contextlib.suppress(SessionStoreException):  # recorded in _error; stats() reports it
            await self.refresh(now)

    def stats(self, now: float) -> StoreStats:
        """The last snapshot (at most about max_age_s old); a stale one schedules a refresh.
        Before the first read: counts and age None (never an error)."""
        age = math.inf if self._at is None else self._clock() - self._at
        if age > self.max_age_s and (self._refreshing is None or self._refreshing.done()):
            with contextlib.suppress(RuntimeError):  # no running loop: the caller gets the last snapshot
                self._refreshing = asyncio.get_running_loop().create_task(self.refresh_quietly(now))
        if self._error is not None:
            raise SessionStoreException(self._error)
        if self._snapshot is None:
            return StoreStats(None, None, None, None)
        return StoreStats(self._snapshot.stored, self._snapshot.expired, self._snapshot.memory_bytes, age)

    def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
