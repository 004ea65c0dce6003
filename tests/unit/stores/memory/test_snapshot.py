"""The in-memory store's snapshot: every session back with everything that defines it, every list in its
order (ties in activity included), an expired one invisible and ended as expired, a broken file moved
aside, the file written atomically with mode 0600, the loop and the collector spared."""

from __future__ import annotations

import gc
import io
import logging
import os
import pickle
import time
from pathlib import Path
from typing import Any

import pytest

from faultmaven.config import Settings
from faultmaven.session_management import SessionManager
from faultmaven.stores import MemoryStore
from faultmaven.stores.memory import layout as mem
from faultmaven.stores.memory import snapshot
from faultmaven.stores.memory.snapshot import load_snapshot, write_snapshot
from tests.support import EPOCH, FakeClock, exactly, stored_record

SETTINGS = Settings(cleanup_enabled=False, max_per_user=0)


def fields(manager: SessionManager, sid: str) -> tuple[object, ...]:
    record = stored_record(manager.store, sid)  # type: ignore[attr-defined]
    assert record is not None
    return (
        record.user_id, record.client_id, record.session_type, record.created_at, record.last_activity,
        record.timeout_s, record.absolute_at, record.blob, record.meta, record.version,
    )  # fmt: skip


async def restarted(manager: SessionManager, path: Path, clock: FakeClock) -> SessionManager:
    await write_snapshot(manager.store, path)  # type: ignore[arg-type]
    again = SessionManager(MemoryStore(), settings=SETTINGS, clock=clock)
    await load_snapshot(again.store, path)  # type: ignore[arg-type]
    return again


async def test_every_session_comes_back_as_it_was(tmp_path: Path) -> None:
    clock = FakeClock()
    manager = SessionManager(MemoryStore(), settings=SETTINGS, clock=clock)
    alice = [await manager.create_session("alice", {"n": i}, metadata={"m": i}) for i in range(3)]
    clock.advance(5)
    resumable = await manager.create_session("bob", {"k": "v"}, client_id="browser-0001", timeout_minutes=5)
    anonymous = await manager.create_session(None, None, client_id="browser-0002", session_type="chat")
    await manager.update_session(alice[0].session_id, {"n": 10}, user_id="alice")
    await manager.update_session(alice[0].session_id, {"n": 11}, user_id="alice")
    clock.advance(5)
    await manager.touch_session(alice[1].session_id, user_id="alice")
    ids = [s.session_id for s in [*alice, resumable, anonymous]]
    before = {sid: fields(manager, sid) for sid in ids}
    listed = [s.session_id for s in (await manager.user_session_page("alice", limit=10, offset=0))[0]]

    again = await restarted(manager, tmp_path / "snap", clock)
    assert {sid: fields(again, sid) for sid in ids} == before
    assert [s.session_id for s in (await again.user_session_page("alice", limit=10, offset=0))[0]] == listed
    resumed = await again.create_session("bob", client_id="browser-0001")
    assert resumed.session_resumed and resumed.session_id == resumable.session_id
    clock.advance(minutes=4)  # bob's 5-minute session: touched at resume, still live; then idle past it
    clock.advance(minutes=2)
    assert await again.get_session(resumable.session_id, user_id="bob") is None
    assert await again.cleanup_inactive_sessions() == 1


async def test_a_session_that_expired_while_stopped_stays_ended(tmp_path: Path) -> None:
    clock = FakeClock()
    manager = SessionManager(MemoryStore(), settings=SETTINGS, clock=clock)
    short = await manager.create_session("u", timeout_minutes=1)
    kept = await manager.create_session("u", timeout_minutes=60)
    await write_snapshot(manager.store, tmp_path / "snap")  # type: ignore[arg-type]
    clock.advance(minutes=2)  # the process was down meanwhile
    again = SessionManager(MemoryStore(), settings=SETTINGS, clock=clock)
    ended: list[str] = []
    again.add_session_end_listener(lambda end: ended.append(end.reason))
    await load_snapshot(again.store, tmp_path / "snap")  # type: ignore[arg-type]
    assert await again.get_session(short.session_id, user_id="u") is None  # never revived
    assert await again.get_session(kept.session_id, user_id="u") is not None
    assert again.get_session_metrics()["expired_sessions"] == 1
    assert await again.cleanup_inactive_sessions() == 1
    await again.close()
    assert ended == ["expired"]


async def test_the_file_is_written_atomically_and_only_its_owner_reads_it(tmp_path: Path) -> None:
    manager = SessionManager(MemoryStore(), settings=SETTINGS, clock=FakeClock())
    await manager.create_session("u", {"secret": "data"})
    path = tmp_path / "snap"
    path.write_bytes(b"the old snapshot")
    await write_snapshot(manager.store, path)  # type: ignore[arg-type]
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snap"]  # no temporary file left behind


def _header(version: object = 1, fmt: str = "faultmaven-sessions-snapshot", count: int = 0) -> bytes:
    return pickle.dumps({"format": fmt, "version": version, "written_at": 0.0, "count": count})


STATIC = ("u", None, "troubleshooting", 1.0, 60.0, 100.0, b"{}", b"{}", 10, 1)
WRONG = [5, b"x", None, 1, "60", None, "{}", None, 1.5, "1"]  # a wrong type for each field, in order


def _file(*chunks: Any, count: int | None = None) -> bytes:
    sessions = sum(len(chunk) for chunk in chunks if isinstance(chunk, list))
    return _header(count=sessions if count is None else count) + b"".join(map(pickle.dumps, [*chunks, None]))


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "cut short or corrupt (EOFError)"),
        (b"\x80\x05garbage", "cut short or corrupt (UnpicklingError)"),
        (_header(version=2) + pickle.dumps(None), "format version 2, this build reads 1"),
        (_header(fmt="something-else") + pickle.dumps(None), "not a FaultMaven sessions snapshot"),
        (_header(), "cut short or corrupt (EOFError)"),  # no end marker: truncated
        (
            _header() + pickle.dumps([("id", "not-a-float", ())]) + pickle.dumps(None),
            "a session record has the wrong shape",
        ),
        # A class reference: refused.
        (_header() + pickle.dumps(os.system) + pickle.dumps(None), "cut short or corrupt (UnpicklingError)"),
        (_file([("a", 5.0, STATIC)], count=2), "the session count does not match the header"),
        (_file([("a", 5.0, STATIC)], [("a", 6.0, STATIC)]), "a session id appears twice"),
    ],
)
async def test_a_file_that_cannot_be_read_is_moved_aside(
    tmp_path: Path, content: bytes, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "snap"
    path.write_bytes(content)
    store = MemoryStore()
    with caplog.at_level(logging.ERROR, logger="faultmaven.sessions"):
        assert await load_snapshot(store, path) == 0
    assert len(store) == 0 and not path.exists()
    (aside,) = tmp_path.glob("snap.unreadable-*")
    assert aside.read_bytes() == content  # kept, never overwritten
    (record,) = caplog.records  # one line: what happened, why, and where the file went
    assert record.getMessage() == "Session snapshot unreadable: moved aside, starting empty"
    assert (record.reason, record.moved_to) == (why, str(aside))  # type: ignore[attr-defined]
    store.check()  # left empty, nothing half loaded: a good file loads into it
    path.write_bytes(_file([("a", 5.0, STATIC)]))
    assert await load_snapshot(store, path) == 1


async def test_no_file_no_sessions(tmp_path: Path) -> None:
    assert await load_snapshot(MemoryStore(), tmp_path / "absent") == 0
    assert list(tmp_path.iterdir()) == []


def lists(store: MemoryStore) -> dict[str, list[str]]:
    """Every list of the store, walked in order: each lane, the creation list, each user's list, the pairs."""
    found = store.index.lists()
    found |= {f"user {user}": ids[::-1] for user, ids in store.owners.users.lists().items()}  # most recent first
    found["pairs"] = store.owners.pairs.lists()
    return found


async def test_sessions_last_active_at_one_instant_come_back_in_the_order_of_every_list(tmp_path: Path) -> None:
    """Two users, anonymous sessions and clients, three timeouts, half created at one instant and the rest
    created and touched at the next: the order of each lane and of each user's list among sessions last
    active at one instant is only in the lists themselves (not in the times), and comes back."""
    clock = FakeClock()
    manager = SessionManager(MemoryStore(), settings=SETTINGS, clock=clock)
    ids = []
    for i in range(12):
        clock.advance(1 if i == 6 else 0)
        user = (None, "alice", "bob")[i % 3]
        client = f"browser-{i:04d}" if i % 4 == 0 else None
        created = await manager.create_session(user, {"i": i}, client_id=client, timeout_minutes=(30, 60, 5)[i % 4 % 3])
        ids.append((created.session_id, user))
    for sid, user in [ids[i] for i in (4, 1, 7, 0, 10, 4, 2, 11)]:  # touches at the same instant
        assert await manager.touch_session(sid, user_id=user) is not None
    clock.advance(1)
    await manager.touch_session(ids[5][0], user_id=ids[5][1])
    before = lists(manager.store)  # type: ignore[arg-type]
    assert len(before) == 7  # three lanes, the creation list, two users, the pairs

    again = await restarted(manager, tmp_path / "snap", clock)
    after = lists(again.store)  # type: ignore[arg-type]
    again.store.check()  # type: ignore[attr-defined]
    # Sessions created at one instant share their absolute deadline, so their order in the creation list
    # decides nothing: it is not kept. Every other list is, in its order.
    created = after.pop("created")
    assert sorted(created) == sorted(before.pop("created"))
    times = [stored_record(again.store, sid).created_at for sid in created]  # type: ignore[attr-defined]
    assert times == sorted(times) and len(set(times)) == 2
    assert after == before


def _nodes(*lanes: list[str]) -> dict[str, mem.Node]:
    """Nodes of sessions in lanes (no creation links, no fields: what the writer's ordering reads)."""
    nodes: dict[str, mem.Node] = {}
    for lane in lanes:
        for prev, sid, nxt in zip([None, *lane[:-1]], lane, [*lane[1:], None], strict=True):
            nodes[sid] = (prev, nxt, None, None, 0.0, 0, ())  # type: ignore[assignment]
    return nodes


def test_the_writer_keeps_each_users_order_across_lanes() -> None:
    # Lanes [a1, a2] and [b1, b2]; one user's list, least recent first: b1, a1, b2, a2.
    user = {"b1": (None, "a1"), "a1": ("b1", "b2"), "b2": ("a1", "a2"), "a2": ("b2", None)}
    nodes = _nodes(["a1", "a2"], ["b1", "b2"])
    written = [sid for sid, _ in snapshot._list_order(nodes, ["a1", "b1"], user.get)]
    assert written == ["b1", "a1", "b2", "a2"]
    assert nodes == {}  # the copy is emptied as the sessions are written


def test_the_writer_waits_for_each_session_before_it_in_its_users_list() -> None:
    # Three lanes of one session each, heads in the order a, b, c; the user's list, least recent first:
    # c, b, a. Each waits for the one before it, which comes out only after the lanes' heads were read.
    user = {"c": (None, "b"), "b": ("c", "a"), "a": ("b", None)}
    written = [sid for sid, _ in snapshot._list_order(_nodes(["a"], ["b"], ["c"]), ["a", "b", "c"], user.get)]
    assert written == ["c", "b", "a"]


def test_user_links_that_changed_while_read_cannot_hold_the_writer() -> None:
    """A user's links read while the store changes can form a cycle: every session is still written once."""
    cycle = {"a": ("c", None), "b": ("a", None), "c": ("b", None)}
    nodes = _nodes(["a", "x"], ["b"], ["c"])
    written = [sid for sid, _ in snapshot._list_order(nodes, ["a", "b", "c"], cycle.get)]
    assert sorted(written) == ["a", "b", "c", "x"]
    assert written.index("a") < written.index("x")  # a lane's order holds whatever the user links say


async def test_a_snapshot_larger_than_a_chunk_is_written_in_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshot, "CHUNK", 3)
    manager = SessionManager(MemoryStore(), settings=SETTINGS, clock=FakeClock())
    for i in range(10):
        await manager.create_session("u" if i % 2 else None, {"i": i})
    started = time.time()
    assert await write_snapshot(manager.store, tmp_path / "snap") == 10  # type: ignore[arg-type]
    file = io.BytesIO((tmp_path / "snap").read_bytes())
    header, chunks = pickle.load(file), []
    while (chunk := pickle.load(file)) is not None:
        chunks.append(len(chunk))
    assert chunks == [3, 3, 3, 1]
    written_at = header.pop("written_at")  # the wall clock when it was written, for whoever reads the file
    assert header == {"format": "faultmaven-sessions-snapshot", "version": 1, "count": 10}
    assert started <= written_at <= time.time()
    again = MemoryStore()
    assert await load_snapshot(again, tmp_path / "snap") == 10
    assert lists(again) == lists(manager.store)  # type: ignore[arg-type]


async def test_loading_holds_off_full_collections_and_puts_the_thresholds_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A load runs the youngest generation's collections only; the thresholds are back afterwards, also
    after a file that cannot be read."""
    manager = SessionManager(MemoryStore(), settings=SETTINGS, clock=FakeClock())
    await manager.create_session("u")
    await write_snapshot(manager.store, tmp_path / "snap")  # type: ignore[arg-type]
    thresholds = gc.get_threshold()
    during: list[tuple[int, ...]] = []
    load = MemoryStore.load
    monkeypatch.setattr(MemoryStore, "load", lambda self, *a: (during.append(gc.get_threshold()), load(self, *a)))
    assert await load_snapshot(MemoryStore(), tmp_path / "snap") == 1
    assert during == [(thresholds[0], 1 << 30, 1 << 30)]
    assert gc.get_threshold() == thresholds
    (tmp_path / "snap").write_bytes(b"garbage")
    assert await load_snapshot(MemoryStore(), tmp_path / "snap") == 0
    assert gc.get_threshold() == thresholds


@pytest.mark.parametrize("enabled", [True, False])
async def test_writing_pauses_the_collector_and_leaves_it_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, enabled: bool
) -> None:
    """The copy a snapshot encodes is as large as the store: no collection walks it while it is written."""
    manager = SessionManager(MemoryStore(), settings=SETTINGS, clock=FakeClock())
    await manager.create_session("u")
    during: list[bool] = []
    write = snapshot._write
    monkeypatch.setattr(snapshot, "_write", lambda *args: (during.append(gc.isenabled()), write(*args))[1])
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        assert await write_snapshot(manager.store, tmp_path / "snap") == 1  # type: ignore[arg-type]
        assert during == [False] and gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


@pytest.mark.parametrize(
    "chunk",
    [
        *([("id", 1.0, (*STATIC[:i], wrong, *STATIC[i + 1 :]))] for i, wrong in enumerate(WRONG)),
        [(5, 1.0, STATIC)],  # the id
        [("id", "1.0", STATIC)],  # the last activity
        [("id", 1.0, list(STATIC))],  # the fields
        [("id", 1.0, STATIC[:9])],
        [("id", 1.0)],
        [("id", 1.0, STATIC), ["id2", 1.0, STATIC]],
        (("id", 1.0, STATIC),),  # a chunk that is no list
    ],
)
async def test_a_record_of_another_shape_makes_the_file_unreadable(
    tmp_path: Path, chunk: Any, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "snap"
    path.write_bytes(_file(chunk, count=len(chunk)))
    store = MemoryStore()
    with caplog.at_level(logging.ERROR, logger="faultmaven.sessions"):
        assert await load_snapshot(store, path) == 0
    assert len(store) == 0 and list(tmp_path.glob("snap.unreadable-*"))
    (record,) = caplog.records
    assert record.reason == "a session record has the wrong shape"  # type: ignore[attr-defined]


async def test_a_file_is_read_chunk_by_chunk_an_empty_one_too(tmp_path: Path) -> None:
    path = tmp_path / "snap"
    path.write_bytes(_file([("a", 5.0, STATIC)], [], [("b", 6.0, (None, "tab", *STATIC[2:]))]))
    store = MemoryStore()
    assert await load_snapshot(store, path) == 2
    assert [stored_record(store, sid).last_activity for sid in "ab"] == [5.0, 6.0]  # type: ignore[union-attr]
    assert store.owners.users.ids("u") == ["a"] and store.owners.pairs.get(None, "tab") == "b"
    store.check()


async def test_loading_into_a_store_that_holds_sessions_is_a_mistake_not_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "snap"
    path.write_bytes(_file([("a", 5.0, STATIC)]))
    store = MemoryStore()
    assert await load_snapshot(store, path) == 1
    with pytest.raises(ValueError, match=exactly("load() fills an empty index")):
        await load_snapshot(store, path)
    assert path.exists() and len(store) == 1


def test_a_store_loads_sessions_by_position() -> None:
    store = MemoryStore()
    statics = [(*STATIC[:3], created, *STATIC[4:]) for created in (1.0, 2.0, 0.0)]
    store.load(["a", "b", "c"], [EPOCH + 2, EPOCH, EPOCH + 1], statics)  # type: ignore[arg-type]
    assert lists(store) == {
        "lane 60.0": ["b", "c", "a"], "created": ["c", "a", "b"], "user u": ["a", "c", "b"], "pairs": []
    }  # fmt: skip
    assert store.index.bytes == 30


async def test_a_write_that_fails_leaves_the_last_snapshot_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = SessionManager(MemoryStore(), settings=SETTINGS, clock=FakeClock())
    await manager.create_session("u")
    path = tmp_path / "snap"
    path.write_bytes(b"the last snapshot")

    def full_disk(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(snapshot, "_dump", full_disk)
    with pytest.raises(OSError, match="No space left"):
        await write_snapshot(manager.store, path)  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snap"] and path.read_bytes() == b"the last snapshot"
