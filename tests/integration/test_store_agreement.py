"""The in-memory store and the Redis store agree, answer for answer, on a long random script of operations
driven by one fake clock: creates (with timeouts, users and resumable clients), reads by owner and by
others, updates, merge patches and conditional writes (the same data bytes, versions, conflicts and size
refusals), deletes, cleanups of both kinds, and the metrics after every step."""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any

from faultmaven.config import Settings
from faultmaven.exceptions import SessionDataTooLargeError, SessionNotFoundError, SessionVersionConflict
from faultmaven.session import Session
from faultmaven.session_management import SessionManager
from faultmaven.stores import MemoryStore
from faultmaven.stores.redis.store import RedisStore
from tests.support import FakeClock

STEPS = 2500
USERS = [None, "alice", "bob"]
CLIENTS = [None, "client-one", "client-two", "client-three"]
OPS = ["create", "get", "touch", "update", "merge", "delete", "clock", "cleanup"]
WEIGHTS = [5, 4, 3, 2, 3, 1, 3, 1]


class Twin:
    """One operation on both managers; sessions are named by their position in creation order."""

    def __init__(self, memory: SessionManager, redis: SessionManager) -> None:
        self.managers = (memory, redis)
        self.ids: list[tuple[str, str]] = []
        self.outcomes: Counter[str] = Counter()  # what the writes did, so the script is known to cover it

    def name(self, side: int, session: Session | None) -> Any:
        if session is None:
            return None
        sid = session.session_id
        position = next((i for i, pair in enumerate(self.ids) if pair[side] == sid), None)
        if position is None:
            assert not session.session_resumed
            return "new"
        data = json.dumps(session.data)  # the same keys in the same order: the stores keep the same bytes
        fields = (session.user_id, session.client_id, data, session.version, session.metadata, session.timeout_minutes)
        return position, session.session_resumed, fields, session.last_activity, session.expires_at

    async def create(self, **kwargs: Any) -> None:
        made = [await m.create_session(**kwargs) for m in self.managers]
        names = [self.name(side, s) for side, s in enumerate(made)]
        assert names[0] == names[1], f"create disagrees: {names}"
        if names[0] == "new":
            self.ids.append((made[0].session_id, made[1].session_id))

    async def call(self, method: str, index: int, **kwargs: Any) -> None:
        answers = []
        for side, manager in enumerate(self.managers):
            sid = self.ids[index][side]
            try:
                result = await getattr(manager, method)(sid, **kwargs)
            except SessionNotFoundError:
                result = "not found"
            except SessionVersionConflict as conflict:
                result = ("conflict", conflict.current_version)
            except SessionDataTooLargeError as refused:
                result = ("too large", refused.size)
            answers.append(self.name(side, result) if isinstance(result, Session) else result)
        assert answers[0] == answers[1], f"{method} disagrees: {answers}"
        if method == "update_session":
            outcome = answers[0]
            refused = isinstance(outcome, tuple) and outcome[0] in ("conflict", "too large")
            self.outcomes[outcome if isinstance(outcome, str) else outcome[0] if refused else "written"] += 1

    async def same(self, method: str, *args: Any) -> None:
        answers = [await getattr(m, method)(*args) for m in self.managers]
        assert answers[0] == answers[1], f"{method} disagrees: {answers}"

    async def metrics(self) -> None:
        await self.managers[1].refresh_store_stats()
        keys = ("active_sessions", "expired_sessions", "sessions_cleaned_total", "sessions_created_total")
        keys += ("sessions_resumed_total",)
        answers = [{k: m.get_session_metrics()[k] for k in keys} for m in self.managers]
        assert answers[0] == answers[1], f"metrics disagree: {answers}"


def random_value(rng: random.Random, depth: int = 0) -> Any:
    """A JSON value for a merge patch: nulls (removals), nested objects (merges), arrays, empty containers,
    numbers a double cannot hold and strings that need escaping."""
    kind = rng.choice(["null", "int", "big", "float", "text", "list", "empty", "object", "object"][: 9 - 2 * depth])
    if kind == "object":
        return {rng.choice("abcd"): random_value(rng, depth + 1) for _ in range(rng.randrange(3))}
    if kind == "list":
        return [random_value(rng, 2) for _ in range(rng.randrange(3))]
    return {
        "null": None,
        "int": rng.randrange(-9, 10),
        "big": rng.choice([2**64 + 1, -(2**63) - 7, 10**30]),
        "float": rng.choice([0.1 + 0.2, 1e300, -5e-324, 2.5]),
        "text": rng.choice(["", 'q"\\', "é\u2028", "x" * 40, "y" * 185]),
        "empty": rng.choice([[], {}]),
    }[kind]


async def test_memory_and_redis_agree_on_a_long_random_script(redis_url: str) -> None:
    rng = random.Random(20261126)
    clock = FakeClock()
    settings = Settings(
        timeout_minutes=1,
        min_timeout_minutes=0.5,
        absolute_timeout_minutes=4,
        cleanup_batch_size=4,
        cleanup_enabled=False,
        max_data_bytes=200,  # merges that grow past it are refused on both stores alike
    )
    memory = SessionManager(MemoryStore(), settings=settings, clock=clock)
    redis = SessionManager(RedisStore(redis_url), settings=settings, clock=clock)
    twin = Twin(memory, redis)
    try:
        for _ in range(STEPS):
            op = rng.choices(OPS, WEIGHTS)[0]
            if op == "create" or not twin.ids:
                await twin.create(
                    user_id=rng.choice(USERS),
                    client_id=rng.choice(CLIENTS),
                    timeout_minutes=rng.choice([None, 0.5, 1.5, 3, 6]),
                    data={"n": rng.randrange(100)},
                )
            elif op == "clock":
                clock.advance(rng.choice([0.5, 5, 20, 30, 60, 90]))
            elif op == "cleanup":
                await twin.same("cleanup_inactive_sessions", rng.choice([None, None, 0, 0.75, 2]))
            else:
                # Mostly recent sessions: the ones near their deadlines, where stores could disagree.
                index = max(0, len(twin.ids) - 1 - int(rng.expovariate(0.15)))
                user = rng.choice(USERS)
                if_version = rng.choice([None, None, 1, 2, 3, 4])  # matches sometimes, conflicts other times
                if op == "update":
                    data = {"u": rng.randrange(100)}
                    await twin.call("update_session", index, data=data, user_id=user, if_version=if_version)
                elif op == "merge":
                    patch = {rng.choice("abcdu"): random_value(rng) for _ in range(rng.randrange(1, 4))}
                    kwargs = {"user_id": user, "if_version": if_version, "merge": True}
                    await twin.call("update_session", index, data=patch, **kwargs)
                elif op == "delete":
                    await twin.call("delete_session", index, user_id=user)
                else:
                    await twin.call(f"{op}_session", index, user_id=user)
            await twin.metrics()
        assert min(twin.outcomes[k] for k in ("written", "not found", "conflict", "too large")) > 5, twin.outcomes
        assert len(twin.ids) > 300 and memory.get_session_metrics()["sessions_cleaned_total"] > 100
    finally:
        await memory.close()
        await redis.close()
