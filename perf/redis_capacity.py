"""Capacity figures for sizing Redis: bytes per session and Redis operations per request and per cleaned
session, measured on a local redis-server through the real store.

    python perf/redis_capacity.py [--sessions 20000]

Memory: used_memory before and after storing N sessions (of users with 2 sessions each, with a small
data document, as the copilot stores them), divided by N, and MEMORY USAGE of one session hash. Operations:
INFO commandstats (which counts the commands a script runs too, and the EVALSHA itself) around N calls
of each kind: create, update (PATCH of the data), delete, cleanup; and GET and heartbeat as the perf gate
counts them (tests/performance/test_redis_commands.py: signed-in and anonymous sessions, the clock moving
between reads).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from faultmaven.config import Settings  # noqa: E402
from faultmaven.session_management import SessionManager  # noqa: E402
from faultmaven.stores.redis.store import RedisStore  # noqa: E402
from tests.performance.test_redis_commands import CommandCount, commands_per_read  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402
from tests.support import FakeClock  # noqa: E402

DATA = {"case": "db-latency", "step": 3, "notes": ["checked connections", "raised pool size"]}


async def measure(url: str, n: int) -> dict[str, float]:
    clock = FakeClock()
    settings = Settings(cleanup_batch_size=500, cleanup_enabled=False, max_per_user=0)
    manager = SessionManager(RedisStore(url), settings=settings, clock=clock)
    store = manager.store
    assert isinstance(store, RedisStore)
    client: Any = store.client
    count = CommandCount([redis.Redis.from_url(url)])
    await client.flushall()
    before = (await client.info("memory"))["used_memory"]
    count.reset()
    ids = []
    for start in range(0, n, 200):
        batch = [manager.create_session(f"user-{i // 2}", DATA) for i in range(start, min(start + 200, n))]
        ids += [s.session_id for s in await asyncio.gather(*batch)]
    per_create = count.read() / n
    after = (await client.info("memory"))["used_memory"]
    shard = store.shard_for(ids[0])
    assert shard is not None
    hash_bytes = await client.memory_usage(shard.key(ids[0]))
    count.reset()
    for i, sid in enumerate(ids):
        await manager.update_session(sid, DATA | {"step": 4}, user_id=f"user-{i // 2}")
    per_update = count.read() / n
    count.reset()
    for i, sid in enumerate(ids[: n // 10]):
        assert await manager.delete_session(sid, user_id=f"user-{i // 2}")
    per_delete = count.read() / (n // 10)
    clock.advance(minutes=31)
    count.reset()
    removed = await manager.cleanup_inactive_sessions()
    per_cleaned = count.read() / removed
    reads = await commands_per_read(url, count)  # on 60 sessions of its own
    # Redis' own time per read (the script and its commands; the last group read, anonymous heartbeats).
    usec_per_read = count.masters[0].info("commandstats")["cmdstat_evalsha"]["usec_per_call"]
    await manager.close()
    return {
        "sessions": n,
        "bytes_per_session": (after - before) / n,
        "session_hash_bytes": hash_bytes,
        "redis_commands_per_create": per_create,
        **{f"redis_commands_per_{kind.replace(' ', '_')}": value for kind, value in reads.items()},
        "redis_commands_per_update": per_update,
        "redis_commands_per_delete": per_delete,
        "redis_usec_per_read": usec_per_read,
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
