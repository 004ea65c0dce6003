"""faultmaven.embed.install in a host app with routes and a lifespan of its own, served by a real uvicorn:
both work side by side, at the paths the host chose, and the cleanup scheduler lives and dies with the app."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request

from faultmaven.config import Settings
from faultmaven.embed import install
from faultmaven.session_management import SessionManager

MOUNT = "/fm"
API = f"{MOUNT}/api/v1/sessions"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _host_app(events: list[str]) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        manager: SessionManager = app.state.session_manager  # already there when the host starts
        events.append(f"host started, scheduler {manager.get_session_metrics()['scheduler_running']}")
        yield {"greeting": "hello"}
        events.append(f"host stopping, scheduler {manager.get_session_metrics()['scheduler_running']}")

    app = FastAPI(lifespan=lifespan)

    @app.get("/health")
    async def own_health() -> dict[str, str]:
        return {"host": "ok"}

    @app.get("/items")
    async def items(request: Request) -> dict[str, str]:
        return {"greeting": request.state.greeting}

    @app.post("/upload")
    async def upload(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    return app


async def test_install_serves_sessions_beside_the_host_app() -> None:
    events: list[str] = []
    app = _host_app(events)
    settings = Settings(cleanup_enabled=True, cleanup_interval_minutes=60)
    install(app, settings=settings, mount_path=MOUNT, health_path="/fm/health", metrics_path="/fm/metrics")
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_config=None))
    serving = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(20):
            while not server.started:
                assert not serving.done(), "the server stopped"
                await asyncio.sleep(0.01)
        manager: SessionManager = app.state.session_manager
        assert manager.settings is settings
        assert manager.get_session_metrics()["scheduler_running"] is True
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            assert (await client.get("/health")).json() == {"host": "ok"}
            assert (await client.get("/items")).json() == {"greeting": "hello"}
            big = b"x" * (6 * 1024 * 1024)  # over the session routes' body limit: the host's routes keep theirs
            assert (await client.post("/upload", content=big)).json() == {"bytes": len(big)}

            created = await client.post(API, json={"data": {"a": 1}})
            assert created.status_code == 201
            sid = created.json()["session_id"]
            assert created.headers["location"] == f"{API}/{sid}"
            assert (await client.get(created.headers["location"])).json()["data"] == {"a": 1}
            rotated = await client.post(f"{API}/{sid}/rotate")
            assert rotated.headers["location"] == f"{API}/{rotated.json()['session_id']}"
            sid = rotated.json()["session_id"]
            json_type = {"content-type": "application/json"}
            refused = await client.patch(f"{API}/{sid}", content=b"{" + big, headers=json_type)
            assert refused.status_code == 413

            health = await client.get("/fm/health")
            assert health.status_code == 200 and "session_manager" in health.json()["services"]
            metrics = await client.get("/fm/metrics")
            assert metrics.headers["content-type"].startswith("text/plain")
            assert "faultmaven_sessions_active 1.0" in metrics.text
            assert (await client.get(f"{API}/metrics")).json()["active_sessions"] == 1
    finally:
        server.should_exit = True
        async with asyncio.timeout(20):
            await serving
    assert manager.get_session_metrics()["scheduler_running"] is False
    # The host's lifespan ran inside the sessions': started after the manager, stopped before it.
    assert events == ["host started, scheduler True", "host stopping, scheduler True"]


async def test_install_keeps_a_host_lifespan_without_state_and_leaves_out_health_and_metrics() -> None:
    started: list[bool] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        started.append(True)
        yield

    app = FastAPI(lifespan=lifespan)
    manager = SessionManager(settings=Settings(cleanup_enabled=False))
    install(app, manager=manager, health_path=None, metrics_path=None)
    async with app.router.lifespan_context(app) as state:
        assert state is None and started == [True]
        assert app.state.session_manager is manager
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            assert (await client.post("/api/v1/sessions")).status_code == 201
            assert (await client.get("/health")).status_code == 404
            assert (await client.get("/metrics")).status_code == 404
        assert manager.get_session_metrics()["scheduler_running"] is False
