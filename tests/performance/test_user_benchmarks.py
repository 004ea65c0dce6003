"""A user's sessions: list and revoke cost what the user holds, not what is stored; rotation and a
session-end listener add little to a cleanup (both gated in ci/perf_gate.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from faultmaven.session import SessionEnd
from faultmaven.session_management import SessionManager
from tests.performance.conftest import TIMEOUT_S, populated_manager, rounds_for

USER_SESSIONS = 10


def with_user(loop: asyncio.AbstractEventLoop, stored: int) -> SessionManager:
    """`stored` anonymous live sessions, then one user with 10 of their own."""
    manager, _ = populated_manager(loop, expired=0, live=stored)
    for _ in range(USER_SESSIONS):
        loop.run_until_complete(manager.create_session("ursula"))
    return manager


@pytest.mark.parametrize("stored", [1_000, 1_000_000])
def test_list_user_sessions(benchmark: Any, loop: asyncio.AbstractEventLoop, stored: int) -> None:
    benchmark.group = "a user's 10 sessions among stored"
    benchmark.extra_info.update(kind="user-list", n=USER_SESSIONS, live=stored)
    manager = with_user(loop, stored)

    def run() -> None:
        assert len(loop.run_until_complete(manager.list_user_sessions("ursula"))) == USER_SESSIONS

    benchmark.pedantic(run, rounds=200, iterations=1)


@pytest.mark.parametrize("stored", [1_000, 1_000_000])
def test_revoke_user_sessions(benchmark: Any, loop: asyncio.AbstractEventLoop, stored: int) -> None:
    benchmark.group = "a user's 10 sessions among stored"
    benchmark.extra_info.update(kind="user-revoke", n=USER_SESSIONS, live=stored)
    manager = with_user(loop, stored)

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        for _ in range(USER_SESSIONS):
            loop.run_until_complete(manager.create_session("ursula"))
        return (), {}

    def run() -> None:
        assert loop.run_until_complete(manager.revoke_user_sessions("ursula")) == USER_SESSIONS

    loop.run_until_complete(manager.revoke_user_sessions("ursula"))
    benchmark.pedantic(run, setup=setup, rounds=200, iterations=1)


@pytest.mark.parametrize("extras", [False, True])
def test_cleanup_100k_with_rotation_and_listener(benchmark: Any, loop: asyncio.AbstractEventLoop, extras: bool) -> None:
    """100,000 expired sessions; with `extras` a tenth of them were rotated and a listener is registered
    (the cleanup is timed; the listener is called after it, by the dispatcher)."""
    benchmark.group = "cleanup 100k expired: plain, or rotated and listened to"
    benchmark.extra_info.update(kind="cleanup-rotated-listened" if extras else "cleanup-plain", n=100_000, live=0)
    ended = [0]  # a count, not the events: kept objects would add work to every later GC pass
    previous: list[SessionManager] = []

    def listener(end: SessionEnd) -> None:
        ended[0] += 1

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        while previous:  # the last round's listener deliveries end here, untimed, not inside this round
            loop.run_until_complete(previous.pop().close())
        manager, clock = populated_manager(loop, expired=0, live=100_000)
        previous.append(manager)
        if extras:
            manager.add_session_end_listener(listener)
            ids = list(manager.store._index)[::10]  # type: ignore[attr-defined]
            for sid in ids:
                loop.run_until_complete(manager.rotate_session(sid))
        clock.advance(TIMEOUT_S)  # every session is now past its timeout
        return (manager,), {}

    def run(manager: SessionManager) -> None:
        assert loop.run_until_complete(manager.cleanup_inactive_sessions()) == 100_000

    benchmark.pedantic(run, setup=setup, rounds=rounds_for(100_000), iterations=1)
