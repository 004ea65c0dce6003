"""A user's sessions over HTTP and on both stores: list, revoke all, the per-user limit, id rotation, the
identity rules, session-end events (exactly once across replicas), and hostile user and client ids."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from faultmaven.config import Settings
from faultmaven.session import SessionEnd
from faultmaven.session_management import SessionManager
from faultmaven.stores import SessionStore
from faultmaven.stores.redis.store import RedisStore
from tests.conftest import open_client
from tests.support import FakeClock

API = "/api/v1/sessions"
ALICE = {"X-User-ID": "alice"}
BOB = {"X-User-ID": "bob"}
ADMIN = {"Authorization": "Bearer admin-secret-0123456789abcdef01234"}


def gateway_settings(**overrides: Any) -> Settings:
    return Settings(cleanup_enabled=False, user_header="X-User-ID", max_per_user=3, **overrides)


@pytest.fixture
async def manager_on(make_store: Callable[[], SessionStore], clock: FakeClock) -> AsyncIterator[SessionManager]:
    mgr = SessionManager(make_store(), settings=gateway_settings(), clock=clock)
    yield mgr
    await mgr.close()


@pytest.fixture
async def gateway(manager_on: SessionManager) -> AsyncIterator[httpx.AsyncClient]:
    async for c in open_client(manager_on):
        yield c


async def make(client: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> str:
    answer = await client.post(API, json=body, headers=headers)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["session_id"])


async def test_list_revoke_and_the_limit_over_http(gateway: httpx.AsyncClient, clock: FakeClock) -> None:
    mine = []
    for _ in range(3):
        mine.append(await make(gateway, ALICE))
        clock.advance(1)
    bobs = await make(gateway, BOB)
    await gateway.get(f"{API}/{mine[0]}", headers=ALICE)  # now the most recently active
    listed = (await gateway.get(API, headers=ALICE)).json()
    assert [s["session_id"] for s in listed["sessions"]] == [mine[0], mine[2], mine[1]]
    assert (listed["total"], listed["limit"], listed["offset"]) == (3, 50, 0)
    page = (await gateway.get(API, params={"limit": 1, "offset": 1}, headers=ALICE)).json()
    assert [s["session_id"] for s in page["sessions"]] == [mine[2]] and page["total"] == 3

    fourth = await make(gateway, ALICE)  # past SESSION_MAX_PER_USER=3: the least recently active ends
    assert (await gateway.get(f"{API}/{mine[1]}", headers=ALICE)).status_code == 404
    listed = (await gateway.get(API, headers=ALICE)).json()
    assert {s["session_id"] for s in listed["sessions"]} == {fourth, mine[0], mine[2]}

    assert (await gateway.get(API, params={"user_id": "bob"}, headers=ALICE)).status_code == 404
    assert (await gateway.delete(API, params={"user_id": "bob"}, headers=ALICE)).status_code == 404
    revoked = await gateway.delete(API, headers=ALICE)
    assert revoked.status_code == 200 and revoked.json() == {"revoked": 3}
    assert (await gateway.get(API, headers=ALICE)).json()["total"] == 0
    assert (await gateway.get(f"{API}/{bobs}", headers=BOB)).status_code == 200  # bob's untouched


async def test_rotation_over_http(gateway: httpx.AsyncClient) -> None:
    sid = await make(gateway, ALICE, client_id="browser-0001", data={"case": 7})
    assert (await gateway.post(f"{API}/{sid}/rotate", headers=BOB)).status_code == 404
    rotated = await gateway.post(f"{API}/{sid}/rotate", headers=ALICE)
    assert rotated.status_code == 200
    new = rotated.json()["session_id"]
    assert new != sid and rotated.headers["Location"] == f"{API}/{new}"
    assert rotated.json()["data"] == {"case": 7} and rotated.json()["client_id"] == "browser-0001"
    assert (await gateway.get(f"{API}/{sid}", headers=ALICE)).status_code == 404
    assert (await gateway.post(f"{API}/{sid}/rotate", headers=ALICE)).status_code == 404
    resumed = await gateway.post(API, json={"client_id": "browser-0001"}, headers=ALICE)
    assert resumed.status_code == 200 and resumed.json()["session_id"] == new  # the client follows the rotation


async def test_without_the_header_listing_needs_the_admin_token(make_store: Callable[[], SessionStore]) -> None:
    settings = Settings(cleanup_enabled=False, admin_token="admin-secret-0123456789abcdef01234")
    manager = SessionManager(make_store(), settings=settings, clock=FakeClock())
    async for client in open_client(manager):
        sid = (await client.post(API, json={"user_id": "carol"})).json()["session_id"]
        assert (await client.get(API, params={"user_id": "carol"})).status_code == 401
        listed = await client.get(API, params={"user_id": "carol"}, headers=ADMIN)
        assert [s["session_id"] for s in listed.json()["sessions"]] == [sid]
        assert (await client.get(API, headers=ADMIN)).status_code == 422  # whose?
        assert (await client.delete(API, params={"user_id": "carol"}, headers=ADMIN)).json() == {"revoked": 1}
    await manager.close()


@pytest.mark.parametrize(
    "body",
    [
        {"user_id": "u" * 257},
        {"user_id": ""},
        {"user_id": "eve\nadmin"},
        {"user_id": "eve\x00"},
        {"client_id": "c" * 129},
        {"client_id": ""},
        {"client_id": "short"},
        {"client_id": "bad\tclient-id"},
    ],
    ids=["user-long", "user-empty", "user-newline", "user-nul", "client-long", "client-empty", "client-short", "tab"],
)
async def test_hostile_user_and_client_ids_are_422_and_change_nothing(
    client: httpx.AsyncClient, manager: SessionManager, body: dict[str, Any]
) -> None:
    answer = await client.post(API, json=body)
    assert answer.status_code == 422
    assert manager.get_session_metrics()["active_sessions"] == 0


async def test_a_control_character_in_the_gateway_header_is_422(gateway: httpx.AsyncClient) -> None:
    answer = await gateway.post(API, json={}, headers={"X-User-ID": "eve\x7f"})
    assert answer.status_code == 422


async def test_every_removal_reaches_a_listener_once_with_its_reason(
    manager_on: SessionManager, clock: FakeClock
) -> None:
    seen: list[SessionEnd] = []
    manager_on.add_session_end_listener(seen.append)

    async def slow(end: SessionEnd) -> None:  # slow and failing listeners never hold a cleanup up
        await asyncio.sleep(0.01)
        raise RuntimeError("listener bug")

    manager_on.add_session_end_listener(slow)
    deleted = (await manager_on.create_session("alice")).session_id
    await manager_on.delete_session(deleted)
    rotated = (await manager_on.create_session("alice")).session_id
    await manager_on.rotate_session(rotated)
    for _ in range(3):
        await manager_on.create_session("bob")
    await manager_on.create_session("bob")  # user_limit
    expiring = [(await manager_on.create_session(None, timeout_minutes=5)).session_id for _ in range(5)]
    clock.advance(minutes=5)
    assert await manager_on.cleanup_inactive_sessions() == 5
    assert await manager_on.revoke_user_sessions("bob") == 3
    await manager_on.flush_session_ends(timeout_s=60)  # `slow` takes 10 ms an event: more under load
    reasons = Counter(end.reason for end in seen)
    assert reasons == Counter({"deleted": 1, "rotated": 1, "user_limit": 1, "expired": 5, "revoked": 3})
    assert {e.session_id for e in seen if e.reason == "expired"} == set(expiring)
    assert all(e.ended_at >= e.last_activity >= e.created_at for e in seen)
    metrics = manager_on.get_session_metrics()
    assert metrics["session_end_listener_errors_total"] == len(seen)  # `slow` failed on every one
    assert (metrics["sessions_rotated_total"], metrics["sessions_revoked_total"]) == (1, 3)
    assert metrics["sessions_user_limit_total"] == 1


async def test_concurrent_rotation_and_touches_of_the_old_id(manager_on: SessionManager) -> None:
    """Each touch of the old id lands before the rotation (and is seen by it) or finds nothing; the old id
    never comes back and exactly one new id holds the session."""
    for _ in range(10):
        old = await manager_on.create_session("alice", {"n": 1})
        results = await asyncio.gather(
            *(manager_on.touch_session(old.session_id, user_id="alice") for _ in range(5)),
            manager_on.rotate_session(old.session_id, user_id="alice"),
            *(manager_on.touch_session(old.session_id, user_id="alice") for _ in range(5)),
        )
        new = results[5]
        assert all(r is None or r.session_id == old.session_id for r in results[:5] + results[6:])
        assert await manager_on.get_session(old.session_id) is None
        assert (await manager_on.get_session(new.session_id)) is not None
        await manager_on.revoke_user_sessions("alice")


async def test_concurrent_revoke_and_creates(manager_on: SessionManager) -> None:
    """A revoke racing creates ends every session that existed when it ran; the rest are listed; none is
    in two states at once."""
    for _ in range(5):
        created = [manager_on.create_session("dave") for _ in range(4)]
        results = await asyncio.gather(*created[:2], manager_on.revoke_user_sessions("dave"), *created[2:])
        sessions = [r for r in results if not isinstance(r, int)]
        listed = {s.session_id for s in await manager_on.list_user_sessions("dave")}
        alive = {s.session_id for s in sessions if await manager_on.get_session(s.session_id) is not None}
        assert listed == alive and len(listed) <= 3  # the limit holds too
        await manager_on.revoke_user_sessions("dave")


async def test_three_replicas_report_each_ending_exactly_once(any_redis_url: str, clock: FakeClock) -> None:
    rng = random.Random(7)
    settings = Settings(cleanup_batch_size=5, cleanup_enabled=True, max_per_user=2)
    replicas = [SessionManager(RedisStore(any_redis_url), settings=settings, clock=clock) for _ in range(3)]
    seen: list[tuple[int, str, str]] = []
    for i, replica in enumerate(replicas):
        replica.add_session_end_listener(lambda end, i=i: seen.append((i, end.session_id, end.reason)))
        await replica.start_cleanup_scheduler(0.0005)
    created = 0
    try:
        # Which replica's run ends a round's sessions is up to the schedulers' timing: rounds go on (8 at
        # least) until endings were reported by two replicas, so that the reporting really was shared.
        async with asyncio.timeout(120):
            rounds = 0
            while rounds < 8 or len({i for i, _, _ in seen}) < 2:
                for _ in range(25):
                    await rng.choice(replicas).create_session(rng.choice([None, "erin", "frank"]))
                    created += 1
                clock.advance(minutes=31)
                await asyncio.sleep(0.05)  # the schedulers' runs end this round's sessions meanwhile
                rounds += 1
                await asyncio.gather(*(r.flush_session_ends() for r in replicas))
            while len(seen) < created:
                await asyncio.gather(*(r.flush_session_ends() for r in replicas))
                await asyncio.sleep(0.05)
        # No run is left to report an ending twice: each scheduler stops after its run under way, then
        # every ending the runs queued is delivered.
        for replica in replicas:
            await replica.stop_cleanup_scheduler()
        await asyncio.gather(*(r.flush_session_ends(timeout_s=60) for r in replicas))
        ids = Counter(sid for _, sid, _ in seen)
        assert len(ids) == created and set(ids.values()) == {1}, "an ending was reported twice or missed"
        assert {reason for _, _, reason in seen} <= {"expired", "user_limit"}
        assert len({i for i, _, _ in seen}) >= 2  # the reporting really was shared
    finally:
        for replica in replicas:
            await replica.close()
