"""The FaultMaven copilot's own calls through the real app, on every store, with each identity source:
behind a gateway that names the user in X-User-ID, and talking to the service directly with only its
`Authorization: Bearer <JWT>` (DESIGN.md, "Who calls it" and "v3 additions")."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import jwt
import pytest

from faultmaven.config import Settings
from faultmaven.session_management import SessionManager
from faultmaven.stores import SessionStore
from tests.conftest import open_client
from tests.support import FakeClock

API = "/api/v1/sessions"
JWT_SECRET = "copilot-and-faultmaven-auth-share-this-secret"
COPILOT_FIELDS = {"session_id", "session_resumed", "client_id", "status", "created_at", "last_activity"}
COPILOT_FIELDS |= {"metadata", "user_id", "session_type"}


def copilot_body(client_id: str) -> dict[str, Any]:
    return {
        "client_id": client_id,
        "session_type": "troubleshooting",
        "timeout_minutes": 180,
        "metadata": {"browser": "chrome", "extension_version": "0.4.1"},
    }


def user_token(user: str) -> str:
    """A token as FaultMaven's auth service issues it: the user in `sub`, an hour of validity."""
    now = int(time.time())
    return jwt.encode({"sub": user, "iat": now, "exp": now + 3600}, JWT_SECRET, algorithm="HS256")


@pytest.fixture(params=["gateway", "jwt"])
def identity(request: pytest.FixtureRequest) -> str:
    """How the caller is named: the gateway's X-User-ID header, or the copilot's own bearer JWT."""
    return str(request.param)


@pytest.fixture
def users(identity: str) -> dict[str, dict[str, str]]:
    """The headers each user's copilot sends, by user."""
    if identity == "gateway":
        return {u: {"Authorization": "Bearer gateway-checked-jwt", "X-User-ID": u} for u in ("alice", "bob")}
    return {u: {"Authorization": f"Bearer {user_token(u)}"} for u in ("alice", "bob")}


@pytest.fixture
async def gateway_manager(
    make_store: Callable[[], SessionStore], clock: FakeClock, identity: str
) -> AsyncIterator[SessionManager]:
    source: dict[str, Any] = {"user_header": "X-User-ID"} if identity == "gateway" else {"jwt_secret": JWT_SECRET}
    settings = Settings(
        cleanup_enabled=False,
        timeout_minutes=180,
        min_timeout_minutes=60,
        max_timeout_minutes=480,
        **source,
    )
    mgr = SessionManager(make_store(), settings=settings, clock=clock)
    yield mgr
    await mgr.close()


@pytest.fixture
async def gateway(gateway_manager: SessionManager) -> AsyncIterator[httpx.AsyncClient]:
    async for c in open_client(gateway_manager):
        yield c


async def test_the_copilot_sequence(
    gateway: httpx.AsyncClient, clock: FakeClock, users: dict[str, dict[str, str]]
) -> None:
    alice = users["alice"]
    client_id = str(uuid.uuid4())
    first = await gateway.post(API, json=copilot_body(client_id), headers=alice)
    assert first.status_code == 201, first.text
    body = first.json()
    assert set(body) >= COPILOT_FIELDS and body["session_resumed"] is False
    assert (body["client_id"], body["user_id"], body["status"]) == (client_id, "alice", "active")
    assert body["timeout_minutes"] == 180 and body["metadata"]["browser"] == "chrome"
    sid = body["session_id"]

    clock.advance(minutes=30)  # a browser restart: same client_id, and now the session id it kept
    again = await gateway.post(API, json=copilot_body(client_id), headers=alice | {"X-Session-Id": sid})
    assert again.status_code == 200, again.text
    resumed = again.json()
    assert resumed["session_id"] == sid and resumed["session_resumed"] is True
    assert resumed["last_activity"] > body["last_activity"] and resumed["created_at"] == body["created_at"]

    clock.advance(minutes=10)
    beat = await gateway.post(f"{API}/{sid}/heartbeat", headers=alice)
    assert beat.status_code == 200 and beat.json()["ok"] is True and beat.json()["status"] == "active"

    assert (await gateway.delete(f"{API}/{sid}", headers=alice)).status_code == 204
    fresh = await gateway.post(API, json=copilot_body(client_id), headers=alice)
    assert fresh.status_code == 201 and fresh.json()["session_id"] != sid and fresh.json()["session_resumed"] is False


async def test_an_expired_session_is_a_404_and_the_copilot_starts_over(
    gateway: httpx.AsyncClient, clock: FakeClock, users: dict[str, dict[str, str]]
) -> None:
    alice = users["alice"]
    client_id = str(uuid.uuid4())
    sid = (await gateway.post(API, json=copilot_body(client_id), headers=alice)).json()["session_id"]
    clock.advance(minutes=180)
    assert (await gateway.post(f"{API}/{sid}/heartbeat", headers=alice)).status_code == 404
    assert (await gateway.get(f"{API}/{sid}", headers=alice)).json()["detail"] == "session not found"
    again = await gateway.post(API, json=copilot_body(client_id), headers=alice)  # never resumes an expired one
    assert again.status_code == 201 and again.json()["session_id"] != sid


async def test_another_users_session_is_not_found(gateway: httpx.AsyncClient, users: dict[str, dict[str, str]]) -> None:
    alice, bob = users["alice"], users["bob"]
    client_id = str(uuid.uuid4())
    sid = (await gateway.post(API, json=copilot_body(client_id), headers=alice)).json()["session_id"]
    assert (await gateway.get(f"{API}/{sid}", headers=bob)).status_code == 404
    assert (await gateway.post(f"{API}/{sid}/heartbeat", headers=bob)).status_code == 404
    assert (await gateway.patch(f"{API}/{sid}", json={"data": {"x": 1}}, headers=bob)).status_code == 404
    assert (await gateway.delete(f"{API}/{sid}", headers=bob)).status_code == 404
    # Bob's create with Alice's client id makes Bob a session of his own, never resumes hers.
    bobs = await gateway.post(API, json=copilot_body(client_id), headers=bob)
    assert bobs.status_code == 201 and bobs.json()["session_id"] != sid
    mine = await gateway.get(f"{API}/{sid}", headers=alice)
    assert mine.status_code == 200 and mine.json()["data"] == {}


async def test_the_identity_is_the_caller(gateway: httpx.AsyncClient, users: dict[str, dict[str, str]]) -> None:
    alice = users["alice"]
    assert (await gateway.post(API, json={})).status_code == 401  # not through the gateway, or no token
    differs = await gateway.post(API, json={"user_id": "bob"}, headers=alice)
    assert differs.status_code == 422
    same = await gateway.post(API, json={"user_id": "alice"}, headers=alice)
    assert same.status_code == 201 and same.json()["user_id"] == "alice"


@pytest.mark.parametrize("minutes", [59, 481, 0, -5])
async def test_a_timeout_outside_the_bounds_is_a_422(
    gateway: httpx.AsyncClient, users: dict[str, dict[str, str]], minutes: float
) -> None:
    alice = users["alice"]
    answer = await gateway.post(API, json={"timeout_minutes": minutes}, headers=alice)
    assert answer.status_code == 422


async def test_resume_is_per_user(gateway: httpx.AsyncClient, users: dict[str, dict[str, str]]) -> None:
    """One browser profile's client_id under two users' identities: two sessions, each user sees only theirs."""
    client_id = str(uuid.uuid4())
    alices = await gateway.post(API, json=copilot_body(client_id), headers=users["alice"])
    bobs = await gateway.post(API, json=copilot_body(client_id), headers=users["bob"])
    assert (alices.status_code, bobs.status_code) == (201, 201)
    assert bobs.json()["session_id"] != alices.json()["session_id"] and bobs.json()["session_resumed"] is False
    again = await gateway.post(API, json=copilot_body(client_id), headers=users["alice"])
    assert again.status_code == 200 and again.json()["session_id"] == alices.json()["session_id"]
    listed = (await gateway.get(API, headers=users["alice"])).json()
    assert listed["total"] == 1 and [s["session_id"] for s in listed["sessions"]] == [alices.json()["session_id"]]
    assert (await gateway.get(API, params={"user_id": "bob"}, headers=users["alice"])).status_code == 404
    assert (await gateway.delete(API, headers=users["bob"])).json() == {"revoked": 1}
    assert (await gateway.get(f"{API}/{alices.json()['session_id']}", headers=users["alice"])).status_code == 200


async def test_concurrent_creates_of_one_pair_make_one_session(gateway_manager: SessionManager) -> None:
    client_id = str(uuid.uuid4())
    sessions = await asyncio.gather(
        *(gateway_manager.create_session("alice", client_id=client_id, timeout_minutes=120) for _ in range(20))
    )
    assert len({s.session_id for s in sessions}) == 1
    assert sum(not s.session_resumed for s in sessions) == 1
    assert gateway_manager.get_session_metrics()["sessions_created_total"] == 1


async def test_a_create_without_a_body_is_a_201(client: httpx.AsyncClient) -> None:
    answer = await client.post(API)
    assert answer.status_code == 201 and answer.json()["user_id"] is None and answer.json()["data"] == {}
    assert answer.json()["timeout_minutes"] == 30 and answer.json()["session_type"] == "troubleshooting"
