"""The memory store's check(): silent on a sound store, and for each invariant of the expiry index, the
user lists and the resume pairs, a fault that breaks it alone and the exact sentence that names it (the
consistency checks of every other test, the state machines' included, rest on this)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from faultmaven.stores import MemoryStore
from faultmaven.stores.memory import layout as mem
from faultmaven.stores.memory.index_lanes import Lane
from tests.support import EPOCH, session_record

Fault = Callable[[MemoryStore, list[str]], None]


def _node(store: MemoryStore, sid: str, position: int, value: object) -> None:
    """Set one position of a stored node (a fault no operation of the store can make)."""
    node = list(store.index.get(sid))  # type: ignore[arg-type]
    node[position] = value
    store.index._nodes[sid] = tuple(node)  # type: ignore[assignment]


def _static(store: MemoryStore, sid: str, position: int, value: object) -> None:
    static = list(store.index.get(sid)[mem.STATIC])  # type: ignore[index]
    static[position] = value
    _node(store, sid, mem.STATIC, tuple(static))


FAULTS: list[tuple[str, Fault]] = [
    # The expiry index: ids[0..2] share a lane (and user "u"), ids[3] is alone in the 600 s lane.
    ("a list links to a session that is not stored", lambda s, ids: _node(s, ids[2], mem.LNEXT, "gone")),
    ("a back link disagrees with the forward link", lambda s, ids: _node(s, ids[1], mem.LPREV, None)),
    ("a list's tail is wrong", lambda s, ids: setattr(s.index._creation, "last", ids[1])),
    ("the creation list and the index disagree", lambda s, ids: s.index._nodes.__setitem__("x", s.index.get(ids[3]))),
    ("the creation list's frontier is not in it", lambda s, ids: setattr(s.index._creation, "frontier", "gone")),
    ("an empty lane was kept", lambda s, ids: s.index._lanes.__setitem__(5.0, Lane(None))),  # type: ignore[arg-type]
    ("a lane is out of activity order", lambda s, ids: _node(s, ids[0], mem.ACTIVE, EPOCH + 10)),
    ("a session is in another lane", lambda s, ids: _static(s, ids[1], mem.TIMEOUT, 900.0)),
    ("a lane's frontier is not in it", lambda s, ids: setattr(s.index._lanes[1800.0], "frontier", "gone")),
    ("a session is in no lane or in two", lambda s, ids: s.index._lanes.pop(600.0)),
    ("the byte total is wrong", lambda s, ids: setattr(s.index, "_bytes", s.index.bytes + 1)),
    ("the expired count is wrong", lambda s, ids: setattr(s.index, "_expired", 1)),
    # The user lists.
    ("a user's list links are wrong", lambda s, ids: s.owners.users._links.__setitem__(ids[1], (None, ids[2]))),
    (
        "a user's list is empty, or its tail is wrong",
        lambda s, ids: setattr(s.owners.users._lists["u"], "last", ids[1]),
    ),
    ("a user's list holds a session that is gone", lambda s, ids: s.index.unlink(ids[2])),
    ("a session is in another user's list", lambda s, ids: _static(s, ids[1], mem.USER, "v")),
    ("a user's session is missing from their list, or listed twice", lambda s, ids: s.owners.users.remove(ids[3], "w")),
    ("user links kept for a session that is gone", lambda s, ids: s.owners.users._links.__setitem__("x", (None, None))),
    # The resume pairs.
    ("a resume pair names a session that is gone", lambda s, ids: s.owners.pairs.set("u", "tab-9", "gone")),
    ("a pair is wrong", lambda s, ids: s.owners.pairs.set("u", "tab-2", ids[0])),
]  # fmt: skip


async def _store() -> tuple[MemoryStore, list[str]]:
    store, ids = MemoryStore(), []
    for user, client, timeout_s in (
        ("u", "tab-1", 1800.0),
        ("u", None, 1800.0),
        ("u", None, 1800.0),
        ("w", None, 600.0),
    ):
        record, _ = await store.create(session_record(user=user, client=client, timeout_s=timeout_s), EPOCH)
        ids.append(record.session_id)
    return store, ids


@pytest.mark.parametrize(("named", "fault"), FAULTS, ids=[named for named, _ in FAULTS])
async def test_check_names_the_one_invariant_a_fault_broke(named: str, fault: Fault) -> None:
    store, ids = await _store()
    store.check()
    fault(store, ids)
    with pytest.raises(AssertionError, match=f"^{re.escape(named)}$"):
        store.check()
