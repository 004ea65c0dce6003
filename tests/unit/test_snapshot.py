"""The in-memory store's snapshot: every session back with everything that defines it, an expired one
invisible and ended as expired, a broken file moved aside, the file written atomically with mode 0600."""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import pytest

from faultmaven.config import Settings
from faultmaven.session_management import SessionManager
from faultmaven.stores import MemoryStore
from faultmaven.stores.memory.snapshot import load_snapshot, write_snapshot
from tests.support import FakeClock

SETTINGS = Settings(cleanup_enabled=False, max_per_user=0)


def fields(manager: SessionManager, sid: str) -> tuple[object, ...]:
    record = manager.store.record(sid)  # type: ignore[attr-defined]
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


def _header(version: object = 1, fmt: str = "faultmaven-sessions-snapshot") -> bytes:
    return pickle.dumps({"format": fmt, "version": version, "written_at": 0.0, "count": 0})


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "cut short"),
        (b"\x80\x05garbage", "corrupt"),
        (_header(version=2) + pickle.dumps(None), "format version 2"),
        (_header(fmt="something-else") + pickle.dumps(None), "not a FaultMaven"),
        (_header(), "cut short"),  # no end marker: truncated
        (_header() + pickle.dumps([("id", "not-a-float", ())]) + pickle.dumps(None), "wrong shape"),
        (_header() + pickle.dumps(os.system) + pickle.dumps(None), "corrupt"),  # a class reference: refused
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
    (record,) = caplog.records
    assert why in record.reason  # type: ignore[attr-defined]


async def test_no_file_no_sessions(tmp_path: Path) -> None:
    assert await load_snapshot(MemoryStore(), tmp_path / "absent") == 0
    assert list(tmp_path.iterdir()) == []
