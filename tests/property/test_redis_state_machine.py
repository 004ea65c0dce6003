"""The same state machine against a real redis-server, with fewer examples (every step is a round trip)."""

from __future__ import annotations

import os

import pytest
from hypothesis import Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from faultmaven.stores.redis.lua_texts import SCRIPTS
from tests.property import machine
from tests.redis_server import RedisServer


@pytest.mark.parametrize("where", ["redis", "redis-cluster"])
def test_session_state_machine_on_redis(request: pytest.FixtureRequest, where: str) -> None:
    """On one node and on the local cluster (3 masters): the same machine, the same model."""
    server = request.getfixturevalue("redis_server" if where == "redis" else "redis_cluster")
    url = server.url if where == "redis" else request.getfixturevalue("cluster_url")

    def fresh_store() -> machine.PeekableRedisStore:
        server.flush()
        return machine.PeekableRedisStore(url)

    examples = (150 if where == "redis" else 60) if os.environ.get("HYPOTHESIS_PROFILE") == "ci" else 25
    before = machine.STEPS[0]
    run_state_machine_as_test(
        machine.build_machine(fresh_store, "RedisSessionMachine"), settings=settings(max_examples=examples)
    )
    print(f"redis state machine: {machine.STEPS[0] - before} steps")


class _RedisScriptVariant(machine.PeekableRedisStore):
    """The real RedisStore with one line of its touch script broken (the broken variants live here)."""

    broken_touch = ""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.scripts.register("touch", self.broken_touch)


_TOUCH = SCRIPTS["touch"]
_CHECK = "  if now >= deadline(fields) then return nil end\n"


class _RedisNoLazyExpiry(_RedisScriptVariant):
    broken_touch = _TOUCH.replace(_CHECK, "")


class _RedisExpiryOffByOne(_RedisScriptVariant):
    broken_touch = _TOUCH.replace(_CHECK, _CHECK.replace(">=", ">"))


class _RedisTouchPastAbsoluteLifetime(_RedisScriptVariant):
    idle_only = "tonumber(fields[ACTIVE]) + tonumber(fields[TIMEOUT])"
    broken_touch = _TOUCH.replace(_CHECK, _CHECK.replace("deadline(fields)", idle_only))


@pytest.mark.parametrize("broken", [_RedisNoLazyExpiry, _RedisExpiryOffByOne, _RedisTouchPastAbsoluteLifetime])
def test_redis_state_machine_catches(redis_server: RedisServer, broken: type[_RedisScriptVariant]) -> None:
    assert broken.broken_touch != _TOUCH, "the variant did not change the script"

    def fresh_store() -> machine.PeekableRedisStore:
        redis_server.flush()
        return broken(redis_server.url)

    power = settings(max_examples=500, deadline=None, database=None, phases=[Phase.generate])
    with pytest.raises(AssertionError):
        run_state_machine_as_test(machine.build_machine(fresh_store, f"{broken.__name__}Machine"), settings=power)
