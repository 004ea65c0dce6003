"""Versioned session data on every store (memory, one Redis, the cluster): concurrent merge patches lose
nothing, conditional writes of one version let exactly one through, merges follow RFC 7396 byte for byte
as the memory store builds them, and only data changes move the version."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from faultmaven.config import Settings
from faultmaven.exceptions import (
    SessionDataTooLargeError,
    SessionNotFoundError,
    SessionStoreFullError,
    SessionVersionConflict,
)
from faultmaven.merge_patch import merge_patch
from faultmaven.session_management import SessionManager
from faultmaven.stores import SessionStore
from faultmaven.stores.redis.store import RedisStore
from tests.support import FakeClock

LIMIT = 4096


@pytest.fixture
async def manager(make_store: Callable[[], SessionStore], clock: FakeClock) -> AsyncIterator[SessionManager]:
    settings = Settings(cleanup_enabled=False, max_data_bytes=LIMIT)
    mgr = SessionManager(make_store(), settings=settings, clock=clock)
    yield mgr
    await mgr.close()


async def current(manager: SessionManager, sid: str) -> tuple[dict[str, Any], int]:
    session = await manager.get_session(sid)
    assert session is not None
    return session.data, session.version


async def test_fifty_concurrent_merge_patches_of_distinct_keys_all_land(manager: SessionManager) -> None:
    sid = (await manager.create_session("alice", {"base": True})).session_id
    patches = [manager.update_session(sid, {f"key-{i}": i}, user_id="alice", merge=True) for i in range(50)]
    versions = sorted(s.version for s in await asyncio.gather(*patches))
    assert versions == list(range(2, 52))  # each patch saw the one before it: no two wrote the same version
    data, version = await current(manager, sid)
    assert data == {"base": True} | {f"key-{i}": i for i in range(50)} and version == 51


async def test_two_conditional_writes_of_one_version_let_exactly_one_through(manager: SessionManager) -> None:
    sid = (await manager.create_session(data={"n": 0})).session_id
    for round_ in range(1, 6):  # several rounds: on Redis either of the two may reach the server first
        writes = [manager.update_session(sid, {"n": round_, "by": w}, if_version=round_) for w in ("a", "b")]
        results = await asyncio.gather(*writes, return_exceptions=True)
        won = [r for r in results if not isinstance(r, BaseException)]
        lost = [r for r in results if isinstance(r, BaseException)]
        assert len(won) == 1 and len(lost) == 1, results
        assert isinstance(lost[0], SessionVersionConflict) and lost[0].current_version == round_ + 1
        data, version = await current(manager, sid)
        assert version == round_ + 1 and data == won[0].data


async def test_a_stale_version_changes_nothing_not_even_activity(manager: SessionManager, clock: FakeClock) -> None:
    sid = (await manager.create_session("alice", {"a": 1})).session_id
    written = await manager.update_session(sid, {"a": 2}, if_version=1)
    assert written.version == 2
    clock.advance(60)
    for stale in (1, 3, 0, -1):
        with pytest.raises(SessionVersionConflict) as raised:
            await manager.update_session(sid, {"a": 3}, if_version=stale, merge=bool(stale % 2))
        assert raised.value.current_version == 2
    (listed,) = await manager.list_user_sessions("alice")  # a read that records no activity itself
    assert (listed.data, listed.version, listed.last_activity) == ({"a": 2}, 2, written.last_activity)
    with pytest.raises(TypeError):
        await manager.update_session(sid, {"a": 4}, if_version="2")  # type: ignore[arg-type]


async def test_a_write_records_activity_and_another_users_write_finds_nothing(
    manager: SessionManager, clock: FakeClock
) -> None:
    sid = (await manager.create_session("alice", {"a": 1})).session_id
    clock.advance(90)
    for merge in (False, True):
        with pytest.raises(SessionNotFoundError):
            await manager.update_session(sid, {"a": 9}, user_id="bob", merge=merge, if_version=1)
    written = await manager.update_session(sid, {"b": 2}, user_id="alice", merge=True, if_version=1)
    (listed,) = await manager.list_user_sessions("alice")
    assert written.last_activity.timestamp() == listed.last_activity.timestamp() == clock.now
    assert (listed.data, listed.version) == ({"a": 1, "b": 2}, 2)


async def test_a_conditional_write_to_a_missing_session_is_not_found(manager: SessionManager) -> None:
    sid = (await manager.create_session()).session_id
    assert await manager.delete_session(sid)
    with pytest.raises(SessionNotFoundError):
        await manager.update_session(sid, {"a": 1}, if_version=1)


MERGES: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"a": 1, "b": 2, "c": 3}, {"a": 10, "b": None, "d": 4}),  # set, remove, keep, add
    ({"o": {"x": 1, "y": {"deep": [1, 2]}}, "z": 0}, {"o": {"y": {"deep": [3], "more": None}, "w": {"n": None}}}),
    ({"arr": [1, 2, 3], "obj": {"k": "v"}}, {"arr": [], "obj": {}, "new": [], "new2": {}}),  # empty ones
    ({"arr": [{"a": 1}]}, {"arr": {"a": None, "b": [{}]}}),  # an array replaced by an object, nulls dropped
    ({"obj": {"k": 1}}, {"obj": [1, {"x": None}]}),  # an object replaced by an array, nulls inside kept
    ({"n": 1}, {"big": 2**63 + 1, "neg": -(2**70), "f": 0.1 + 0.2, "e": 1e300, "tiny": 5e-324, "z": -0.0}),
    ({"s": "x"}, {'quote"key': 'é\\"\n\u2028', "\u00e9": "\U0001f600", "ctl\u0001": "\t", "s": None}),
    ({"k": {"a": 1}}, {"k": {"a": None}}),  # the object left empty stays an object
    ({"t": True, "f": False, "n": None}, {"t": False, "n": 1}),  # a stored null is a value
    ({}, {"nested": {"a": {"b": {"c": None, "d": 1}}}}),
    ({"keep": 1}, {}),  # an empty patch changes nothing
]


@pytest.mark.parametrize(("data", "patch"), MERGES)
async def test_merge_patch_semantics_match_rfc_7396_byte_for_byte(
    manager: SessionManager, data: dict[str, Any], patch: dict[str, Any]
) -> None:
    sid = (await manager.create_session(data=data)).session_id
    merged = await manager.update_session(sid, patch, merge=True)
    expected = merge_patch(data, patch)
    got, version = await current(manager, sid)
    for value in (merged.data, got):  # the same value, and the same keys in the same order on every store
        assert json.dumps(value) == json.dumps(expected)
    assert version == (1 if expected == data else 2)


async def test_merged_data_over_the_limit_is_refused_and_changes_nothing(manager: SessionManager) -> None:
    sid = (await manager.create_session(data={"a": "x" * 1000, "b": "y" * 1000}, metadata={"m": 1})).session_id
    with pytest.raises(SessionDataTooLargeError):  # the patch alone is small; the merged result is not
        await manager.update_session(sid, {"c": "z" * 2100}, merge=True)
    assert await current(manager, sid) == ({"a": "x" * 1000, "b": "y" * 1000}, 1)
    room = LIMIT - len(b'{"a":"","b":""}') - 2000 - len(b'{"m":1}') - len(b',"c":""')
    with pytest.raises(SessionDataTooLargeError):  # one byte over, counting the metadata
        await manager.update_session(sid, {"c": "z" * (room + 1)}, merge=True)
    assert (await manager.update_session(sid, {"c": "z" * room}, merge=True)).version == 2  # exactly at it
    # Removing a key makes room: the limit applies to the merged result, not to the data plus the patch.
    assert (await manager.update_session(sid, {"a": None, "d": "w" * 900}, merge=True)).version == 3
    data, version = await current(manager, sid)
    assert set(data) == {"b", "c", "d"} and version == 3


async def test_a_merge_patch_nested_past_the_depth_limit_is_refused(manager: SessionManager) -> None:
    sid = (await manager.create_session(data={"a": 1})).session_id
    deep: dict[str, Any] = {}
    for _ in range(64):
        deep = {"d": deep}
    with pytest.raises(ValueError, match="nested too deeply"):
        await manager.update_session(sid, {"x": {"y": deep}}, merge=True)
    assert await current(manager, sid) == ({"a": 1}, 1)


async def test_activity_leaves_the_version_and_rotation_keeps_it(manager: SessionManager, clock: FakeClock) -> None:
    made = await manager.create_session("alice", {"a": 1}, client_id="tab-one-client")
    sid = made.session_id
    assert made.version == 1
    assert (await manager.update_session(sid, {"a": 2})).version == 2
    assert (await manager.update_session(sid, {"a": 3}, merge=True)).version == 3
    assert (await manager.update_session(sid, {"a": 3})).version == 3  # the same data: no change, no new version
    clock.advance(5)
    assert (await manager.touch_session(sid)).version == 3  # type: ignore[union-attr]
    assert (await manager.get_session(sid)).version == 3  # type: ignore[union-attr]
    resumed = await manager.create_session("alice", client_id="tab-one-client")
    assert resumed.session_resumed and resumed.session_id == sid and resumed.version == 3
    (listed,) = await manager.list_user_sessions("alice")
    assert listed.version == 3
    rotated = await manager.rotate_session(sid)
    assert rotated.version == 3 and rotated.data == {"a": 3}
    assert (await manager.update_session(rotated.session_id, {"b": 1}, merge=True, if_version=3)).version == 4


async def test_a_session_stored_without_a_version_reads_as_version_1(any_redis_url: str, clock: FakeClock) -> None:
    store = RedisStore(any_redis_url)
    manager = SessionManager(store, settings=Settings(cleanup_enabled=False), clock=clock)
    try:
        sid = (await manager.create_session("alice", {"a": 1})).session_id
        shard = store.shard_for(sid)
        assert shard is not None
        assert await store.client.hdel(shard.key(sid), "version") == 1  # as an older release stored it
        assert (await manager.get_session(sid)).version == 1  # type: ignore[union-attr]
        with pytest.raises(SessionVersionConflict):
            await manager.update_session(sid, {"a": 2}, if_version=2)
        assert (await manager.update_session(sid, {"b": 2}, merge=True, if_version=1)).version == 2
        assert (await manager.get_session(sid)).data == {"a": 1, "b": 2}  # type: ignore[union-attr]
    finally:
        await manager.close()


async def test_at_the_redis_memory_limit_a_write_that_grows_is_refused(any_redis_url: str, clock: FakeClock) -> None:
    """Past SESSION_MAX_MEMORY_MB (policy reject) the update script refuses data that would grow, measured
    after the merge; a write that keeps or shrinks the data goes through."""
    settings = Settings(cleanup_enabled=False)
    filler = SessionManager(RedisStore(any_redis_url), settings=settings, clock=clock)
    sid = (await filler.create_session(data={"a": "x" * 100, "b": 1})).session_id
    await filler.close()
    store = RedisStore(any_redis_url, max_bytes=10)  # already over it
    await store.refresh_stats(clock())
    manager = SessionManager(store, settings=settings, clock=clock)
    try:
        for patch, merge in [({"c": 1}, True), ({"a": "x" * 100, "b": 10}, False)]:
            with pytest.raises(SessionStoreFullError):
                await manager.update_session(sid, patch, merge=merge)
        with pytest.raises(SessionVersionConflict):  # the version is checked first
            await manager.update_session(sid, {"c": 1}, merge=True, if_version=7)
        assert await current(manager, sid) == ({"a": "x" * 100, "b": 1}, 1)
        assert (await manager.update_session(sid, {"b": 2}, merge=True)).version == 2  # the same size
        assert (await manager.update_session(sid, {"a": None, "c": 3}, merge=True)).version == 3  # shrinks
        assert await current(manager, sid) == ({"b": 2, "c": 3}, 3)
    finally:
        await manager.close()
