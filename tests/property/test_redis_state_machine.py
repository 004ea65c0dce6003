"""The same state machine against a real redis-server, with fewer examples (every step is a round trip)."""

from __future__ import annotations

import os

from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test

from tests.property import machine
from tests.redis_server import RedisServer


def test_session_state_machine_on_redis(redis_server: RedisServer) -> None:
    def fresh_store() -> machine.PeekableRedisStore:
        redis_server.flush()
        return machine.PeekableRedisStore(redis_server.url)

    examples = 150 if os.environ.get("HYPOTHESIS_PROFILE") == "ci" else 25
    before = machine.STEPS[0]
    run_state_machine_as_test(
        machine.build_machine(fresh_store, "RedisSessionMachine"), settings=settings(max_examples=examples)
    )
    print(f"redis state machine: {machine.STEPS[0] - before} steps")
