"""A user's sessions: list and revoke cost what the user holds, not what is stored; rotation and a
session-end listener add little to a cleanup (both gated in ci/perf_gate.py)."""

from __future__ import annotations

import asyncio
import gc
import random
import time
from typing import Any

import pytest

from faultmaven.config import Settings
from faultmaven.session import SessionEnd
from faultmaven.session_management import SessionManager
from faultmaven.stores import MemoryStore
from tests.performance.conftest import TIMEOUT_S, populated_manager, record, session_ids
from tests.support import FakeClock

USER_SESSIONS = 10


_WITH_USER: dict[int, SessionManager] = {}


def with_user(loop: asyncio.AbstractEventLoop, stored: int) -> SessionManager:
    """`stored` anonymous live sessions, then one user with 10 of their own; built once for the list and
    the revoke benchmark on the same size (the revoke benchmark, which runs last, releases it)."""
    if stored not in _WITH_USER:
        manager, _ = populated_manager(loop, expired=0, live=stored)
        for _ in range(USER_SESSIONS):
            loop.run_until_complete(manager.create_session("ursula"))
        _WITH_USER[stored] = manager
    return _WITH_USER[stored]


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
    del _WITH_USER[stored]


def aged_heap(n: int) -> None:
    """Free `n` objects of each size a session uses in random order, as a server that has run a while
    has: new sessions then lie scattered in memory, not in the order a cleanup walks them."""
    junk = [(float(i), (i,) * 7, (i,) * 9, str(i) * 8) for i in range(n)]
    random.Random(7).shuffle(junk)
    del junk


def twin_managers(loop: asyncio.AbstractEventLoop, n: int) -> tuple[SessionManager, SessionManager, FakeClock]:
    """Two managers whose stores were filled in lockstep with the same ids, so that their sessions lie
    interleaved in memory: where a store's nodes lie moves a 100k cleanup by up to 2x here, in both alike."""
    clock, settings = FakeClock(), Settings(cleanup_batch_size=50, cleanup_enabled=False)
    managers = [SessionManager(MemoryStore(), settings=settings, clock=clock) for _ in range(2)]
    now = clock.now
    aged_heap(3 * n)

    async def fill() -> None:
        for sid in session_ids(n):
            for manager in managers:
                await manager.store.create(record(sid, now), now)

    loop.run_until_complete(fill())
    return managers[0], managers[1], clock


async def rotate_every_tenth(manager: SessionManager) -> None:
    """Rotate a tenth of the sessions, and let the listener have those endings here, not in a cleanup."""
    for sid in session_ids(100_000)[::10]:
        await manager.rotate_session(sid)
    await manager.flush_session_ends()


def test_cleanup_100k_with_rotation_and_listener(benchmark: Any, loop: asyncio.AbstractEventLoop) -> None:
    """100,000 expired sessions, a tenth of them rotated and a listener registered (the listener is called
    after the cleanup, by the dispatcher), against the same cleanup of a plain twin store in the same round.
    Which of the two runs first alternates (the second ran ~5% slower here); the benchmark's own time is
    both cleanups, the gate takes the median of the 15 per-round ratios (one round's ratio ranges 0.8x-2x)."""
    benchmark.group = "cleanup 100k expired: rotated and listened to, and its plain twin"
    benchmark.extra_info.update(kind="cleanup-rotated-listened", n=100_000, live=0, paired_plain_s=[], paired_s=[])
    ended = [0]  # a count, not the events: kept objects would add work to every later GC pass
    previous: list[SessionManager] = []

    def listener(end: SessionEnd) -> None:
        ended[0] += 1

    def cleanup(manager: SessionManager) -> float:
        started = time.perf_counter()
        assert loop.run_until_complete(manager.cleanup_inactive_sessions()) == 100_000
        return time.perf_counter() - started

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        while previous:  # the last round's listener deliveries end here, untimed, not inside this round
            loop.run_until_complete(previous.pop().close())
        plain, extras, clock = twin_managers(loop, 100_000)
        previous.append(extras)
        extras.add_session_end_listener(listener)
        loop.run_until_complete(rotate_every_tenth(extras))
        clock.advance(TIMEOUT_S)  # both share the clock: every session is now past its timeout
        gc.collect()
        return (plain, extras), {}

    def run(plain: SessionManager, extras: SessionManager) -> None:
        info = benchmark.extra_info
        if len(info["paired_s"]) % 2:
            info["paired_s"].append(cleanup(extras))
            loop.run_until_complete(previous.pop().close())  # its deliveries must not run inside the next
            info["paired_plain_s"].append(cleanup(plain))
        else:
            info["paired_plain_s"].append(cleanup(plain))
            info["paired_s"].append(cleanup(extras))

    benchmark.pedantic(run, setup=setup, rounds=15, iterations=1)
    while previous:
        loop.run_until_complete(previous.pop().close())
