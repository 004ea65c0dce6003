"""Repeated workloads for the leak tests, each taking the store or manager class to run against.

Each repeats its operation hundreds of times, so that a per-session or per-run leak piles up at one
allocation site, which is what pytest-memray's per-site leak limit can see.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from faultmaven.config import Settings
from faultmaven.main import create_app
from faultmaven.session_management import SessionManager
from faultmaven.stores import MemoryStore
from tests.support import FakeClock

DATA = {"case": "connection pool exhausted", "notes": "n" * 400}


def manager_for(store: MemoryStore, clock: FakeClock, manager_cls: type[SessionManager] = SessionManager) -> Any:
    settings = Settings(cleanup_batch_size=7, cleanup_enabled=False, max_per_user=0)  # one user, many sessions
    return manager_cls(store, settings=settings, clock=clock)


async def run_cycles(manager: SessionManager, clock: FakeClock, cycles: int, per_cycle: int) -> None:
    for _ in range(cycles):
        for _ in range(per_cycle):
            await manager.create_session("user", DATA)
        clock.advance(minutes=31)
        assert await manager.cleanup_inactive_sessions() == per_cycle


def create_expire_cleanup(store_cls: type[MemoryStore] = MemoryStore, cycles: int = 600, per_cycle: int = 10) -> None:
    clock = FakeClock()
    asyncio.run(run_cycles(manager_for(store_cls(), clock), clock, cycles, per_cycle))


def scheduler_start_stop(manager_cls: type[SessionManager] = SessionManager, times: int = 400) -> None:
    async def run() -> None:
        manager = manager_for(MemoryStore(), FakeClock(), manager_cls)
        for _ in range(times):
            await manager.start_cleanup_scheduler(60)
            await manager.stop_cleanup_scheduler()

    asyncio.run(run())


def http_create_heartbeat_delete(store_cls: type[MemoryStore] = MemoryStore, times: int = 300) -> None:
    async def run() -> None:
        manager = manager_for(store_cls(), FakeClock())
        app = create_app(manager=manager)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                for _ in range(times):
                    response = await client.post("/api/v1/sessions", json={"data": DATA})
                    sid = response.json()["session_id"]
                    assert (await client.post(f"/api/v1/sessions/{sid}/heartbeat")).status_code == 200
                    assert (await client.delete(f"/api/v1/sessions/{sid}")).status_code == 204

    asyncio.run(run())
