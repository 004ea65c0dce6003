"""The Redis store on a real local Redis Cluster: spread over the masters, a master killed mid-run, slots
migrated under load. The contract, the state machine, the replica test and the copilot sequence run on
the cluster too (the `make_store` and `any_redis_url` fixtures)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from redis.crc import key_slot

from faultmaven.config import Settings
from faultmaven.exceptions import SessionCleanupException, SessionStoreException
from faultmaven.session_management import SessionManager
from faultmaven.stores.redis.store import RedisStore
from tests.redis_cluster import RedisCluster, _command
from tests.support import FakeClock

SPREAD = int(os.environ.get("CLUSTER_SPREAD_SESSIONS", "10000"))


def slot_owners(cluster: RedisCluster) -> dict[int, int]:
    """slot -> port of the master serving it, from CLUSTER SLOTS as the running nodes see it."""
    owners: dict[int, int] = {}
    for port in cluster.masters():
        for line in _command(port, "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if "myself" in fields[2]:
                for span in fields[8:]:
                    if span.startswith("["):
                        continue  # a slot being migrated or imported
                    low, _, high = span.partition("-")
                    owners.update(dict.fromkeys(range(int(low), int(high or low) + 1), port))
    return owners


@pytest.fixture
async def cluster_manager(cluster_url: str, clock: FakeClock) -> AsyncIterator[SessionManager]:
    settings = Settings(cleanup_batch_size=50, cleanup_enabled=False, max_per_user=0)
    manager = SessionManager(RedisStore(cluster_url), settings=settings, clock=clock)
    yield manager
    await manager.close()


async def fill(manager: SessionManager, users: int, each: int, anonymous: int) -> list[str]:
    ids: list[str] = []
    for start in range(0, users, 50):
        batch = [manager.create_session(f"user-{u}") for u in range(start, min(start + 50, users)) for _ in range(each)]
        ids += [s.session_id for s in await asyncio.gather(*batch)]
    for start in range(0, anonymous, 200):
        batch = [manager.create_session() for _ in range(min(200, anonymous - start))]
        ids += [s.session_id for s in await asyncio.gather(*batch)]
    return ids


async def test_sessions_and_index_entries_spread_evenly_over_the_masters(
    redis_cluster: RedisCluster, cluster_manager: SessionManager
) -> None:
    """SPREAD sessions, half of users with 5 each, half anonymous: each master holds 33% +- 8% of the keys
    and of the index entries. CLUSTER_SPREAD_SESSIONS=100000 gives the README's figure."""
    await fill(cluster_manager, users=SPREAD // 10, each=5, anonymous=SPREAD // 2)
    store = cluster_manager.store
    assert isinstance(store, RedisStore)
    owners = slot_owners(redis_cluster)
    keys = {port: redis_cluster.dbsize(port) for port in redis_cluster.masters()}
    entries: Counter[int] = Counter()
    for shard in store.shards:
        entries[owners[key_slot(shard.prefix.encode())]] += int(await store.client.zcard(shard.deadlines))
    assert sum(entries.values()) == SPREAD
    key_shares = {port: round(count / sum(keys.values()), 4) for port, count in keys.items()}
    entry_shares = {port: round(count / SPREAD, 4) for port, count in entries.items()}
    print(f"cluster spread of {SPREAD:,} sessions: keys {key_shares}, index entries {entry_shares}")
    assert all(0.25 <= share <= 0.41 for share in [*key_shares.values(), *entry_shares.values()])


async def test_a_master_killed_mid_cleanup_fails_over_and_loses_nothing_live(
    redis_cluster: RedisCluster, cluster_manager: SessionManager, clock: FakeClock
) -> None:
    """Kill a master while a cleanup runs and clients keep touching: its replica is promoted; meanwhile
    the other shards keep serving; the run that hit the dead master fails cleanly, the next one removes
    exactly the expired sessions, and every live session is still there, with no restart of anything."""
    manager = cluster_manager
    await fill(manager, users=100, each=2, anonymous=400)  # expired by the time the cleanup runs
    clock.advance(minutes=20)
    live = await fill(manager, users=100, each=1, anonymous=300)  # the users' newest: under the limit anyway
    clock.advance(minutes=15)  # `old` is now expired (30 min), `live` is not
    redis_cluster.wait_ready()  # every replica in sync: only a replica that talks to its master takes over
    victim = redis_cluster.masters()[0]
    replica = redis_cluster.replica_of(victim)
    store = manager.store
    assert isinstance(store, RedisStore)
    on_victim = {sid for sid in live if victim_owns(redis_cluster, store, sid, victim)}
    assert on_victim and len(on_victim) < len(live)

    touched_elsewhere: list[bool] = []
    passes = 0

    async def keep_touching() -> None:
        nonlocal passes
        while True:
            for sid in live:
                try:
                    session = await manager.touch_session(sid)
                except SessionStoreException:
                    assert sid in on_victim  # only the dead master's shards may fail
                    continue
                if sid not in on_victim:
                    touched_elsewhere.append(session is not None)
            passes += 1
            await asyncio.sleep(0)

    toucher = asyncio.create_task(keep_touching())
    async with asyncio.timeout(60):  # clients are touching every live session before the kill
        while passes < 1:
            await asyncio.sleep(0.01)
    assert not toucher.done()
    redis_cluster.kill(victim)
    try:
        with contextlib.suppress(SessionCleanupException):  # the run that meets the dead master fails cleanly
            await manager.cleanup_inactive_sessions()
        redis_cluster.wait_master(replica)  # the replica took over: every slot is served again
        await retry(manager.cleanup_inactive_sessions)
        toucher.cancel()
        assert touched_elsewhere and all(touched_elsewhere)
        for sid in live:
            assert await manager.get_session(sid) is not None
        await store.refresh_stats(clock.now)
        assert store.stats(clock.now).stored == len(live)  # every expired one gone, every live one kept
    finally:
        toucher.cancel()
        redis_cluster.start_node(victim)  # back as a replica of its old replica
        redis_cluster.wait_ready()  # and in sync with it, for the tests that come next


def victim_owns(cluster: RedisCluster, store: RedisStore, sid: str, port: int) -> bool:
    shard = store.shard_for(sid)
    assert shard is not None
    return slot_owners(cluster)[key_slot(shard.key(sid).encode())] == port


async def retry(call: object, within_s: float = 60.0) -> int:
    """The next run after a failover: the client may need a moment to learn the new topology."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            return int(await call())  # type: ignore[operator]
        except SessionCleanupException:
            assert time.monotonic() < deadline, "no cleanup run succeeded after the failover"
            await asyncio.sleep(0.5)


async def test_slots_migrate_under_load_without_a_lost_request(
    redis_cluster: RedisCluster, cluster_manager: SessionManager
) -> None:
    """`redis-cli --cluster reshard` moves 300 slots from one master to another while clients create and
    touch sessions: every request answers (redis-py follows MOVED and ASK, retries TRYAGAIN)."""
    manager = cluster_manager
    ids = await fill(manager, users=200, each=1, anonymous=800)
    masters = redis_cluster.masters()
    source, target = (_command(port, "CLUSTER", "MYID") for port in masters[:2])
    failures: list[str] = []
    done = asyncio.Event()

    async def load() -> int:
        calls = 0
        while not done.is_set():
            for sid in ids[:200]:
                try:
                    if await manager.touch_session(sid) is None:
                        failures.append("a live session was not found")
                    calls += 1
                except SessionStoreException as exc:
                    failures.append(str(exc))
            try:
                ids.append((await manager.create_session(f"user-{calls % 200}")).session_id)
            except SessionStoreException as exc:
                failures.append(str(exc))
        return calls

    worker = asyncio.create_task(load())
    reshard = await asyncio.create_subprocess_exec(
        redis_cluster.cli, "--cluster", "reshard", f"127.0.0.1:{masters[0]}", "--cluster-from", source,
        "--cluster-to", target, "--cluster-slots", "300", "--cluster-yes",
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(reshard.communicate(), 120)
    done.set()
    calls = await worker
    assert reshard.returncode == 0, err.decode()
    assert calls > 0 and failures == []
    for sid in ids:
        assert await manager.get_session(sid) is not None
