"""A full Redis (maxmemory, noeviction) on real servers: creates are refused while a master is within its
reserve, and the sessions already stored stay readable, touchable, deletable and cleanable."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

import pytest
import redis

from faultmaven.config import Settings
from faultmaven.exceptions import SessionStoreFullError
from faultmaven.lifecycle.counters import RECOVERED_AFTER_S
from faultmaven.observability.health import health_report
from faultmaven.session import Session
from faultmaven.session_management import SessionManager
from faultmaven.stores.redis.store import RedisStore
from tests.conftest import open_client
from tests.redis_cluster import RedisCluster
from tests.redis_server import RedisServer
from tests.support import FakeClock

DATA = {"notes": "x" * 6000}  # large sessions fill 24 MB in a few thousand creates
SETTINGS = Settings(cleanup_enabled=False, max_per_user=0)
WAVE = 100
BURST = 500  # creates sent at once: a fast client's burst between two memory readings


@pytest.fixture(scope="module")
def small_redis() -> Iterator[RedisServer]:
    server = RedisServer("--maxmemory", "24mb", "--maxmemory-policy", "noeviction")
    server.start()
    yield server
    server.cleanup()


async def fill(manager: SessionManager, *, short_every: int = 0, refusals: int = 1) -> tuple[list[Session], int]:
    """Create sessions in waves until `refusals` creates were refused as the store was full; every
    `short_every`-th session gets a 1-minute timeout. Returns the stored sessions and how many creates
    succeeded after the first refusal."""
    stored: list[Session] = []
    refused = after_first = 0
    deadline = time.monotonic() + 240
    while refused < refusals:
        assert time.monotonic() < deadline, f"never refused ({len(stored)} stored)"
        n = len(stored)
        results = await asyncio.gather(
            *[
                manager.create_session(
                    f"user-{n + i}", DATA, timeout_minutes=1 if short_every and (n + i) % short_every == 0 else None
                )
                for i in range(WAVE)
            ],
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, SessionStoreFullError):
                refused += 1
            elif isinstance(result, BaseException):
                raise result
            else:
                stored.append(result)
                after_first += refused > 0
    return stored, after_first


async def refusals_reported(manager: SessionManager) -> list[str]:
    """/health's reasons once a create was refused: the store reports the master that refused until its
    next memory reading, so a create is tried again until a refusal and the report meet."""
    deadline, n = time.monotonic() + 10, 0
    while True:
        n += 1
        try:
            await manager.create_session(f"probe-{n}", DATA)  # users spread over the shards
        except SessionStoreFullError:
            reasons = health_report(manager)["services"]["session_manager"].get("reasons", [])
            if any("new sessions" in r and "refused" in r for r in reasons):
                return list(reasons)
        assert time.monotonic() < deadline, "no refusal was reported by /health"


async def readable_and_touchable(manager: SessionManager, sessions: list[Session]) -> tuple[int, int]:
    read = sum([await manager.get_session(s.session_id, user_id=s.user_id) is not None for s in sessions])
    touched = sum([await manager.touch_session(s.session_id, user_id=s.user_id) is not None for s in sessions])
    return read, touched


async def create_until_accepted(manager: SessionManager) -> Session:
    """Creates refused on a stale memory reading succeed once the background refresh sees the room."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return await manager.create_session("after", DATA)
        except SessionStoreFullError:
            assert time.monotonic() < deadline, "creates still refused after deletes freed room"
            await asyncio.sleep(0.01)


async def test_a_full_redis_keeps_every_existing_session_working(small_redis: RedisServer) -> None:
    small_redis.flush()
    clock = FakeClock()
    manager = SessionManager(RedisStore(small_redis.url), settings=SETTINGS, clock=clock)
    try:
        browser = await manager.create_session("returning", {"k": "v"}, client_id="browser-0001")
        sessions, _ = await fill(manager, short_every=50)
        again = await manager.create_session("returning", {"k": "v"}, client_id="browser-0001")
        assert again.session_resumed and again.session_id == browser.session_id  # a resume is not a new session
        info = redis.Redis(port=small_redis.port).info("memory")
        assert info["used_memory"] < info["maxmemory"], "the reserve was used up by creates"
        clock.advance(20)
        read, touched = await readable_and_touchable(manager, sessions)
        assert read >= 0.99 * len(sessions) and touched >= 0.99 * len(sessions), (read, touched, len(sessions))
        assert await refusals_reported(manager)
        assert manager.get_session_metrics()["sessions_rejected_total"] >= 1
        assert manager.rejected_by_reason()["store_full"] >= 1

        clock.advance(minutes=2)  # the 1-minute sessions expire
        short = [s for s in sessions if s.timeout_minutes == 1]
        assert await manager.cleanup_inactive_sessions() == len(short)
        kept = [s for s in sessions if s.timeout_minutes != 1]
        fifth = kept[: len(kept) // 5]
        assert all([await manager.delete_session(s.session_id, user_id=s.user_id) for s in fifth])
        created = await create_until_accepted(manager)
        assert await manager.get_session(created.session_id, user_id="after") is not None
        clock.advance(RECOVERED_AFTER_S)  # a create this long after the last refusal ends the report
        await manager.create_session("after", DATA)
        assert not manager.refusing_creates()
    finally:
        await manager.close()


def late_info(store: RedisStore, delay_s: float) -> None:
    """Fault: every INFO reply reaches the store `delay_s` late (a slow network or a busy Redis)."""
    if not delay_s:
        return
    info = store.client.info

    async def late(*args: object, **kwargs: object) -> object:
        reply = await info(*args, **kwargs)  # type: ignore[arg-type]
        await asyncio.sleep(delay_s)
        return reply

    store.client.info = late  # type: ignore[method-assign]


async def bursts_until_full(manager: SessionManager, port: int) -> list[Session]:
    """Bursts of BURST concurrent 6 KB creates until BURST of them were refused. After every burst the
    master on `port` is below its maxmemory with at least half the reserve (SESSION_REDIS_MEMORY_RESERVE,
    10%) left (Redis' own transient buffers, such as the append-only file's, may take a little of it),
    and 99% of the sessions stored are readable and touchable."""
    admin, stored, refused = redis.Redis(port=port), [], 0
    for burst in range(40):
        creates = [manager.create_session(f"b{burst}-{i}", DATA) for i in range(BURST)]
        for result in await asyncio.gather(*creates, return_exceptions=True):
            if isinstance(result, SessionStoreFullError):
                refused += 1
            elif isinstance(result, BaseException):
                raise result
            else:
                stored.append(result)
        info = admin.info("memory")
        assert info["used_memory"] <= 0.95 * info["maxmemory"], (burst, len(stored), info["used_memory"])
        read, touched = await readable_and_touchable(manager, stored)
        assert read >= 0.99 * len(stored) and touched >= 0.99 * len(stored), (burst, read, touched, len(stored))
        if refused >= BURST:
            assert info["used_memory"] >= 0.75 * info["maxmemory"], "refused far from the limit"
            return stored
    raise AssertionError(f"never full ({len(stored)} stored)")


@pytest.mark.parametrize("info_delay_s", [0.0, 2.0])
async def test_bursts_of_creates_never_take_a_full_redis_past_maxmemory(
    small_redis: RedisServer, info_delay_s: float
) -> None:
    small_redis.flush()
    store = RedisStore(small_redis.url)
    late_info(store, info_delay_s)
    manager = SessionManager(store, settings=SETTINGS, clock=FakeClock())
    try:
        assert len(await bursts_until_full(manager, small_redis.port)) > 1000
    finally:
        await manager.close()


@pytest.mark.parametrize("info_delay_s", [0.0, 2.0])
async def test_bursts_of_creates_never_take_a_full_cluster_master_past_maxmemory(
    one_full_master: int, cluster_url: str, info_delay_s: float
) -> None:
    store = RedisStore(cluster_url)
    late_info(store, info_delay_s)
    manager = SessionManager(store, settings=SETTINGS, clock=FakeClock())
    try:
        await bursts_until_full(manager, one_full_master)
    finally:
        await manager.close()


async def test_a_write_redis_refuses_over_maxmemory_is_a_store_full_error(small_redis: RedisServer) -> None:
    """With the store's own check off (policy evict), Redis' OOM reply still surfaces as store full."""
    small_redis.flush()
    admin = redis.Redis(port=small_redis.port)
    manager = SessionManager(RedisStore(small_redis.url, policy="evict"), settings=SETTINGS, clock=FakeClock())
    try:
        kept = await manager.create_session("u", {"k": "v"})
        admin.config_set("maxmemory", max(1, int(admin.info("memory")["used_memory"]) // 2))
        with pytest.raises(SessionStoreFullError):
            await manager.create_session("u2", DATA)
        assert await manager.delete_session(kept.session_id)  # deletes free memory: never refused
    finally:
        admin.config_set("maxmemory", "24mb")
        await manager.close()


@pytest.fixture
def one_full_master(redis_cluster: RedisCluster, cluster_url: str) -> Iterator[int]:
    """One master of the cluster gets a maxmemory a few MB above what it uses; restored afterwards."""
    port = redis_cluster.masters()[0]
    admin = redis.Redis(port=port)
    before = admin.config_get("maxmemory")["maxmemory"]
    admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) + 8 * 1024 * 1024)
    try:
        yield port
    finally:
        admin.config_set("maxmemory", before)


async def test_a_full_cluster_master_refuses_only_its_creates(one_full_master: int, cluster_url: str) -> None:
    clock = FakeClock()
    store = RedisStore(cluster_url)
    manager = SessionManager(store, settings=SETTINGS, clock=clock)
    try:
        sessions, after_first = await fill(manager, short_every=50, refusals=20)
        assert after_first > 0, "creates for the other masters stopped too"
        info = redis.Redis(port=one_full_master).info("memory")
        assert info["used_memory"] < info["maxmemory"]
        clock.advance(20)
        read, touched = await readable_and_touchable(manager, sessions)
        assert read >= 0.99 * len(sessions) and touched >= 0.99 * len(sessions), (read, touched, len(sessions))
        reasons = await refusals_reported(manager)
        assert any("on 1 of 3 master(s)" in r for r in reasons), reasons

        clock.advance(minutes=2)
        short = [s for s in sessions if s.timeout_minutes == 1]
        assert await manager.cleanup_inactive_sessions() == len(short)
        kept = [s for s in sessions if s.timeout_minutes != 1]
        fifth = kept[: len(kept) // 5]
        assert all([await manager.delete_session(s.session_id, user_id=s.user_id) for s in fifth])
        deadline = time.monotonic() + 10
        while store.memory_reasons():
            assert time.monotonic() < deadline, store.memory_reasons()
            await store.refresh_memory()
        results = await asyncio.gather(
            *[manager.create_session(f"again-{i}", DATA) for i in range(WAVE)], return_exceptions=True
        )
        assert not [r for r in results if isinstance(r, BaseException)]
    finally:
        await manager.close()


async def test_an_evicting_policy_degrades_health_and_warns_once(
    redis_server: RedisServer, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    admin = redis.Redis(port=redis_server.port)
    admin.config_set("maxmemory-policy", "allkeys-lru")
    manager = SessionManager(RedisStore(redis_url), settings=SETTINGS, clock=FakeClock())
    try:
        with caplog.at_level(logging.WARNING, logger="faultmaven.sessions"):
            async for client in open_client(manager):
                await manager.refresh_store_stats()
                health = (await client.get("/health")).json()
        assert health["status"] == "degraded"
        reasons = health["services"]["session_manager"]["reasons"]
        assert any("allkeys-lru" in r for r in reasons), reasons
        warnings = [r for r in caplog.records if getattr(r, "maxmemory_policy", None) == "allkeys-lru"]
        assert len(warnings) == 1
    finally:
        admin.config_set("maxmemory-policy", "noeviction")
        await manager.close()


async def test_a_noeviction_redis_without_maxmemory_is_healthy(redis_url: str) -> None:
    manager = SessionManager(RedisStore(redis_url), settings=SETTINGS, clock=FakeClock())
    try:
        await manager.refresh_store_stats()
        assert manager.store_pressure() == []
        await manager.create_session("u", DATA)  # maxmemory 0: no limit, nothing refused
    finally:
        await manager.close()


async def test_far_from_the_limit_creates_make_no_memory_round_trips(redis_url: str) -> None:
    store = RedisStore(redis_url)
    reads = 0
    refresh = store.memory.refresh

    async def counted() -> None:
        nonlocal reads
        reads += 1
        await refresh()

    store.memory.refresh = counted  # type: ignore[method-assign]
    manager = SessionManager(store, settings=SETTINGS, clock=FakeClock())
    try:
        started = time.monotonic()
        for i in range(300):
            await manager.create_session(f"u{i}", {"k": "v"})
        elapsed = time.monotonic() - started
        assert reads <= 2 + elapsed, (reads, elapsed)  # the first create, then at most one a second
    finally:
        await manager.close()


async def test_session_max_memory_mb_bounds_redis_only_when_set(redis_url: str) -> None:
    default = SessionManager(settings=Settings(store_url=redis_url, cleanup_enabled=False))
    explicit = SessionManager(
        settings=Settings(store_url=redis_url, cleanup_enabled=False, max_memory_mb=0.05, max_per_user=0)
    )
    try:
        assert default.store.memory.max_bytes is None  # type: ignore[attr-defined]
        refused = 0
        for i in range(200):
            try:
                await explicit.create_session(f"u{i}", {"k": "x" * 500})
            except SessionStoreFullError:
                refused += 1
        assert refused > 0
        await explicit.refresh_store_stats()
        metrics = explicit.get_session_metrics()
        assert metrics["memory_usage_mb"] is not None and metrics["memory_usage_mb"] <= 0.05 * 1.05
    finally:
        await default.close()
        await explicit.close()
