"""No input gives a 500: NaN, Infinity, numbers past a double, invalid UTF-8 in every field of every route
with a body, in every identity mode; and a repeated gateway identity header is a 400."""

from __future__ import annotations

import itertools

import httpx
import pytest

from faultmaven.config import Settings
from faultmaven.session_management import SessionManager
from faultmaven.stores import MemoryStore
from tests.conftest import open_client
from tests.support import FakeClock

API = "/api/v1/sessions"
HOSTILE = [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"1" * 400, b'"\xff\xfe"', b"[NaN]", b'{"a": NaN}']
CREATE_FIELDS = ["user_id", "data", "client_id", "session_type", "timeout_minutes", "metadata", "unknown"]
PATCH_FIELDS = ["data", "unknown"]
MODES = {
    "no identity": {},
    "gateway header": {"user_header": "X-User-ID"},
    "jwt": {"jwt_secret": "a-jwt-secret-of-at-least-32-bytes-long"},
}


def bodies(fields: list[str]) -> list[bytes]:
    return [b'{"' + field.encode() + b'": ' + value + b"}" for field, value in itertools.product(fields, HOSTILE)]


@pytest.mark.parametrize("mode", sorted(MODES))
async def test_no_hostile_value_in_any_field_gives_a_server_error(mode: str) -> None:
    settings = Settings(cleanup_enabled=False, **MODES[mode])  # type: ignore[arg-type]
    manager = SessionManager(MemoryStore(), settings=settings, clock=FakeClock())
    headers = {"content-type": "application/json", "X-User-ID": "alice"}
    async for client in open_client(manager):
        session = await manager.create_session("alice" if mode != "no identity" else None)
        sid = session.session_id
        calls = [("POST", API, b) for b in bodies(CREATE_FIELDS)]
        calls += [("PATCH", f"{API}/{sid}", b) for b in bodies(PATCH_FIELDS)]
        calls += [("POST", f"{API}/{sid}/heartbeat", b) for b in HOSTILE]
        calls += [("POST", f"{API}/cleanup?max_age_minutes={v}", b"") for v in ("nan", "inf", "1e999", "-1")]
        calls += [("GET", f"{API}?limit={v}&offset={v}", b"") for v in ("nan", "inf", "1e999", "-1")]
        for method, url, body in calls:
            answer = await client.request(method, url, content=body, headers=headers)
            assert answer.status_code < 500, (mode, method, url, body, answer.status_code, answer.text[:200])
            assert answer.headers["content-type"].startswith("application/"), (url, body)
            answer.json()  # a JSON body, whatever the error


async def test_a_422_names_the_field_and_never_echoes_the_input() -> None:
    manager = SessionManager(MemoryStore(), settings=Settings(cleanup_enabled=False), clock=FakeClock())
    async for client in open_client(manager):
        json = {"content-type": "application/json"}
        answer = await client.post(API, content=b'{"timeout_minutes": NaN}', headers=json)
        assert answer.status_code == 422 and answer.headers["content-type"] == "application/problem+json"
        problem = answer.json()
        assert problem["status"] == 422 and problem["title"] == "Unprocessable Content"
        assert problem["detail"].startswith("the request is invalid: body.timeout_minutes")
        (error,) = problem["errors"]
        assert error["loc"] == ["body", "timeout_minutes"] and "input" not in error and error["msg"]


async def test_a_repeated_gateway_identity_header_is_a_400() -> None:
    settings = Settings(cleanup_enabled=False, user_header="X-User-ID")
    manager = SessionManager(MemoryStore(), settings=settings, clock=FakeClock())
    async for client in open_client(manager):
        twice = httpx.Headers([("X-User-ID", "mallory"), ("X-User-ID", "alice")])
        answer = await client.post(API, headers=twice)
        assert answer.status_code == 400 and "more than once" in answer.json()["detail"]
        assert (await client.post(API, headers={"X-User-ID": "alice"})).status_code == 201
