"""Redis commands per request, counted by the servers themselves: INFO commandstats of every master counts
a script's EVALSHA and each command it runs. Through the manager on one redis-server and on the local
cluster: 60 sessions, two thirds of users and half with a client id, each read 5 times with the clock 10 s
further each time. ci/perf_gate.py fails if a read or a heartbeat, signed-in or not, takes more than 4.
perf/redis_capacity.py prints the same counts for every operation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

import pytest
import redis

from faultmaven.config import Settings
from faultmaven.session_management import SessionManager
from faultmaven.stores.redis.store import RedisStore
from tests.support import FakeClock

SESSIONS, READS, STEP_S = 60, 5, 10.0
NOT_COUNTED = ("cmdstat_info", "cmdstat_config", "cmdstat_replconf")  # the measurement's, the replicas' acks


class CommandCount:
    """The commands the masters ran since the last reset, the measurement's own aside."""

    def __init__(self, masters: Sequence[redis.Redis]) -> None:
        self.masters = masters

    def reset(self) -> None:
        for master in self.masters:
            master.config_resetstat()

    def read(self) -> int:
        stats = [master.info("commandstats") for master in self.masters]
        return sum(v["calls"] for s in stats for k, v in s.items() if not k.startswith(NOT_COUNTED))


async def per_call(count: CommandCount, calls: Sequence[Callable[[], Awaitable[Any]]], clock: FakeClock) -> float:
    """Commands per call, each call made READS times with the clock STEP_S further each time."""
    count.reset()
    for _ in range(READS):
        clock.advance(seconds=STEP_S)
        for call in calls:
            assert await call() is not None
    return count.read() / (READS * len(calls))


async def commands_per_read(url: str, count: CommandCount) -> dict[str, float]:
    """Commands per GET and per heartbeat, for signed-in sessions and for the others."""
    clock = FakeClock()
    manager = SessionManager(RedisStore(url), settings=Settings(cleanup_enabled=False), clock=clock)
    try:
        signed, anonymous = [], []
        for i in range(SESSIONS):
            user = f"user-{i % 20}" if i % 3 else None
            client = f"client-{i}" if i % 2 else None
            session = await manager.create_session(user, {"step": i}, client_id=client)
            (signed if user else anonymous).append((session.session_id, user))
        result = {}
        for group, sessions in (("signed-in", signed), ("anonymous", anonymous)):
            for kind, read in (("get", manager.get_session), ("heartbeat", manager.touch_session)):
                calls = [partial(read, sid, user_id=user) for sid, user in sessions]
                result[f"{kind} {group}"] = await per_call(count, calls, clock)
        return result
    finally:
        await manager.close()


@pytest.mark.parametrize("where", ["redis", "redis-cluster"])
def test_redis_commands_per_read(benchmark: Any, request: pytest.FixtureRequest, where: str) -> None:
    backend = request.getfixturevalue("redis_server" if where == "redis" else "redis_cluster")
    backend.flush()
    if where == "redis":
        masters = [redis.Redis.from_url(backend.url)]
    else:
        masters = [redis.Redis(port=port) for port in backend.masters()]
    counts: dict[str, float] = {}

    def run() -> None:
        counts.update(asyncio.run(commands_per_read(backend.url, CommandCount(masters))))

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.group = "redis commands per request"
    benchmark.extra_info.update(kind=f"{where}-commands-per-read", n=SESSIONS, live=0, commands=counts)
    for master in masters:
        master.close()
