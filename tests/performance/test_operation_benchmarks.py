"""Per-operation cost of create, get and touch, and get_session_metrics at 1M sessions."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.performance.conftest import populated_manager

OPS = 1000  # operations per measured call; results are reported per operation by the gate and report
STORED = 100_000


@pytest.fixture(scope="module")
def busy(loop: asyncio.AbstractEventLoop) -> Any:
    manager, _ = populated_manager(loop, expired=0, live=STORED)
    return manager


@pytest.mark.parametrize("operation", ["create", "get", "touch"])
def test_operation_cost(benchmark: Any, loop: asyncio.AbstractEventLoop, busy: Any, operation: str) -> None:
    benchmark.group = f"operations ({STORED:,} stored, per {OPS} ops)"
    benchmark.extra_info.update(kind=f"op-{operation}", ops=OPS, n=STORED, live=STORED)
    ids = list(busy.store.index.frozen())[:OPS]
    data = {"case": "DB timeout", "step": 3}

    async def creates() -> None:
        for _ in range(OPS):
            await busy.create_session("user", data)

    async def gets() -> None:
        for sid in ids:
            assert await busy.get_session(sid) is not None

    async def touches() -> None:
        for sid in ids:
            assert await busy.touch_session(sid) is not None

    work = {"create": creates, "get": gets, "touch": touches}[operation]
    benchmark.pedantic(lambda: loop.run_until_complete(work()), rounds=20, iterations=1, warmup_rounds=1)


def test_metrics_at_1m_sessions(benchmark: Any, loop: asyncio.AbstractEventLoop) -> None:
    benchmark.group = "get_session_metrics at 1M sessions"
    benchmark.extra_info.update(kind="metrics", n=1_000_000, live=500_000)
    manager, _ = populated_manager(loop, expired=500_000, live=500_000)
    first = manager.get_session_metrics()  # the first read counts the expired prefix once
    assert (first["active_sessions"], first["expired_sessions"]) == (500_000, 500_000)
    result = benchmark(manager.get_session_metrics)
    assert result["expired_sessions"] == 500_000
