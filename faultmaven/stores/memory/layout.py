"""How the in-memory store lays out one session: two tuples, no per-session object the GC tracks.

A session is one entry of the expiry index's dict, id -> Node. The Node links the session to its
neighbours (by id) in its lane and in the creation list and holds what changes on activity; its fields
that change only on update sit in an inner Static tuple shared between versions. Tuples of strings,
numbers and bytes are untracked by Python's cyclic garbage collector, and so is a dict holding only them.
Positions are named here once; the cleanup's hot loop uses the literal numbers (see index.py).
"""

from __future__ import annotations

from typing import Final, TypeAlias

from faultmaven.session import SessionRecord

# user id, client id, session type, created_at, timeout (s), absolute deadline, data, metadata, cost, version
Static: TypeAlias = tuple[str | None, str | None, str, float, float, float, bytes, bytes, int, int]
USER: Final = 0
CLIENT: Final = 1
TYPE: Final = 2
CREATED: Final = 3
TIMEOUT: Final = 4
ABSOLUTE: Final = 5
BLOB: Final = 6
META: Final = 7
COST: Final = 8
VERSION: Final = 9
Node: TypeAlias = tuple[str | None, str | None, str | None, str | None, float, int, Static]
LPREV: Final = 0  # the session before it in its lane (None: the lane's first)
LNEXT: Final = 1  # the session after it in its lane
CPREV: Final = 2  # the session created before it (None: the oldest)
CNEXT: Final = 3  # the session created after it
ACTIVE: Final = 4  # last activity
MARK: Final = 5  # equal to the index's mark once the expired count has counted it
STATIC: Final = 6  # the fields that change only on update (Static)


def with_lnext(n: Node, v: str | None) -> Node:
    return (n[0], v, n[2], n[3], n[4], n[5], n[6])


def with_lprev(n: Node, v: str | None) -> Node:
    return (v, n[1], n[2], n[3], n[4], n[5], n[6])


def with_cnext(n: Node, v: str | None) -> Node:
    return (n[0], n[1], n[2], v, n[4], n[5], n[6])


def with_cprev(n: Node, v: str | None) -> Node:
    return (n[0], n[1], v, n[3], n[4], n[5], n[6])


def to_record(sid: str, active: float, s: Static) -> SessionRecord:
    """The session as the store protocol returns it."""
    return SessionRecord(
        session_id=sid,
        user_id=s[USER],
        client_id=s[CLIENT],
        session_type=s[TYPE],
        created_at=s[CREATED],
        last_activity=active,
        timeout_s=s[TIMEOUT],
        absolute_at=s[ABSOLUTE],
        blob=s[BLOB],
        meta=s[META],
        version=s[VERSION],
    )


def require(ok: bool, broken: str) -> None:
    """For the structures' check(): AssertionError naming the broken invariant (raised, not asserted, so
    that it holds under python -O)."""
    if not ok:
        raise AssertionError(broken)
