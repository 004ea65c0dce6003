"""CORS from SESSION_CORS_ORIGINS: the dashboard's preflight and requests from an allowed origin get the
headers; other origins get none; without the setting nothing CORS-related is sent."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from faultmaven.config import Settings
from faultmaven.exceptions import ConfigError
from faultmaven.session_management import SessionManager
from faultmaven.stores import MemoryStore
from tests.conftest import open_client
from tests.support import FakeClock

API = "/api/v1/sessions"
DASHBOARD = "https://dashboard.faultmaven.example"
PREFLIGHT = {
    "Origin": DASHBOARD,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization,content-type,x-session-id",
}


async def _client(clock: FakeClock, **settings: object) -> AsyncIterator[httpx.AsyncClient]:
    manager = SessionManager(MemoryStore(), settings=Settings(cleanup_enabled=False, **settings), clock=clock)
    async for client in open_client(manager):
        yield client


@pytest.fixture
async def cors_client(clock: FakeClock) -> AsyncIterator[httpx.AsyncClient]:
    env = Settings.from_env({"SESSION_CORS_ORIGINS": f"{DASHBOARD}, http://localhost:3000"})
    async for client in _client(clock, cors_origins=env.cors_origins, user_header="X-User-ID"):
        yield client


def _cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


def _listed(value: str) -> set[str]:
    return {item.strip().lower() for item in value.split(",")}


async def test_dashboard_preflight_and_request_get_the_headers(cors_client: httpx.AsyncClient) -> None:
    preflight = await cors_client.options(API, headers=PREFLIGHT)
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == DASHBOARD
    assert preflight.headers["access-control-allow-credentials"] == "true"
    assert _listed(preflight.headers["access-control-allow-methods"]) == {"get", "post", "patch", "delete"}
    allowed = _listed(preflight.headers["access-control-allow-headers"])
    assert {"authorization", "content-type", "x-session-id", "if-match", "x-user-id"} <= allowed

    created = await cors_client.post(
        API, json={"client_id": "dashboard-client-1"}, headers={"Origin": DASHBOARD, "X-User-ID": "alice"}
    )
    assert created.status_code == 201
    assert created.headers["access-control-allow-origin"] == DASHBOARD
    assert created.headers["access-control-allow-credentials"] == "true"
    assert _listed(created.headers["access-control-expose-headers"]) == {"location", "etag", "retry-after"}
    assert "origin" in _listed(created.headers["vary"])


async def test_another_origin_gets_no_cors_headers(cors_client: httpx.AsyncClient) -> None:
    other = "https://evil.example"
    preflight = await cors_client.options(API, headers=PREFLIGHT | {"Origin": other})
    assert _cors_headers(preflight) == {}
    created = await cors_client.post(API, json={}, headers={"Origin": other, "X-User-ID": "alice"})
    assert created.status_code == 201
    assert _cors_headers(created) == {}
    assert "origin" in _listed(created.headers["vary"])  # a cache keeps it apart from an allowed origin's


async def test_without_the_setting_nothing_cors_is_sent(clock: FakeClock) -> None:
    async for client in _client(clock):
        preflight = await client.options(API, headers=PREFLIGHT)
        created = await client.post(API, json={}, headers={"Origin": DASHBOARD})
        assert created.status_code == 201
        for response in (preflight, created):
            assert _cors_headers(response) == {}
            assert "vary" not in response.headers


@pytest.mark.parametrize(
    "bad", ["*", "https://a.example/", "https://a.example/path", "ftp://a.example", "a.example", "https://a.example:0x"]
)
def test_a_bad_origin_is_a_config_error_naming_the_variable(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"^SESSION_CORS_ORIGINS="):
        Settings.from_env({"SESSION_CORS_ORIGINS": f"https://ok.example,{bad}"})


def test_origins_are_written_as_browsers_send_them() -> None:
    settings = Settings.from_env({"SESSION_CORS_ORIGINS": "HTTPS://Dash.Example:443 , http://[::1]:8080,,"})
    assert settings.cors_origins == ("https://dash.example", "http://[::1]:8080")
    assert Settings.from_env({"SESSION_CORS_ORIGINS": ""}).cors_origins == ()
