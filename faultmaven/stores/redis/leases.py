"""The Redis store's cleanup leases: one per shard (SET NX PX with a random token, renewed and released
only by its holder), so replicas clean different shards at the same time."""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from faultmaven.stores.redis.errors import translated
from faultmaven.stores.redis.keys import Shard
from faultmaven.stores.redis.scripts import ScriptRunner


class Leases:
    """The shard leases this process holds, by token."""

    def __init__(self, client: aioredis.Redis | RedisCluster, shards: Sequence[Shard], scripts: ScriptRunner) -> None:
        self._client = client
        self._shards = shards
        self._scripts = scripts
        self._held: dict[str, Shard] = {}  # token -> the shard it holds

    async def acquire(self, ttl_s: float, part: int = 0) -> str | None:
        token, shard = secrets.token_hex(16), self._shards[part]
        with translated("lease"):
            taken = await self._client.set(shard.lease, token, nx=True, px=int(ttl_s * 1000))
        if not taken:
            return None
        self._held[token] = shard
        return token

    async def renew(self, token: str, ttl_s: float) -> bool:
        shard = self._held.get(token)
        return shard is not None and bool(await self._scripts.run("renew", [shard.lease], [token, int(ttl_s * 1000)]))

    async def release(self, token: str) -> None:
        shard = self._held.pop(token, None)
        if shard is not None:
            await self._scripts.run("release", [shard.lease], [token])
