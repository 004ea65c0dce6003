"""How the Redis scripts' replies read as sessions, endings and cleanup batches, and how a user travels
to them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from faultmaven.session import SessionRecord
from faultmaven.stores.base import BatchResult, Ending, Endings, Report


def decode_user(raw: bytes) -> str | None:
    return raw[2:].decode() if raw else None  # "u:" + id, or empty for no user


def user_arg(user_id: str | None) -> str:
    """A user as the scripts take it: "u:" + id, so that '' can mean none (or anyone)."""
    return "" if user_id is None else "u:" + user_id


def record_of(session_id: str, f: list[bytes]) -> SessionRecord:
    """A session from the hash fields in the scripts' FIELDS order (lua/common.lua)."""
    user, client, kind, created, active, timeout, absolute, data, meta, _cost, version, _order = f
    return SessionRecord(
        session_id=session_id,
        user_id=decode_user(user),
        client_id=client.decode() or None,
        session_type=kind.decode(),
        created_at=float(created),
        last_activity=float(active),
        timeout_s=float(timeout),
        absolute_at=float(absolute),
        blob=bytes(data),
        meta=bytes(meta),
        version=int(version) if version else 1,  # a hash stored before sessions had versions: version 1
    )


def endings_of(raw: Iterable[list[bytes]]) -> Iterable[Ending]:
    """The endings a script returned: {id, user, client, created, active, reason} each."""
    for sid, user, client, created, active, reason in raw:
        yield (sid.decode(), decode_user(user), client.decode() or None, float(created), float(active), reason.decode())


def hand_over(endings: Iterable[Ending], report: Report, *, detailed: bool, freed_bytes: int = 0) -> None:
    """`endings` counted (and kept whole while `detailed`) in one Endings handed to `report`; nothing
    is handed when there are none."""
    ended = Endings()
    for ending in endings:
        ended.add(ending, detailed=detailed)
    if ended.counts:
        ended.freed_bytes += freed_bytes
        report(ended)


def batch_of(reply: list[Any], limit: int, report: Report, *, detailed: bool) -> BatchResult:
    """A cleanup batch's reply (lua/remove_idle.lua): how far it got; what it ended handed to `report`,
    one by one when the script sent each ending (`detailed`), else as counts."""
    removed, freed, lifetime, failed, details, idle = reply
    removed = int(removed)
    if details:
        hand_over(endings_of(details), report, detailed=detailed, freed_bytes=int(freed))
    elif removed:
        ended = Endings()
        ended.tally("idle", int(idle))
        ended.tally("expired", removed - int(idle), float(lifetime), int(freed))
        report(ended)
    return BatchResult(removed, [f.decode() for f in failed], removed + len(failed) < limit)
