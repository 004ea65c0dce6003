"""The caller is checked before the body is read: an unauthenticated request with any body, however large
or broken, is refused without a byte of it read."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from faultmaven.config import Settings
from faultmaven.session_management import SessionManager
from faultmaven.stores import MemoryStore
from tests.conftest import open_client
from tests.support import FakeClock

API = "/api/v1/sessions"
MODES = {
    "gateway header": {"user_header": "X-User-ID"},
    "jwt": {"jwt_secret": "a-jwt-secret-of-at-least-32-bytes-long"},
}


class Body:
    """4 MiB of nested JSON, streamed; records whether anything read it."""

    def __init__(self) -> None:
        self.read = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(64):
            self.read += 1
            yield b"[" * 65536


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize(("method", "path"), [("POST", ""), ("PATCH", "/{sid}"), ("POST", "/{sid}/heartbeat")])
async def test_an_unauthenticated_request_is_refused_before_its_body_is_read(mode: str, method: str, path: str) -> None:
    settings = Settings(cleanup_enabled=False, **MODES[mode])  # type: ignore[arg-type]
    manager = SessionManager(MemoryStore(), settings=settings, clock=FakeClock())
    async for client in open_client(manager):
        sid = (await manager.create_session("alice")).session_id
        body = Body()
        headers = {"content-type": "application/json", "content-length": str(64 * 65536)}
        answer = await client.request(method, API + path.format(sid=sid), content=body, headers=headers)
        assert answer.status_code == 401 and answer.headers["content-type"] == "application/problem+json"
        assert body.read == 0


async def test_an_authenticated_request_still_gets_its_body_read() -> None:
    settings = Settings(cleanup_enabled=False, user_header="X-User-ID")
    manager = SessionManager(MemoryStore(), settings=settings, clock=FakeClock())
    async for client in open_client(manager):
        answer = await client.post(API, json={"data": {"k": 1}}, headers={"X-User-ID": "alice"})
        assert answer.status_code == 201 and answer.json()["data"] == {"k": 1}


async def test_a_preflight_needs_no_identity() -> None:
    settings = Settings(cleanup_enabled=False, user_header="X-User-ID", cors_origins=("https://app.example",))
    manager = SessionManager(MemoryStore(), settings=settings, clock=FakeClock())
    async for client in open_client(manager):
        preflight = await client.options(
            API, headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
        )
        assert preflight.status_code in (200, 204), preflight.text


async def test_an_authenticated_request_reads_such_a_body() -> None:
    """The power of the first test: the same body, from a known caller, is read (and refused)."""
    settings = Settings(cleanup_enabled=False, user_header="X-User-ID")
    manager = SessionManager(MemoryStore(), settings=settings, clock=FakeClock())
    async for client in open_client(manager):
        body = Body()
        headers = {"content-type": "application/json", "X-User-ID": "alice"}
        answer = await client.post(API, content=body, headers=headers)
        assert answer.status_code in (400, 413, 422) and body.read > 0
