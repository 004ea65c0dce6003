"""Capacity figures for sizing Redis: bytes per session and Redis operations per request and per cleaned
session, measured on a local redis-server through the real store.

    python perf/redis_capacity.py [--sessions 20000]

Memory: used_memory before and after storing N sessions (of users with 2 sessions each, with a small
data document, as the copilot stores them), divided by N, and MEMORY USAGE of one session hash. Operations:
INFO commandstats (which counts the commands a script runs too, and the EVALSHA itself) around N calls
of each kind: create, get, heartbeat, update (PATCH of the data), cleanup.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from faultmaven.config import Settings  # noqa: E402
from faultmaven.session_management import SessionManager  # noqa: E402
from faultmaven.stores.redis.store import RedisStore  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402
from tests.support import FakeClock  # noqa: E402

DATA = {"case": "db-latency", "step": 3, "notes": ["checked connections", "raised pool size"]}


async def commands(store: RedisStore) -> int:
    """Commands Redis has run since the last CONFIG RESETSTAT, scripts' inner commands included, without
    the INFO and CONFIG calls of this measurement."""
    stats: dict[str, Any] = await store.client.info("commandstats")  # type: ignore[union-attr]
    return sum(v["calls"] for k, v in stats.items() if k not in ("cmdstat_info", "cmdstat_config"))


async def measure(url: str, n: int) -> dict[str, float]:
    clock = FakeClock()
    settings = Settings(cleanup_batch_size=500, cleanup_enabled=False, max_per_user=0)
    manager = SessionManager(RedisStore(url), settings=settings, clock=clock)
    store = manager.store
    assert isinstance(store, RedisStore)
    client: Any = store.client
    await client.flushall()
    before = (await client.info("memory"))["used_memory"]
    await client.config_resetstat()
    ids = []
    for start in range(0, n, 200):
        batch = [manager.create_session(f"user-{i // 2}", DATA) for i in range(start, min(start + 200, n))]
        ids += [s.session_id for s in await asyncio.gather(*batch)]
    per_create = await commands(store) / n
    after = (await client.info("memory"))["used_memory"]
    shard = store.shard_for(ids[0])
    assert shard is not None
    hash_bytes = await client.memory_usage(shard.key(ids[0]))
    await client.config_resetstat()
    for sid in ids:
        await manager.get_session(sid)
    per_get = await commands(store) / n
    await client.config_resetstat()
    for sid in ids:
        await manager.touch_session(sid)
    per_touch = await commands(store) / n
    await client.config_resetstat()
    for sid in ids:
        await manager.update_session(sid, DATA | {"step": 4})
    per_update = await commands(store) / n
    clock.advance(minutes=31)
    await client.config_resetstat()
    removed = await manager.cleanup_inactive_sessions()
    per_cleaned = await commands(store) / removed
    await manager.close()
    return {
        "sessions": n,
        "bytes_per_session": (after - before) / n,
        "session_hash_bytes": hash_bytes,
        "redis_commands_per_create": per_create,
        "redis_commands_per_get": per_get,
        "redis_commands_per_heartbeat": per_touch,
        "redis_commands_per_update": per_update,
        "redis_commands_per_cleaned_session": per_cleaned,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20_000)
    args = parser.parse_args()
    server = RedisServer()
    server.start()
    try:
        print(json.dumps(asyncio.run(measure(server.url, args.sessions)), indent=2))
    finally:
        server.cleanup()


if __name__ == "__main__":
    main()
