"""The service's errors as HTTP answers inside a host app that formats errors its own way: the session
routes' HTTPException-like answers go through the host's handlers, their own shapes (412, store full) stay,
and the host's own exceptions are never taken over by faultmaven's handlers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from faultmaven.config import Settings
from faultmaven.embed import install
from faultmaven.session_management import SessionManager
from faultmaven.stores import MemoryStore
from tests.support import FakeClock

API = "/api/v1/sessions"


def _host(manager: SessionManager) -> FastAPI:
    app = FastAPI()

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, exc.status_code, exc.headers)

    @app.exception_handler(413)
    async def too_large(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": "too large"}, 413)

    @app.get("/own")
    async def own() -> None:
        raise ValueError("the host's own bug")

    install(app, manager=manager)
    return app


@pytest.fixture
async def host(clock: FakeClock) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(cleanup_enabled=False, max_data_bytes=100, max_memory_mb=1)
    app = _host(SessionManager(MemoryStore(max_bytes=3000), settings=settings, clock=clock))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://host") as client:
            yield client


async def test_not_found_and_invalid_answer_in_the_host_format(host: httpx.AsyncClient) -> None:
    missing = f"{API}/{'A' * 43}"
    for answer in (await host.get(missing), await host.post(f"{missing}/rotate"), await host.delete(missing)):
        assert (answer.status_code, answer.json()) == (404, {"error": "session not found"})
    answer = await host.post(API, json={"timeout_minutes": 10_000})
    assert answer.status_code == 422 and answer.json()["error"].startswith("timeout_minutes must be between")
    answer = await host.post(API, json={"data": {"k": "v" * 200}})
    assert (answer.status_code, answer.json()) == (413, {"error": "too large"})  # the host's status handler


async def test_conflict_and_store_full_keep_their_own_shape(host: httpx.AsyncClient) -> None:
    created = await host.post(API, json={"data": {"k": 1}})
    answer = await host.patch(f"{API}/{created.json()['session_id']}", json={"data": {}}, headers={"If-Match": '"9"'})
    assert answer.status_code == 412 and answer.headers["ETag"] == '"1"' and answer.json()["version"] == 1
    statuses = [(await host.post(API, json={"data": {"k": "v" * 80}})).status_code for _ in range(40)]
    assert 503 in statuses
    full = await host.post(API, json={"data": {"k": "v" * 80}})
    expected = {"type": "about:blank", "title": "Service Unavailable", "status": 503}
    assert full.json() == expected | {"detail": "session store full, retry later"}
    assert full.headers["Retry-After"] == "30" and full.headers["content-type"] == "application/problem+json"


async def test_the_host_own_value_error_is_not_a_422(host: httpx.AsyncClient) -> None:
    assert (await host.get("/own")).status_code == 500
