"""End to end over HTTP through the real app and its lifespan (httpx ASGI transport)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from faultmaven.config import Settings
from faultmaven.session_management import SessionManager
from faultmaven.stores import BatchResult, MemoryStore, SessionStore
from tests.conftest import open_client
from tests.support import DownStore, FakeClock, HookedStore

API = "/api/v1/sessions"


async def create(client: httpx.AsyncClient, **body: object) -> str:
    response = await client.post(API, json=body)
    assert response.status_code == 201, response.text
    sid: str = response.json()["session_id"]
    assert response.headers["location"] == f"{API}/{sid}"
    return sid


async def session_metrics(client: httpx.AsyncClient) -> dict[str, object]:
    body = (await client.get("/health")).json()
    metrics: dict[str, object] = body["services"]["session_manager"]["metrics"]
    return metrics


async def test_crud_over_http(client: httpx.AsyncClient, clock: FakeClock) -> None:
    sid = await create(client, user_id="alice", data={"case": 1})
    got = await client.get(f"{API}/{sid}")
    assert got.status_code == 200
    assert got.json()["user_id"] == "alice" and got.json()["data"] == {"case": 1}

    clock.advance(60)
    beat = await client.post(f"{API}/{sid}/heartbeat")
    assert beat.status_code == 200 and set(beat.json()) == {
        "ok",
        "session_id",
        "expires_at",
        "last_activity",
        "status",
        "version",
    }

    patched = await client.patch(f"{API}/{sid}", json={"data": {"case": 2}})
    assert patched.status_code == 200 and patched.json()["data"] == {"case": 2}

    assert (await client.delete(f"{API}/{sid}")).status_code == 204
    assert (await client.delete(f"{API}/{sid}")).status_code == 404
    assert (await client.get(f"{API}/{sid}")).status_code == 404
    assert (await client.post(f"{API}/{sid}/heartbeat")).status_code == 404
    assert (await client.patch(f"{API}/{sid}", json={"data": {}})).status_code == 404


@pytest.mark.parametrize("bad_id", ["nope", "a" * 42, "a" * 44, "%2e%2e", "a" * 42 + "*"])
async def test_malformed_ids_get_404(client: httpx.AsyncClient, bad_id: str) -> None:
    assert (await client.get(f"{API}/{bad_id}")).status_code == 404
    assert (await client.post(f"{API}/{bad_id}/heartbeat")).status_code == 404
    assert (await client.patch(f"{API}/{bad_id}", json={"data": {}})).status_code == 404
    assert (await client.delete(f"{API}/{bad_id}")).status_code == 404


async def test_size_limit_and_validation(clock: FakeClock) -> None:
    manager = SessionManager(MemoryStore(), settings=Settings(max_data_bytes=64, cleanup_enabled=False), clock=clock)
    async for client in open_client(manager):
        assert (await client.post(API, json={"data": {"v": "x" * 64}})).status_code == 413
        sid = await create(client, data={"v": 1})
        assert (await client.patch(f"{API}/{sid}", json={"data": {"v": "x" * 64}})).status_code == 413
        assert (await client.get(f"{API}/{sid}")).json()["data"] == {"v": 1}
        assert (await client.patch(f"{API}/{sid}", json={"data": [1]})).status_code == 422
        assert (await client.patch(f"{API}/{sid}", json={})).status_code == 422
        assert (await client.post(API, json={"user_id": 5})).status_code == 422
        assert (await client.post(API, json={"user_id": "u" * 300})).status_code == 422
        assert (
            await client.post(API, content=b"{not json", headers={"content-type": "application/json"})
        ).status_code == 422
        assert manager.get_session_metrics()["active_sessions"] == 1


async def test_expired_session_is_404_before_cleanup(client: httpx.AsyncClient, clock: FakeClock) -> None:
    sid = await create(client)
    clock.advance(minutes=30)
    assert (await client.get(f"{API}/{sid}")).status_code == 404
    metrics = await session_metrics(client)
    assert metrics["expired_sessions"] == 1 and metrics["active_sessions"] == 0


async def test_scheduler_runs_from_the_lifespan_and_health_reports_it(clock: FakeClock) -> None:
    settings = Settings(cleanup_interval_minutes=0.0005, cleanup_batch_size=7, cleanup_enabled=True)
    manager = SessionManager(MemoryStore(), settings=settings, clock=clock)
    async for client in open_client(manager):
        health = (await client.get("/health")).json()
        assert health["status"] == "healthy"
        assert health["services"]["session_manager"]["metrics"]["scheduler_running"] is True
        ids = [await create(client, data={"n": i}) for i in range(40)]
        clock.advance(minutes=10)
        keeper = await create(client)
        clock.advance(minutes=25)  # the 40 are idle 35 min; keeper 25 min
        async with asyncio.timeout(60):  # runs every 30 ms: room for a loaded machine
            while (await session_metrics(client))["sessions_cleaned_total"] != 40:
                await asyncio.sleep(0.01)
        metrics = await session_metrics(client)
        assert metrics["active_sessions"] == 1 and metrics["expired_sessions"] == 0
        assert metrics["cleanup_runs"] >= 1 and metrics["last_cleanup_time"] == pytest.approx(clock.now)
        assert all([(await client.get(f"{API}/{s}")).status_code == 404 for s in ids])
        assert (await client.get(f"{API}/{keeper}")).status_code == 200
        assert (await client.get(f"{API}/metrics")).json()["sessions_cleaned_total"] == 40
    assert not manager.get_session_metrics()["scheduler_running"]  # the lifespan stopped it


async def test_requests_are_served_while_a_cleanup_runs(clock: FakeClock) -> None:
    """Live sessions used over HTTP between cleanup batches answer 200 and are never removed."""
    served: list[int] = []
    live: list[str] = []

    async def use_live_sessions(_: BatchResult) -> None:
        for sid in live:
            served.append((await client.get(f"{API}/{sid}")).status_code)

    store = HookedStore(use_live_sessions)
    manager = SessionManager(store, settings=Settings(cleanup_batch_size=25, cleanup_enabled=False), clock=clock)
    async for client in open_client(manager):
        for i in range(300):
            await manager.create_session(data={"i": i})
        live.extend([await create(client) for _ in range(5)])
        clock.advance(minutes=20)
        cleanup = asyncio.create_task(manager.cleanup_inactive_sessions(15))
        # While the cleanup runs, HTTP traffic goes on in parallel too.
        parallel = await asyncio.gather(*(client.get(f"{API}/{sid}") for sid in live))
        removed = await cleanup
        assert removed == 300
        assert all(r.status_code == 200 for r in parallel)
        assert served and set(served) == {200}
        assert all([(await client.get(f"{API}/{s}")).status_code == 200 for s in live])


@pytest.fixture
async def degraded_client(clock: FakeClock) -> AsyncIterator[tuple[httpx.AsyncClient, SessionManager]]:
    settings = Settings(health_max_active=2, cleanup_enabled=False)
    manager = SessionManager(MemoryStore(), settings=settings, clock=clock)
    async for client in open_client(manager):
        yield client, manager


async def test_health_degrades_above_max_active(degraded_client: tuple[httpx.AsyncClient, SessionManager]) -> None:
    client, _ = degraded_client
    for _ in range(2):
        await create(client)
    assert (await client.get("/health")).json()["status"] == "healthy"
    await create(client)
    body = (await client.get("/health")).json()
    assert body["status"] == "degraded"
    assert body["services"]["session_manager"]["status"] == "degraded"


async def test_health_degrades_when_enabled_scheduler_is_not_running(clock: FakeClock) -> None:
    manager = SessionManager(MemoryStore(), settings=Settings(cleanup_enabled=True), clock=clock)
    async for client in open_client(manager):
        assert (await client.get("/health")).json()["status"] == "healthy"
        await manager.stop_cleanup_scheduler()
        response = await client.get("/health")
        assert response.status_code == 200 and response.json()["status"] == "degraded"


async def test_health_degrades_over_memory_budget(clock: FakeClock) -> None:
    manager = SessionManager(MemoryStore(), settings=Settings(max_memory_mb=0.01, cleanup_enabled=False), clock=clock)
    async for client in open_client(manager):
        await create(client, data={"blob": "x" * 5000})
        assert (await client.get("/health")).json()["status"] == "healthy"
        await create(client, data={"blob": "x" * 6000})
        assert (await client.get("/health")).json()["status"] == "degraded"


async def test_health_is_200_and_unhealthy_when_the_store_is_down(clock: FakeClock) -> None:
    store = DownStore()
    manager = SessionManager(store, settings=Settings(cleanup_enabled=False), clock=clock)
    async for client in open_client(manager):
        store.down = True
        response = await client.get("/health")
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "degraded"
        assert body["services"]["session_manager"]["status"] == "unhealthy"
        assert body["services"]["session_manager"]["error"] == "SessionStoreException: store unreachable (injected)"


async def test_health_degrades_on_cleanup_error_rate(clock: FakeClock) -> None:
    from tests.support import PoisonStore

    store = PoisonStore()
    manager = SessionManager(store, settings=Settings(cleanup_enabled=False), clock=clock)
    async for client in open_client(manager):
        ids = [await create(client) for _ in range(20)]
        store.poison = {ids[0]}  # 1 of 20 fails: exactly 5%, not over it
        clock.advance(minutes=31)
        await manager.cleanup_inactive_sessions()
        assert (await client.get("/health")).json()["status"] == "healthy"
        ids = [await create(client) for _ in range(10)]
        store.poison |= {ids[0]}
        clock.advance(minutes=31)
        await manager.cleanup_inactive_sessions()  # now 3 errors in 31 attempts: over 5%
        assert (await client.get("/health")).json()["status"] == "degraded"


async def test_prometheus_metrics(client: httpx.AsyncClient, clock: FakeClock) -> None:
    await create(client)
    await create(client)
    clock.advance(minutes=31)
    await create(client)
    response = await client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "faultmaven_sessions_active 1.0" in text
    assert "faultmaven_sessions_expired 2.0" in text
    assert "faultmaven_session_cleanup_runs_total 0.0" in text


async def test_admin_cleanup_route(clock: FakeClock) -> None:
    settings = Settings(admin_token="t0ken-0123456789abcdef0123456789ab", cleanup_enabled=False)
    manager = SessionManager(MemoryStore(), settings=settings, clock=clock)
    async for client in open_client(manager):
        for _ in range(3):
            await create(client)
        clock.advance(minutes=5)
        assert (await client.post(f"{API}/cleanup")).status_code == 401
        wrong = {"authorization": "Bearer nope"}
        assert (await client.post(f"{API}/cleanup", headers=wrong)).status_code == 401
        good = {"authorization": "Bearer t0ken-0123456789abcdef0123456789ab"}
        assert (await client.post(f"{API}/cleanup?max_age_minutes=-1", headers=good)).status_code == 422
        response = await client.post(f"{API}/cleanup?max_age_minutes=4", headers=good)
        assert response.status_code == 200
        assert response.json()["cleaned"] == 3 and response.json()["duration_ms"] >= 0


async def test_admin_cleanup_route_is_off_without_a_token(client: httpx.AsyncClient) -> None:
    response = await client.post(f"{API}/cleanup", headers={"authorization": "Bearer anything"})
    assert response.status_code == 404 and "SESSION_ADMIN_TOKEN" in response.json()["detail"]
    for method in ("GET", "DELETE"):  # listing or revoking a named user's sessions: the same, and says so
        response = await client.request(method, API, params={"user_id": "alice"})
        assert response.status_code == 404 and "SESSION_ADMIN_TOKEN" in response.json()["detail"]
    assert (await client.get(f"{API}/no/such/route")).json()["detail"] == "Not Found"


def _sample(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{name}{re.escape(labels)} (\S+)$", text, re.M)
    assert match, f"{name}{labels} is not exported"
    return float(match.group(1))


async def test_prometheus_ends_by_reason_in_base_units(
    make_store: Callable[[], SessionStore], clock: FakeClock
) -> None:
    """Every way a session ends lands in faultmaven_sessions_ended_total under its own reason; memory is in
    bytes and durations in seconds (Prometheus conventions), the JSON metrics keep their units."""
    settings = Settings(max_per_user=1, cleanup_enabled=False, user_header="X-User-ID")
    manager = SessionManager(make_store(), settings=settings, clock=clock)
    async for client in open_client(manager):
        ann, bob = {"X-User-ID": "ann"}, {"X-User-ID": "bob"}
        first = (await client.post(API, headers=ann)).json()["session_id"]
        second = (await client.post(API, headers=ann)).json()["session_id"]  # ends `first`: user_limit
        assert (await client.get(f"{API}/{first}", headers=ann)).status_code == 404
        assert (await client.post(f"{API}/{second}/rotate", headers=ann)).status_code == 200  # rotated
        await client.post(API, headers=bob)
        assert (await client.delete(API, headers=bob)).json() == {"revoked": 1}  # revoked
        doomed = (await client.post(API, headers={"X-User-ID": "cy"})).json()["session_id"]
        assert (await client.delete(f"{API}/{doomed}", headers={"X-User-ID": "cy"})).status_code == 204  # deleted
        for user in ("dee", "eve"):
            await client.post(API, headers={"X-User-ID": user})
        clock.advance(minutes=10)
        assert await manager.cleanup_inactive_sessions(max_age_minutes=5) == 3  # idle: ann's, dee's, eve's
        await client.post(API, headers={"X-User-ID": "fay"})
        clock.advance(minutes=31)
        assert await manager.cleanup_inactive_sessions() == 1  # expired: fay's
        text = (await client.get("/metrics")).text
        as_json = (await client.get(f"{API}/metrics")).json()
    expected = {"expired": 1, "idle": 3, "deleted": 1, "revoked": 1, "user_limit": 1, "evicted": 0, "rotated": 1}
    for reason, count in expected.items():
        assert _sample(text, "faultmaven_sessions_ended_total", f'{{reason="{reason}"}}') == count
    for name, key in [("created", "sessions_created_total"), ("rotated", "sessions_rotated_total")]:
        assert _sample(text, f"faultmaven_sessions_{name}_total") == as_json[key] > 0
    assert _sample(text, "faultmaven_session_store_memory_bytes") == as_json["memory_usage_mb"] * 1024 * 1024
    seconds = _sample(text, "faultmaven_session_cleanup_last_duration_seconds")
    assert seconds == as_json["last_cleanup_duration_ms"] / 1000 and seconds < 60
    assert "faultmaven_session_store_memory_mb" not in text
