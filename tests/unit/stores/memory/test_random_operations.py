"""Thousands of seeded random operations against a plain model, checked after every step through the
public API: what is live, the expired count, each user's list in order, what a cleanup removes and why.
Cheap enough to run once per mutant (`tox -e mutation`), it reaches the list surgery (rotation in the
middle of every list, removals at a counting frontier, a batch that stops mid-lane) that a small
state-machine profile rarely does."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import pytest

from faultmaven.config import Settings
from faultmaven.session import SessionEnd
from faultmaven.session_management import SessionManager
from faultmaven.stores import MemoryStore
from tests.support import FakeClock

ABSOLUTE_S = 600.0
USERS = [None, "ann", "bob"]
CLIENTS = [None, "client-01", "client-02"]


@dataclass
class Model:
    user: str | None
    client: str | None
    created: float
    active: float
    timeout: float
    touched: int  # order of the last activity, for ties at the same instant

    def expired(self, now: float) -> bool:
        return now >= min(self.active + self.timeout, self.created + ABSOLUTE_S)

    def due(self, now: float, max_idle: float | None) -> bool:
        return self.expired(now) or (max_idle is not None and now - self.active >= max_idle)


@pytest.mark.parametrize("seed", range(4))
async def test_random_operations_agree_with_a_plain_model(seed: int) -> None:
    rng = random.Random(seed)
    clock = FakeClock()
    settings = Settings(
        cleanup_enabled=False, cleanup_batch_size=3, max_per_user=0, absolute_timeout_minutes=ABSOLUTE_S / 60
    )
    manager = SessionManager(MemoryStore(), settings=settings, clock=clock)
    ended: list[SessionEnd] = []
    manager.add_session_end_listener(ended.append)
    model: dict[str, Model] = {}
    reasons: Counter[str] = Counter()

    def live(sid: str) -> bool:
        return sid in model and not model[sid].expired(clock.now)

    for tick in range(1, 701):
        now, op = clock.now, rng.random()
        known = list(model) or ["x" * 43]
        if op < 0.25:
            user, client = rng.choice(USERS), rng.choice(CLIENTS)
            pair = [s for s, m in model.items() if (m.user, m.client) == (user, client) and client and live(s)]
            session = await manager.create_session(user, client_id=client, timeout_minutes=rng.choice([1, 2, 4]))
            if pair:
                assert session.session_resumed and session.session_id == pair[0]
                model[pair[0]].active, model[pair[0]].touched = now, tick
            else:
                assert not session.session_resumed
                timeout = session.timeout_minutes * 60
                model[session.session_id] = Model(user, client, now, now, timeout, tick)
        elif op < 0.45:
            sid = rng.choice(known)
            assert (await manager.touch_session(sid) is not None) == live(sid)
            if live(sid):
                model[sid].active, model[sid].touched = now, tick
        elif op < 0.52:
            sid = rng.choice(known)
            assert await manager.delete_session(sid) == live(sid)
            if sid in model:
                reasons["deleted"] += 1
                del model[sid]
        elif op < 0.60:
            sid = rng.choice(known)
            if live(sid):
                new = (await manager.rotate_session(sid)).session_id
                model[new] = model.pop(sid)
                reasons["rotated"] += 1
        elif op < 0.63:
            user = rng.choice(USERS[1:])
            mine = [s for s, m in model.items() if m.user == user]
            assert await manager.revoke_user_sessions(user) == sum(live(s) for s in mine)
            for s in mine:
                reasons["revoked" if live(s) else "expired"] += 1
                del model[s]
        elif op < 0.73:
            max_age = rng.choice([None, None, 1.0, 2.5])
            max_idle = None if max_age is None else max_age * 60
            due = [s for s, m in model.items() if m.due(now, max_idle)]
            assert await manager.cleanup_inactive_sessions(max_age) == len(due)
            for s in due:
                reasons["expired" if model[s].expired(now) else "idle"] += 1
                del model[s]
        else:
            clock.advance(rng.choice([0, 1, 15, 30, 45, 60, 90]))
        now = clock.now
        metrics = manager.get_session_metrics()
        expected_expired = sum(m.expired(now) for m in model.values())
        assert (metrics["active_sessions"], metrics["expired_sessions"]) == (
            len(model) - expected_expired,
            expected_expired,
        )
        if tick % 10 == 0:
            for user in USERS[1:]:
                mine = sorted(
                    (s for s, m in model.items() if m.user == user and live(s)), key=lambda s: -model[s].touched
                )
                assert [s.session_id for s in await manager.list_user_sessions(user, limit=1000)] == mine
    await manager.flush_session_ends()
    assert Counter(e.reason for e in ended) == reasons
    await manager.close()
