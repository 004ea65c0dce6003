"""The Redis store's Lua rules, one by one, on a real redis-server: the boundaries, the indexes each change
keeps in step, the byte count, ownership, the per-user limit, the resume pair and the lease tokens.

Store-level calls with explicit times (the fake clock's epoch), and reads of the raw keys where a rule is
about what Redis keeps. ci/lua_mutants.py checks that each rule here catches the script change it names.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from faultmaven.exceptions import SessionDataTooLargeError, SessionStoreException
from faultmaven.session import SessionRecord
from faultmaven.stores.base import Endings, Report, drop
from faultmaven.stores.redis.shards import shard_of_id
from faultmaven.stores.redis.store import RedisStore
from faultmaven.stores.sizing import session_bytes
from tests.support import EPOCH, session_record

T0 = EPOCH
CLIENT = "browser-0001"


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    s = RedisStore(redis_url)
    s.detailed_endings = True
    yield s
    await s.close()


async def put(
    store: RedisStore,
    user: str | None = None,
    client: str | None = None,
    *,
    at: float = T0,
    timeout_s: float = 1800.0,
    absolute_at: float = T0 + 10**6,
    max_per_user: int = 0,
    report: Report = drop,
) -> SessionRecord:
    """A new session created at `at` (not a resumed one)."""
    record = session_record(
        sid=store.new_id(user, client), user=user, client=client, created=at, timeout_s=timeout_s,
        absolute_at=absolute_at,
    )  # fmt: skip
    stored, resumed = await store.create(record, at, max_per_user, report=report)
    assert not resumed
    return stored


def part(sid: str) -> int:
    shard = shard_of_id(sid)
    assert shard is not None
    return shard


def cost(record: SessionRecord, blob: bytes | None = None) -> int:
    return session_bytes(record.session_id, None, record.blob if blob is None else blob, record.meta)


async def stored_bytes(store: RedisStore, now: float) -> int | None:
    await store.refresh_stats(now)
    return store.stats(now).memory_bytes


async def traces(store: RedisStore, record: SessionRecord) -> list[str]:
    """Every key that still names the session: its hash, the deadline index, its user's index, its pair."""
    sid, client = record.session_id, store.client
    shard = store.shard_for(sid)
    assert shard is not None
    found = []
    if await client.exists(shard.key(sid)):
        found.append("hash")
    if await client.zscore(shard.deadlines, sid) is not None:
        found.append("exp")
    if record.user_id is not None and await client.zscore(f"{shard.prefix}u:{record.user_id}", sid) is not None:
        found.append("user index")
    if record.client_id is not None:
        pair = f"{shard.prefix}c:{record.client_id}" + ("" if record.user_id is None else f"\x1f{record.user_id}")
        if await client.get(pair) == sid.encode():
            found.append("pair")
    return found


@pytest.fixture
def ended() -> Endings:
    """What the calls a test passes it to ended."""
    return Endings()


def reasons(ended: Endings) -> list[str]:
    return [reason for *_, reason in ended]


# -- expiry: the exact deadline --------------------------------------------------------------------------


async def test_redis_a_session_expires_exactly_at_its_idle_deadline(store: RedisStore) -> None:
    s = await put(store, timeout_s=600.0)
    assert await store.touch(s.session_id, T0 + 599.5) is not None
    assert await store.touch(s.session_id, T0 + 599.5 + 600.0) is None  # idle exactly its timeout


async def test_redis_the_absolute_deadline_caps_activity(store: RedisStore, ended: Endings) -> None:
    """Touched often, the session still ends at its absolute deadline: to the touch and to a cleanup."""
    s = await put(store, timeout_s=600.0, absolute_at=T0 + 1000.0)
    for at in (T0 + 400.0, T0 + 800.0, T0 + 999.5):
        assert await store.touch(s.session_id, at) is not None
    assert await store.touch(s.session_id, T0 + 1000.0) is None
    batch = await store.remove_idle(T0 + 1000.0, None, 10, set(), part(s.session_id), report=ended.absorb)
    assert (batch.removed, reasons(ended)) == (1, ["expired"])


# -- cleanup ------------------------------------------------------------------------------------------------


async def test_redis_idle_exactly_the_max_age_is_removed(store: RedisStore, ended: Endings) -> None:
    s = await put(store, "ola")
    kept = await put(store, "ola", at=T0 + 0.5)  # the same user: the same shard
    batch = await store.remove_idle(T0 + 600.0, 600.0, 10, set(), part(s.session_id), report=ended.absorb)
    assert (batch.removed, reasons(ended)) == (1, ["idle"])
    assert await store.touch(s.session_id, T0 + 600.0) is None
    assert await store.touch(kept.session_id, T0 + 600.0) is not None  # idle 599.5 s


async def test_redis_expired_and_idle_in_one_run_count_once_with_their_reasons(
    store: RedisStore, ended: Endings
) -> None:
    """One user's shard: two sessions expired, one only idle, one fresh; a max-age run takes three, once."""
    expired = [await put(store, "ann", timeout_s=60.0) for _ in range(2)]
    idle = await put(store, "ann")
    fresh = await put(store, "ann", at=T0 + 290.0)
    batch = await store.remove_idle(T0 + 300.0, 120.0, 10, set(), part(idle.session_id), report=ended.absorb)
    assert (batch.removed, ended.counts) == (3, {"expired": 2, "idle": 1})
    assert sorted(reason for *_, reason in ended) == ["expired", "expired", "idle"]
    assert ended.lifetime_s == 0.0 and not batch.failed and batch.exhausted
    assert [await traces(store, s) for s in [*expired, idle]] == [[], [], []]
    assert await store.touch(fresh.session_id, T0 + 300.0) is not None


async def test_redis_a_max_age_run_reads_past_kept_sessions_up_to_the_longest_timeout(
    store: RedisStore, ended: Endings
) -> None:
    """Mixed timeouts, one user's shard: the deadline order is not the activity order. A short-timeout
    session used just now (deadline soonest, kept) comes before a long-timeout one idle past the max age."""
    long_idle = await put(store, "ned", timeout_s=3600.0)
    short_used = await put(store, "ned", timeout_s=300.0, at=T0 + 650.0)
    long_used = await put(store, "ned", timeout_s=3600.0, at=T0 + 650.0)
    batch = await store.remove_idle(T0 + 660.0, 600.0, 10, set(), part(long_idle.session_id), report=ended.absorb)
    assert (batch.removed, reasons(ended), batch.exhausted) == (1, ["idle"], True)
    assert await traces(store, long_idle) == []
    assert [await store.touch(s.session_id, T0 + 660.0) is not None for s in (short_used, long_used)] == [True, True]


async def test_redis_the_activity_index_of_earlier_versions_is_dropped_by_a_cleanup(store: RedisStore) -> None:
    s = await put(store, "ora")
    shard = store.shard_for(s.session_id)
    assert shard is not None
    await store.client.zadd(shard.prefix + "idx", {s.session_id: T0})
    await store.remove_idle(T0 + 1.0, None, 10, set(), part(s.session_id))
    assert await store.client.exists(shard.prefix + "idx") == 0
    assert await traces(store, s) == ["hash", "exp", "user index"]


@pytest.mark.parametrize("max_idle_s", [None, 30.0], ids=["expired", "max-age"])
async def test_redis_a_batch_removes_at_most_its_limit(store: RedisStore, max_idle_s: float | None) -> None:
    """Also in a max-age run, whose second sweep (the idle) must not add to what the first took."""
    sessions = [await put(store, "bea", timeout_s=60.0) for _ in range(3)]
    sessions += [await put(store, "bea") for _ in range(2)]  # idle, not expired
    where = part(sessions[0].session_id)
    first = await store.remove_idle(T0 + 60.0, max_idle_s, 3, set(), where)
    assert (first.removed, first.exhausted) == (3, False)
    second = await store.remove_idle(T0 + 60.0, max_idle_s, 3, set(), where)
    assert (second.removed, second.exhausted) == ((0, True) if max_idle_s is None else (2, True))


# -- every removal leaves no trace ---------------------------------------------------------------------


@pytest.mark.parametrize("how", ["delete", "expired", "idle", "revoke", "user_limit", "rotate"])
async def test_redis_a_removed_session_leaves_no_key_naming_it(store: RedisStore, how: str, ended: Endings) -> None:
    s = await put(store, "cat", CLIENT, timeout_s=600.0)
    assert await traces(store, s) == ["hash", "exp", "user index", "pair"]
    now = T0 + 10.0
    if how == "delete":
        assert await store.delete(s.session_id, now, "cat", report=ended.absorb) is not None
    elif how in ("expired", "idle"):
        now = T0 + 600.0 if how == "expired" else T0 + 300.0
        max_idle = None if how == "expired" else 60.0
        batch = await store.remove_idle(now, max_idle, 10, set(), part(s.session_id), report=ended.absorb)
        assert batch.removed == 1
    elif how == "revoke":
        assert await store.revoke_user("cat", now, report=ended.absorb) == 1
    elif how == "user_limit":
        await put(store, "cat", "browser-0002", at=now, max_per_user=1, report=ended.absorb)
    else:
        new_id = store.new_id("cat", CLIENT, like=s.session_id)
        assert await store.rotate(s.session_id, new_id, now, "cat", report=ended.absorb) is not None
    assert await traces(store, s) == []
    reason = {"delete": "deleted", "revoke": "revoked", "rotate": "rotated"}.get(how, how)
    assert reasons(ended) == [reason]


async def test_redis_removing_an_old_session_keeps_the_clients_pair_to_its_new_one(store: RedisStore) -> None:
    """The client's first session expired and it got a new one: removing the old one (a cleanup, then a
    delete of another expired one) leaves the client resuming the new one."""
    old = await put(store, "dan", CLIENT, timeout_s=60.0)
    older = await put(store, "dan", "browser-0002", timeout_s=60.0)
    new = await put(store, "dan", CLIENT, at=T0 + 60.0)
    again = await put(store, "dan", "browser-0002", at=T0 + 60.0)
    assert await store.delete(older.session_id, T0 + 61.0) is not None
    assert (await store.remove_idle(T0 + 61.0, None, 10, set(), part(old.session_id))).removed == 1
    for client, expect in ((CLIENT, new), ("browser-0002", again)):
        probe = session_record(sid=store.new_id("dan", client), user="dan", client=client, created=T0 + 62.0)
        resumed, was_resumed = await store.create(probe, T0 + 62.0)
        assert was_resumed and resumed.session_id == expect.session_id


async def test_redis_a_client_resumes_only_a_live_session(store: RedisStore) -> None:
    first = await put(store, None, CLIENT, timeout_s=60.0)
    probe = session_record(sid=store.new_id(None, CLIENT), client=CLIENT, created=T0 + 30.0)
    resumed, was_resumed = await store.create(probe, T0 + 30.0)
    assert was_resumed and resumed.session_id == first.session_id and resumed.last_activity == T0 + 30.0
    late = session_record(sid=store.new_id(None, CLIENT), client=CLIENT, created=T0 + 90.0)
    created, was_resumed = await store.create(late, T0 + 90.0)  # `first` expired at T0 + 90
    assert not was_resumed and created.session_id == late.session_id


async def test_redis_an_id_already_stored_is_not_overwritten(store: RedisStore) -> None:
    s = await put(store, "eve")
    twin = session_record(sid=s.session_id, user="fay", created=T0 + 1.0, blob=b'"other"')
    with pytest.raises(SessionStoreException, match="already stored"):
        await store.create(twin, T0 + 1.0)
    got = await store.touch(s.session_id, T0 + 2.0)
    assert got is not None and got.user_id == "eve" and got.blob == s.blob


async def test_redis_a_create_retried_after_a_lost_reply_answers_its_own_session(
    store: RedisStore, ended: Endings
) -> None:
    """redis-py's cluster client retries a command after a timeout: the script may have run already."""
    s = await put(store, "eve")
    again = session_record(sid=s.session_id, user="eve", created=s.created_at, blob=s.blob)
    stored, resumed = await store.create(again, T0 + 0.5, report=ended.absorb)
    assert (stored.session_id, resumed, len(ended)) == (s.session_id, False, 0)
    assert [r.session_id for r in (await store.list_user("eve", T0 + 1.0, 10, 0))[0]] == [s.session_id]
    await store.refresh_stats(T0 + 1.0)
    assert store.stats(T0 + 1.0).stored == 1  # stored once, counted once


# -- the user's index ---------------------------------------------------------------------------------


async def test_redis_the_users_index_lives_as_long_as_its_sessions(store: RedisStore) -> None:
    short = await put(store, "gus", timeout_s=60.0)
    long = await put(store, "gus", timeout_s=3600.0)
    client = store.client
    shard = store.shard_for(long.session_id)
    assert shard is not None and shard is store.shard_for(short.session_id)
    user_ttl = await client.pttl(f"{shard.prefix}u:gus")
    assert user_ttl >= await client.pttl(shard.key(long.session_id)) > 0


async def test_redis_the_per_user_limit_ends_exactly_the_least_recently_active(
    store: RedisStore, ended: Endings
) -> None:
    a = await put(store, "hal", at=T0)
    b = await put(store, "hal", at=T0 + 1.0)
    assert await store.touch(a.session_id, T0 + 2.0, "hal") is not None  # b is now the least recent
    c = await put(store, "hal", at=T0 + 3.0, max_per_user=3, report=ended.absorb)
    assert reasons(ended) == []  # three live: at the limit, none ended
    d = await put(store, "hal", at=T0 + 4.0, max_per_user=3, report=ended.absorb)
    assert reasons(ended) == ["user_limit"]
    page, total = await store.list_user("hal", T0 + 5.0, 10, 0)
    assert total == 3 and [r.session_id for r in page] == [d.session_id, c.session_id, a.session_id]
    assert await traces(store, b) == []


async def test_redis_sessions_active_at_the_same_instant_are_in_the_order_they_were_used(
    store: RedisStore, ended: Endings
) -> None:
    """Ties of last activity: the later touch is the more recent, whatever the creation order."""
    a = await put(store, "ida")
    b = await put(store, "ida")
    for s in (b, a):
        assert await store.touch(s.session_id, T0 + 5.0, "ida") is not None
    page, _ = await store.list_user("ida", T0 + 6.0, 10, 0)
    assert [r.session_id for r in page] == [a.session_id, b.session_id]
    for s in (a, b):
        assert await store.touch(s.session_id, T0 + 7.0, "ida") is not None
    page, _ = await store.list_user("ida", T0 + 8.0, 10, 0)
    assert [r.session_id for r in page] == [b.session_id, a.session_id]
    await put(store, "ida", at=T0 + 9.0, max_per_user=2, report=ended.absorb)
    assert [ending[0] for ending in ended] == [a.session_id]


async def test_redis_a_touch_writes_the_session_and_its_deadline_only(store: RedisStore) -> None:
    """The safety-net TTLs follow the absolute deadline from the create on; a touch moves the deadline."""
    s = await put(store, "jon", absolute_at=T0 + 7200.0)
    shard = store.shard_for(s.session_id)
    assert shard is not None
    client, user_index = store.client, f"{shard.prefix}u:jon"
    ttls = (await client.pttl(shard.key(s.session_id)), await client.pttl(user_index))
    assert min(ttls) >= 7200_000 and max(ttls) <= 7260_000
    assert await store.touch(s.session_id, T0 + 100.0, "jon") is not None
    assert await client.zscore(shard.deadlines, s.session_id) == T0 + 100.0 + 1800.0
    assert (await client.pttl(shard.key(s.session_id)), await client.pttl(user_index)) <= ttls


async def test_redis_a_session_stored_by_an_earlier_version_gets_its_ttls_at_its_first_touch(store: RedisStore) -> None:
    """Hashes written before touches stopped moving the TTLs carry no 'order' and a short TTL."""
    s = await put(store, "kim", absolute_at=T0 + 7200.0)
    shard = store.shard_for(s.session_id)
    assert shard is not None
    client, key, user_index = store.client, shard.key(s.session_id), f"{shard.prefix}u:kim"
    await client.hdel(key, "order")
    await client.pexpire(key, 5000)
    await client.pexpire(user_index, 5000)
    assert await store.touch(s.session_id, T0 + 1.0, "kim") is not None
    assert await client.pttl(key) > 7000_000 and await client.pttl(user_index) > 7000_000
    assert await client.hget(key, "order") is not None


async def test_redis_list_user_pages_most_recent_first(store: RedisStore) -> None:
    await put(store, "ivy", timeout_s=11.0)  # due at the listing's time: not listed, not counted
    sessions = [await put(store, "ivy", at=T0 + i) for i in range(5)]
    assert await store.touch(sessions[1].session_id, T0 + 10.0) is not None
    order = [sessions[i].session_id for i in (1, 4, 3, 2, 0)]
    pages = [await store.list_user("ivy", T0 + 11.0, 2, offset) for offset in (0, 2, 4, 6)]
    assert [total for _, total in pages] == [5, 5, 5, 5]
    assert [[r.session_id for r in page] for page, _ in pages] == [order[0:2], order[2:4], order[4:], []]


async def test_redis_revoke_tells_revoked_from_expired_at_the_deadline(store: RedisStore, ended: Endings) -> None:
    live = await put(store, "jo", timeout_s=600.0, at=T0 + 0.5)
    due = await put(store, "jo", timeout_s=600.0)
    assert await store.revoke_user("jo", T0 + 600.0, report=ended.absorb) == 1  # `due` is expired from its deadline on
    assert {sid: reason for sid, *_, reason in ended} == {live.session_id: "revoked", due.session_id: "expired"}


# -- rotation -----------------------------------------------------------------------------------------


async def test_redis_a_rotated_session_keeps_its_place_in_every_index(store: RedisStore) -> None:
    s = await put(store, "kim", CLIENT, timeout_s=600.0)
    other = await put(store, "kim", at=T0 + 5.0)
    new_id = store.new_id("kim", CLIENT, like=s.session_id)
    rotated = await store.rotate(s.session_id, new_id, T0 + 10.0, "kim")
    assert rotated is not None and rotated.last_activity == T0
    after = session_record(sid=new_id, user="kim", client=CLIENT)
    assert await traces(store, after) == ["hash", "exp", "user index", "pair"]
    await store.refresh_stats(T0 + 10.0)
    assert store.stats(T0 + 10.0).stored == 2
    page, total = await store.list_user("kim", T0 + 10.0, 10, 0)
    assert total == 2 and [r.session_id for r in page] == [other.session_id, new_id]
    batch = await store.remove_idle(T0 + 600.0, None, 10, set(), part(new_id))
    assert batch.removed == 1 and await store.touch(new_id, T0 + 600.0) is None


# -- ownership ----------------------------------------------------------------------------------------


async def test_redis_only_the_owner_or_anyone_on_a_session_of_no_user_acts(store: RedisStore) -> None:
    mine = await put(store, "lea")
    now = T0 + 1.0
    assert await store.touch(mine.session_id, now, "max") is None
    assert await store.replace_data(mine.session_id, b'"x"', now, "max") is None
    assert await store.rotate(mine.session_id, store.new_id("lea", None, like=mine.session_id), now, "max") is None
    assert await store.delete(mine.session_id, now, "max") is None
    assert await store.touch(mine.session_id, now, "lea") is not None
    assert await store.touch(mine.session_id, now) is not None  # no user named: the service itself
    nobodys = await put(store)
    assert await store.touch(nobodys.session_id, now, "max") is not None
    assert await store.delete(nobodys.session_id, now, "max") is not None


# -- data and bytes ---------------------------------------------------------------------------------


async def test_redis_the_byte_count_follows_every_change(store: RedisStore, ended: Endings) -> None:
    a = await put(store, "ned", timeout_s=60.0)
    b = await put(store, "ned")
    assert await stored_bytes(store, T0) == cost(a) + cost(b)
    bigger = b'{"blob":"' + b"y" * 5000 + b'"}'
    assert await store.replace_data(b.session_id, bigger, T0 + 1.0) is not None
    assert await stored_bytes(store, T0 + 1.0) == cost(a) + cost(b, bigger)
    smaller = b'"s"'
    assert await store.replace_data(b.session_id, smaller, T0 + 2.0) is not None
    assert await stored_bytes(store, T0 + 2.0) == cost(a) + cost(b, smaller)
    batch = await store.remove_idle(T0 + 60.0, None, 10, set(), part(a.session_id), report=ended.absorb)
    assert (batch.removed, ended.freed_bytes) == (1, cost(a))
    assert await stored_bytes(store, T0 + 60.0) == cost(b, smaller)
    assert await store.delete(b.session_id, T0 + 61.0) is not None
    assert await stored_bytes(store, T0 + 61.0) == 0


async def test_redis_data_exactly_at_the_size_limit_is_taken(store: RedisStore) -> None:
    s = await put(store)
    blob = b'"' + b"z" * 98 + b'"'
    limit = len(blob) + len(s.meta)
    with pytest.raises(SessionDataTooLargeError):
        await store.replace_data(s.session_id, blob + b" ", T0 + 1.0, limit=limit)
    got = await store.replace_data(s.session_id, blob, T0 + 1.0, limit=limit)
    assert got is not None and got.blob == blob
    touched = await store.touch(s.session_id, T0 + 2.0)
    assert touched is not None and touched.blob == blob


# -- the cleanup lease ------------------------------------------------------------------------------


async def test_redis_a_lost_lease_is_not_renewed_over_its_new_holder(redis_url: str) -> None:
    """The first holder's lease lapsed (its key gone, as by its TTL) and another replica took it: the first
    holder's renew neither succeeds nor extends the new holder's lease."""
    first, second = RedisStore(redis_url), RedisStore(redis_url)
    try:
        token = await first.acquire_lease(30.0, 7)
        assert token is not None and await first.renew_lease(token, 30.0)
        lease = first.shards[7].lease
        await first.client.delete(lease)
        taken = await second.acquire_lease(2.0, 7)
        assert taken is not None
        assert not await first.renew_lease(token, 30.0)
        assert 0 < await first.client.pttl(lease) <= 2000
        assert await second.renew_lease(taken, 3.0) and await first.client.pttl(lease) > 2000
    finally:
        await first.close()
        await second.close()


async def test_redis_a_lost_lease_is_not_released_from_its_new_holder(redis_url: str) -> None:
    first, second = RedisStore(redis_url), RedisStore(redis_url)
    try:
        token = await first.acquire_lease(30.0, 7)
        assert token is not None
        lease = first.shards[7].lease
        await first.client.delete(lease)
        taken = await second.acquire_lease(30.0, 7)
        assert taken is not None
        await first.release_lease(token)
        assert await first.client.get(lease) == taken.encode()
        await second.release_lease(taken)
        assert await first.client.exists(lease) == 0
    finally:
        await first.close()
        await second.close()
