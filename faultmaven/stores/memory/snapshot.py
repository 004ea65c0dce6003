"""The in-memory store's snapshot: every session written to a file on stop and every interval, and read
back on start, so a restart logs nobody out (SESSION_SNAPSHOT_PATH).

The copy that must be consistent is one C-level copy of the index's items, taken on the event loop: the
nodes are immutable tuples, so the copy is the store at one instant. Encoding and writing run in a
thread, in chunks, so the loop keeps serving. The file is written to a temporary name in the same
directory, fsynced, renamed over the old one and the directory fsynced: a crash leaves the old snapshot
or the new one, never a mix; mode 0600, as it holds session data.

The file is pickle data of plain values only (tuples, strings, bytes, numbers): it is read with an
unpickler that refuses every class, so a tampered file cannot run code. A file that cannot be read
(truncated, corrupt, another format or a newer version) is moved aside to `<path>.unreadable-<time>`
with one error line naming why, and the store starts empty: never a crash loop, never overwritten.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import pickle
import time
from pathlib import Path
from typing import Any

from faultmaven.exceptions import FaultMavenError
from faultmaven.stores.memory.layout import ACTIVE, STATIC, Static
from faultmaven.stores.memory.store import MemoryStore

log = logging.getLogger("faultmaven.sessions")

MAGIC = "faultmaven-sessions-snapshot"
VERSION = 1
CHUNK = 10_000  # sessions per pickled chunk: the writer thread lets go of the interpreter between chunks
_STATIC_TYPES = (str | None, str | None, str, float, float, float, bytes, bytes, int, int)

Session = tuple[str, float, Static]


class UnreadableSnapshot(FaultMavenError):
    """The snapshot file cannot be used; the message says why."""


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"a snapshot holds plain values only, not {module}.{name}")


def _load(file: Any) -> Any:
    """The next pickle of the file (each was dumped on its own: a fresh unpickler, a fresh memo)."""
    return _PlainUnpickler(file).load()


def _encode(items: list[tuple[str, tuple[Any, ...]]], written_at: float) -> bytes:
    out = io.BytesIO()
    pickle.dump({"format": MAGIC, "version": VERSION, "written_at": written_at, "count": len(items)}, out)
    for start in range(0, len(items), CHUNK):
        pickle.dump([(sid, node[ACTIVE], node[STATIC]) for sid, node in items[start : start + CHUNK]], out)
    pickle.dump(None, out)  # the end: a file without it was cut short
    return out.getvalue()


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
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


async def write_snapshot(store: MemoryStore, path: str | Path) -> int:
    """Write every session of `store` to `path`; how many."""
    items = list(store.index.items())  # the consistent copy: one C-level pass, immutable nodes
    data = await asyncio.to_thread(_encode, items, time.time())
    await asyncio.to_thread(_write_atomically, Path(path), data)
    return len(items)


def _check(session: Any) -> Session:
    """One session record as written, or UnreadableSnapshot."""
    shaped = isinstance(session, tuple) and len(session) == 3 and isinstance(session[0], str)
    shaped = shaped and isinstance(session[1], float) and isinstance(session[2], tuple) and len(session[2]) == 10
    if not shaped or not all(isinstance(v, t) for v, t in zip(session[2], _STATIC_TYPES, strict=True)):
        raise UnreadableSnapshot("a session record has the wrong shape")
    return session  # type: ignore[no-any-return]


def read_snapshot(path: Path) -> list[Session]:
    """The sessions a snapshot file holds; UnreadableSnapshot if it cannot be used."""
    try:
        with path.open("rb") as file:
            header = _load(file)
            if not isinstance(header, dict) or header.get("format") != MAGIC:
                raise UnreadableSnapshot("not a FaultMaven sessions snapshot")
            if header.get("version") != VERSION:
                raise UnreadableSnapshot(f"format version {header.get('version')!r}, this build reads {VERSION}")
            sessions: list[Session] = []
            while (chunk := _load(file)) is not None:
                sessions += [_check(session) for session in chunk]
    except UnreadableSnapshot:
        raise
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, OSError) as exc:
        raise UnreadableSnapshot(f"cut short or corrupt ({type(exc).__name__})") from None
    if len(sessions) != header.get("count"):
        raise UnreadableSnapshot("the session count does not match the header")
    return sessions


async def load_snapshot(store: MemoryStore, path: str | Path) -> int:
    """Fill the empty `store` from the snapshot at `path`; how many sessions (0 without a file). A file
    that cannot be used is moved aside with one error line, and the store stays empty."""
    path = Path(path)
    if not path.exists():
        return 0
    try:
        sessions = await asyncio.to_thread(read_snapshot, path)
    except UnreadableSnapshot as exc:
        aside = path.with_name(f"{path.name}.unreadable-{int(time.time())}")
        os.replace(path, aside)
        log.error(
            "Session snapshot unreadable: moved aside, starting empty",
            extra={"reason": str(exc), "moved_to": str(aside)},
        )
        return 0
    store.load(sessions)
    return len(sessions)
