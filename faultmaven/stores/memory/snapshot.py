"""The in-memory store's snapshot: every session written to a file on stop and every interval, and read
back on start, so a restart logs nobody out (SESSION_SNAPSHOT_PATH).

The copy that must be consistent is taken on the event loop in one step: a C-level copy of the index's
dict (no object made per session; about 20 ms at a million sessions). The nodes are immutable tuples, so
the copy is the store at one instant. Ordering, encoding and writing run in a thread, in chunks, so the
loop keeps serving; the cyclic collector is paused meanwhile (a few seconds at a million), as each of its
passes would walk the copy. Sessions are written in the order of the store's lists (each lane, and each user's
list as the thread reads it), so that sessions last active at the same instant come back in the order
they had. The file is written to a temporary name in the same directory, chunk by chunk, fsynced,
renamed over the old one and the directory fsynced: a crash leaves the old snapshot or the new one, never
a mix; mode 0600, as it holds session data. Reading back builds the store from columns, a C-level pass
at a time, with the collector's full passes held off (load_snapshot).

The file is pickle data of plain values only (tuples, strings, bytes, numbers): it is read with an
unpickler that refuses every class, so a tampered file cannot run code. A file that cannot be read
(truncated, corrupt, another format or a newer version) is moved aside to `<path>.unreadable-<time>`
with one error line naming why, and the store starts empty: never a crash loop, never overwritten.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import pickle
import time
from collections import deque
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO

from faultmaven.exceptions import FaultMavenError
from faultmaven.stores.memory.layout import ACTIVE, LNEXT, STATIC, Node, Static
from faultmaven.stores.memory.store import MemoryStore

log = logging.getLogger("faultmaven.sessions")

MAGIC = "faultmaven-sessions-snapshot"
VERSION = 1
CHUNK = 10_000  # sessions per pickled chunk: the writer thread lets go of the interpreter between chunks

Sessions = tuple[list[str], list[float], list[Static]]  # ids, last activities, fields: by position
UserLinks = Callable[[str], "tuple[str | None, str | None] | None"]  # a session's (prev, next) in its user's list


class UnreadableSnapshot(FaultMavenError):
    """The snapshot file cannot be used; the message says why."""


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"a snapshot holds plain values only, not {module}.{name}")


def _load(file: Any) -> Any:
    """The next pickle of the file (each was dumped on its own: a fresh unpickler, a fresh memo)."""
    return _PlainUnpickler(file).load()


def _list_order(nodes: dict[str, Node], heads: list[str], user_links: UserLinks) -> Iterator[tuple[str, Node]]:
    """The sessions in an order that keeps every list: each after the one before it in its lane and, while
    that one is in the copy, after the one before it in its user's list. Sorted by last activity with
    ties left in this order (what load does), every lane and user's list comes back as it was.

    `nodes` (the copy) is emptied on the way, a session popped as it comes out, and nothing of a million
    entries is built: one C-level step over a million (a container's growth, its collection by the GC,
    its release) would hold the interpreter from the event loop for tens of milliseconds."""
    waiting: dict[str, list[str]] = {}  # the session before them in their user's list, not out yet
    unordered: set[str] = set()  # let go before the one before them (see below)
    ready = deque(heads)
    while True:
        while ready:
            sid = ready.popleft()
            links = user_links(sid)  # the live list: a user's order at the same instant is only there
            before = None if links is None else links[0]
            if before is not None and before in nodes and sid not in unordered:
                waiting.setdefault(before, []).append(sid)
                continue
            node = nodes.pop(sid)
            yield sid, node
            if node[LNEXT] is not None:
                ready.append(node[LNEXT])
            ready.extend(waiting.pop(sid, ()))
        if not waiting:
            return
        # User links that changed while they were read made a cycle: let one waiting group go first.
        stuck = waiting.pop(next(iter(waiting)))
        unordered.update(stuck)
        ready.extend(stuck)


def _dump(file: BinaryIO, count: int, sessions: Iterator[tuple[str, Node]], written_at: float) -> None:
    pickle.dump({"format": MAGIC, "version": VERSION, "written_at": written_at, "count": count}, file)
    while chunk := [(sid, node[ACTIVE], node[STATIC]) for sid, node in islice(sessions, CHUNK)]:
        pickle.dump(chunk, file)
    pickle.dump(None, file)  # the end: a file without it was cut short


def _write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _write(path: Path, nodes: dict[str, Node], heads: list[str], user_links: UserLinks) -> int:
    count = len(nodes)
    _write_atomically(path, lambda file: _dump(file, count, _list_order(nodes, heads, user_links), time.time()))
    return count


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic collector off while a snapshot is written (and back on after, if it was on). The copy has
    a million entries and is tracked whenever the store's dict is (a node replaced since the last full
    collection): each collection while it lives would walk it, holding the loop 30-90 ms at a million."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


async def write_snapshot(store: MemoryStore, path: str | Path) -> int:
    """Write every session of `store` to `path`; how many."""
    with _collector_paused():
        heads = store.index.lane_heads()
        # The consistent copy, in the same step as the lanes' heads: the thread empties it as it goes.
        return await asyncio.to_thread(_write, Path(path), store.index.frozen(), heads, store.owners.users.links)


_RECORD_TYPES = (frozenset({str}), frozenset({float}), frozenset({tuple}))  # id, last activity, fields
_NONE = type(None)
# The fields' types in the order of layout.Static: user id, client id, type, created, timeout, absolute
# deadline, data, metadata, cost, version.
_FIELD_TYPES = (
    *[frozenset({str, _NONE})] * 2, frozenset({str}), *[frozenset({float})] * 3, *[frozenset({bytes})] * 2,
    *[frozenset({int})] * 2,
)  # fmt: skip


def _columns(chunk: Any) -> tuple[tuple[str, ...], tuple[float, ...], tuple[Static, ...]]:
    """A chunk of session records as written, (id, last activity, the 10 fields) each, as its three columns;
    UnreadableSnapshot if a record has another shape. Each column's types are checked at once: C-level
    passes, not a check per session."""
    if type(chunk) is not list or not set(map(type, chunk)) <= {tuple} or not set(map(len, chunk)) <= {3}:
        raise UnreadableSnapshot("a session record has the wrong shape")
    columns = tuple(zip(*chunk, strict=True)) or ((), (), ())  # ids, last activities, fields
    shaped = all(set(map(type, column)) <= allowed for column, allowed in zip(columns, _RECORD_TYPES, strict=True))
    if shaped and chunk:
        shaped = set(map(len, columns[2])) <= {len(_FIELD_TYPES)} and all(
            set(map(type, column)) <= allowed
            for column, allowed in zip(zip(*columns[2], strict=True), _FIELD_TYPES, strict=True)
        )
    if not shaped:
        raise UnreadableSnapshot("a session record has the wrong shape")
    return columns  # type: ignore[return-value]


def read_snapshot(path: Path) -> Sessions:
    """The sessions a snapshot file holds, as columns (ids, last activities, fields); UnreadableSnapshot
    if it cannot be used."""
    ids: list[str] = []
    actives: list[float] = []
    statics: list[Static] = []
    try:
        with path.open("rb") as file:
            header = _load(file)
            if not isinstance(header, dict) or header.get("format") != MAGIC:
                raise UnreadableSnapshot("not a FaultMaven sessions snapshot")
            if header.get("version") != VERSION:
                raise UnreadableSnapshot(f"format version {header.get('version')!r}, this build reads {VERSION}")
            while (chunk := _load(file)) is not None:
                chunk_ids, chunk_actives, chunk_statics = _columns(chunk)
                ids += chunk_ids
                actives += chunk_actives
                statics += chunk_statics
    except UnreadableSnapshot:
        raise
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, OSError) as exc:
        raise UnreadableSnapshot(f"cut short or corrupt ({type(exc).__name__})") from None
    if len(ids) != header.get("count"):
        raise UnreadableSnapshot("the session count does not match the header")
    return ids, actives, statics


@contextlib.contextmanager
def _young_collections_only() -> Iterator[None]:
    """While a snapshot is read back, the cyclic collector collects its youngest generation only: that
    untracks each new tuple of plain values while it is fresh, and skips the full passes over everything
    read so far (most of a load's time at a million sessions). The thresholds are put back afterwards."""
    thresholds = gc.get_threshold()
    gc.set_threshold(thresholds[0], 1 << 30, 1 << 30)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)


async def load_snapshot(store: MemoryStore, path: str | Path) -> int:
    """Fill the empty `store` from the snapshot at `path`; how many sessions (0 without a file). A file
    that cannot be used is moved aside with one error line, and the store stays empty."""
    path = Path(path)
    if not path.exists():
        return 0
    with _young_collections_only():
        return await _load_into(store, path)


async def _load_into(store: MemoryStore, path: Path) -> int:
    try:
        sessions = await asyncio.to_thread(read_snapshot, path)
        _fill(store, sessions)
    except UnreadableSnapshot as exc:
        aside = path.with_name(f"{path.name}.unreadable-{int(time.time())}")
        os.replace(path, aside)
        log.error(
            "Session snapshot unreadable: moved aside, starting empty",
            extra={"reason": str(exc), "moved_to": str(aside)},
        )
        return 0
    return len(sessions[0])


def _fill(store: MemoryStore, sessions: Sessions) -> None:
    try:
        store.load(*sessions)
    except ValueError as exc:
        if len(store):  # not the file's fault: the store was not empty
            raise
        raise UnreadableSnapshot(str(exc)) from None  # an id twice: the store was left empty
