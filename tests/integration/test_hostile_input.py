"""Hostile input over HTTP: schemathesis finds no 5xx; malformed ids, huge and deeply nested payloads,
wrong content types each get a clear 4xx and lose nothing."""

from __future__ import annotations

import httpx
import pytest

from faultmaven.config import Settings
from faultmaven.main import create_app
from faultmaven.session_management import SessionManager
from faultmaven.stores import MemoryStore
from tests.support import FakeClock

API = "/api/v1/sessions"

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is in the test extras")
_settings = Settings(cleanup_enabled=False, admin_token="t" * 32)
_manager = SessionManager(MemoryStore(), settings=_settings, clock=FakeClock())
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(manager=_manager))


@schema.parametrize()
def test_no_server_errors(case: object) -> None:
    from schemathesis.checks import not_a_server_error

    case.call_and_validate(checks=[not_a_server_error])  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("body", "headers", "expected"),
    [
        (b"{not json", {"content-type": "application/json"}, 422),
        (b'{"data": {}}', {"content-type": "text/plain"}, 422),
        (b"data=1", {"content-type": "application/x-www-form-urlencoded"}, 422),
        (b'{"data": ' + b"[" * 200_000 + b"]" * 200_000 + b"}", {"content-type": "application/json"}, 400),
        (b'{"data": {"x": "' + b"y" * 5_000_000 + b'"}}', {"content-type": "application/json"}, 413),
        (b'{"user_id": null, "data": null, "extra": 1}', {"content-type": "application/json"}, 422),
    ],
    ids=["broken-json", "text-plain", "form", "nested-200k", "5MB", "unknown-field"],
)
async def test_bad_bodies_get_a_clear_4xx(
    client: httpx.AsyncClient, body: bytes, headers: dict[str, str], expected: int
) -> None:
    response = await client.post(API, content=body, headers=headers)
    assert response.status_code == expected, response.text[:200]
    assert "detail" in response.json()
    assert (await client.get(f"{API}/metrics")).json()["active_sessions"] == 0


async def test_deeply_nested_data_within_json_limits_is_refused_cleanly(client: httpx.AsyncClient) -> None:
    for depth in (900, 5000):  # below and above the JSON parser's own nesting limit
        body = '{"data": ' + '{"d": ' * depth + "1" + "}" * depth + "}"
        response = await client.post(API, content=body, headers={"content-type": "application/json"})
        assert response.status_code in (400, 413, 422), response.text[:200]
    assert (await client.get(f"{API}/metrics")).json()["active_sessions"] == 0


@pytest.mark.parametrize("bad", ["x", "%00", "a" * 10_000, "..%2f..%2fetc", "' OR 1=1 --", "ä" * 43])
async def test_malformed_ids(client: httpx.AsyncClient, bad: str) -> None:
    sid = (await client.post(API, json={"data": {"keep": 1}})).json()["session_id"]
    for method, path in [("GET", f"{API}/{bad}"), ("POST", f"{API}/{bad}/heartbeat"), ("DELETE", f"{API}/{bad}")]:
        assert (await client.request(method, path)).status_code == 404
    assert (await client.patch(f"{API}/{bad}", json={"data": {}})).status_code == 404
    assert (await client.get(f"{API}/{sid}")).json()["data"] == {"keep": 1}


async def test_body_limit_follows_a_larger_data_limit(clock: FakeClock) -> None:
    from tests.conftest import open_client

    big = 6 * 1024 * 1024  # above the fixed 4 MiB body limit
    manager = SessionManager(MemoryStore(), settings=Settings(max_data_bytes=big, cleanup_enabled=False), clock=clock)
    async for client in open_client(manager):
        response = await client.post(API, json={"data": {"blob": "x" * (5 * 1024 * 1024)}})
        assert response.status_code == 201
        too_big = b'{"data": {"x": "' + b"y" * (2 * big + 70_000) + b'"}}'
        response = await client.post(API, content=too_big, headers={"content-type": "application/json"})
        assert response.status_code == 413
