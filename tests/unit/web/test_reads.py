"""GET of a session served ahead of the router (web/reads.py) answers exactly what the route answers:
the same status, headers and bytes for a live session and for every error, in the service's own app and
in a host app with its own error handlers, and the access log names the route's template."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from faultmaven.config import Settings
from faultmaven.embed import install
from faultmaven.exceptions import SessionStoreException
from faultmaven.main import create_app
from faultmaven.session import SessionRecord
from faultmaven.session_management import SessionManager
from faultmaven.stores import MemoryStore
from faultmaven.web import routes
from faultmaven.web.reads import SessionReads
from tests.support import FakeClock

API = "/api/v1/sessions"
OTHER = "b" * 43  # well formed, never issued


class FailingReads(MemoryStore):
    """A store whose reads of one id fail, as a store that is down does."""

    failing: str | None = None

    async def touch(self, session_id: str, now: float, user_id: str | None = None) -> SessionRecord | None:
        if session_id == self.failing:
            raise SessionStoreException("the store is down")
        return await super().touch(session_id, now, user_id)


def _host() -> FastAPI:
    """A host app that answers errors its own way, the session routes installed in it."""
    app = FastAPI()

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, exc.status_code, exc.headers)

    @app.exception_handler(404)
    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": "no such thing"}, 404)

    return app


def _apps(kind: str, manager: SessionManager) -> tuple[FastAPI, FastAPI]:
    """Two apps on one manager: the first reads ahead of the router, the second only through the route."""
    apps = []
    for _ in range(2):
        if kind == "service":
            apps.append(create_app(manager=manager))
        else:
            app = _host()
            install(app, manager=manager)
            apps.append(app)
    routed = apps[1]
    routed.user_middleware = [m for m in routed.user_middleware if m.cls is not SessionReads]
    return apps[0], routed


@pytest.fixture(params=["service", "host"])
async def clients(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[tuple[Any, Any, Any]]:
    settings = Settings(cleanup_enabled=False, user_header="X-User")
    store = FailingReads()
    manager = SessionManager(store, settings=settings, clock=clock)
    fast, routed = _apps(request.param, manager)
    async with fast.router.lifespan_context(fast):
        pair = []
        for app in (fast, routed):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            pair.append(httpx.AsyncClient(transport=transport, base_url="http://svc"))
        yield pair[0], pair[1], store
        for client in pair:
            await client.aclose()


def _answer(response: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    return response.status_code, sorted(response.headers.multi_items()), response.content


async def test_every_read_answers_as_the_route_does(clients: tuple[Any, Any, Any]) -> None:
    fast, routed, store = clients
    created = await fast.post(API, json={"metadata": {"a": 1}}, headers={"X-User": "ann"})
    assert created.status_code == 201
    sid = created.json()["session_id"]
    down = (await fast.post(API, json={}, headers={"X-User": "ann"})).json()["session_id"]
    store.failing = down
    reads = [
        (sid, {"X-User": "ann"}),  # the owner's live session
        (sid, {"X-User": "bob"}),  # another user's: not found
        (sid, {}),  # no identity: 401
        (sid, [("X-User", "ann"), ("X-User", "bob")]),  # the identity header twice: 400
        (sid, {"X-User": "u" * 1000}),  # a malformed user: 422
        (OTHER, {"X-User": "ann"}),  # unknown: 404
        (sid + "!", {"X-User": "ann"}),  # malformed id: the route's answer either way
        (down, {"X-User": "ann"}),  # the store fails: 503
    ]
    statuses = []
    for session_id, headers in reads:
        a = await fast.get(f"{API}/{session_id}", headers=headers)
        b = await routed.get(f"{API}/{session_id}", headers=headers)
        assert _answer(a) == _answer(b), (session_id[-3:], headers)
        statuses.append(a.status_code)
    assert statuses == [200, 404, 401, 400, 422, 404, 404, 503]


async def test_a_read_is_served_without_the_route(
    clients: tuple[Any, Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The power check: the route's own code runs only where the read is not served ahead of it."""
    fast, routed, _ = clients
    sid = (await fast.post(API, json={}, headers={"X-User": "ann"})).json()["session_id"]
    calls = []
    monkeypatch.setattr(routes, "found", lambda value: calls.append(value) or value)
    assert (await fast.get(f"{API}/{sid}", headers={"X-User": "ann"})).status_code == 200
    assert calls == []
    assert (await routed.get(f"{API}/{sid}", headers={"X-User": "ann"})).status_code == 200
    assert len(calls) == 1


async def test_the_access_log_names_the_route_template(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    manager = SessionManager(MemoryStore(), settings=Settings(cleanup_enabled=False), clock=clock)
    app = create_app(manager=manager)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://svc") as client,
    ):
        sid = (await client.post(API, json={})).json()["session_id"]
        with caplog.at_level(logging.INFO, logger="faultmaven.access"):
            assert (await client.get(f"{API}/{sid}")).status_code == 200
            assert (await client.get(f"{API}/{OTHER}")).status_code == 404
    records = [r for r in caplog.records if r.name == "faultmaven.access"]
    assert [(r.route, r.status) for r in records] == [(API + "/{session_id}", 200), (API + "/{session_id}", 404)]
