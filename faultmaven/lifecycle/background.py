"""What runs beside the app while it serves: the store's counts read every second, and the in-memory
store's snapshot (read before serving, written every interval and on a graceful stop)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any, Protocol

from faultmaven.config.config import Settings
from faultmaven.exceptions import SessionStoreException
from faultmaven.stores.memory import MemoryStore
from faultmaven.stores.memory.snapshot import load_snapshot, write_snapshot

log = logging.getLogger("faultmaven.sessions")
STATS_REFRESH_S = 1.0  # how often the store's counts are read while the app runs


class Served(Protocol):
    """What these jobs need of the manager that serves the app (it sits above them)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def store(self) -> object: ...

    async def refresh_store_stats(self) -> None: ...


async def refresh_stats(manager: Served, every_s: float, stop: asyncio.Event) -> None:
    """Read the store's counts every `every_s` while the app runs, on every worker: a Redis store serves
    /health and /metrics from its last reading, so each read sees counts at most about 2 s old and a
    store that went down shows within 2 s, however rarely anything reads them (a scrape every 30 s)."""
    while not stop.is_set():
        with contextlib.suppress(SessionStoreException):  # recorded by the store: /health reports it
            await manager.refresh_store_stats()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)


async def restore(manager: Served) -> None:
    """With SESSION_SNAPSHOT_PATH, the in-memory store's sessions from its snapshot, before serving."""
    path = manager.settings.snapshot_path
    if path is not None and isinstance(manager.store, MemoryStore):
        loaded = await load_snapshot(manager.store, path)
        log.info("Session snapshot loaded", extra={"sessions": loaded, "path": path})


def snapshots(manager: Served, stop: asyncio.Event) -> list[Coroutine[Any, Any, None]]:
    """The periodic snapshot's loop, when there is one to run."""
    every = manager.settings.snapshot_interval_seconds
    if manager.settings.snapshot_path is None or not every or not isinstance(manager.store, MemoryStore):
        return []
    return [_snapshot_every(manager.store, manager.settings.snapshot_path, every, stop)]


async def _snapshot_every(store: MemoryStore, path: str, every: float, stop: asyncio.Event) -> None:
    """A snapshot every `every` seconds until `stop`."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
            return
        try:
            await write_snapshot(store, path)
        except OSError as exc:
            log.error("Session snapshot failed", extra={"path": path, "error": f"{type(exc).__name__}: {exc}"})


async def snapshot_on_stop(manager: Served) -> None:
    """The last snapshot, on a graceful stop (SIGTERM, SIGINT, the lifespan's end)."""
    path = manager.settings.snapshot_path
    if path is None or not isinstance(manager.store, MemoryStore):
        return
    try:
        written = await write_snapshot(manager.store, path)
        log.info("Session snapshot written", extra={"sessions": written, "path": path})
    except OSError as exc:
        log.error("Session snapshot failed", extra={"path": path, "error": f"{type(exc).__name__}: {exc}"})
