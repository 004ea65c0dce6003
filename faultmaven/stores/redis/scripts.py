"""Running the store's Lua scripts (scripts.py holds their text): loaded once, Redis errors mapped.

Redis' out-of-memory refusal becomes SessionStoreFullError (the service answers 503 and Retry-After), any
other Redis error SessionStoreException.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from faultmaven.stores.redis.errors import translated


class ScriptRunner:
    """The store's scripts registered with redis-py (EVALSHA), each loaded before the first call."""

    def __init__(self, client: aioredis.Redis | RedisCluster, scripts: Mapping[str, str], *, at_once: int) -> None:
        """At most `at_once` calls run at once, the others wait their turn: each call holds a connection,
        and each connection holds buffers in Redis' memory (redis-py's cluster client also fails a call
        past its connection limit rather than wait)."""
        self._client = client
        self._slots = asyncio.Semaphore(at_once)
        self._scripts = {name: client.register_script(lua) for name, lua in scripts.items()}
        self._preparing = asyncio.Lock()
        self._prepared = False

    def register(self, name: str, lua: str) -> None:
        """Run `lua` as the script `name` from now on (a variant of a script, for fault injection)."""
        self._scripts[name] = self._client.register_script(lua)
        self._prepared = False

    def texts(self) -> dict[str, str]:
        """The store's name for each script -> the Lua text it runs."""
        texts = {name: script.script for name, script in self._scripts.items()}
        return {name: text if isinstance(text, str) else bytes(text).decode() for name, text in texts.items()}

    async def _prepare(self) -> None:
        """Load every script once, before the first call: on a cluster, many calls at once that each found
        a script missing and loaded it raced in redis-py (a connection used while reconnecting)."""
        async with self._preparing:
            if not self._prepared:
                for script in self._scripts.values():
                    await self._client.script_load(script.script)
                self._prepared = True

    async def run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        with translated(name):
            if not self._prepared:
                await self._prepare()
            async with self._slots:
                return await self._scripts[name](keys=keys, args=args)
