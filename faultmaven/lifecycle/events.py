"""Session-end events: listeners called once per removed session, after the removal, off the cleanup path.

Stores report what each of their own calls removed (so with several replicas on one Redis, the replica
whose script removed a session is the only one that reports it). The manager hands those endings here;
a task of its own calls the listeners, so a listener that raises or is slow never stops or stalls a
cleanup: a failure or a timeout is counted and logged without ids. A cleanup run queues its endings and
wakes the task when the run ends, so listeners never compete with the run for the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from faultmaven.session import SessionEnd
from faultmaven.stores.base import Endings

log = logging.getLogger("faultmaven.sessions")

SessionEndListener = Callable[[SessionEnd], Awaitable[None] | None]
LISTENER_TIMEOUT_S = 5.0  # an async listener slower than this is cancelled and counted as an error
_YIELD_EVERY = 100  # events between yields to the event loop


class SessionEndDispatcher:
    """Queues endings and calls every listener with each, in order, from one task."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.listeners: list[SessionEndListener] = []
        self._pending: deque[tuple[Endings, float]] = deque()  # endings as stores handed them over
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.errors = 0

    def publish(self, endings: Endings, *, wake: bool = True) -> None:
        """Queue endings (only while someone listens); `wake` lets the task deliver them now."""
        if not self.listeners:
            return
        self._pending.append((endings, self._clock()))
        if wake:
            self.flush()

    def flush(self) -> None:
        """Let the task deliver what is queued now."""
        if not self._pending:
            return
        self._idle.clear()
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="faultmaven-session-end")

    async def _run(self) -> None:
        delivered = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                endings, ended_at = self._pending.popleft()
                try:
                    delivered = await self._deliver(endings, ended_at, delivered)
                except Exception as exc:  # a fault in making events of one call's endings: the rest go out
                    self.errors += 1
                    log.error("Session-end delivery failed", extra={"error_type": type(exc).__name__})
            self._idle.set()

    async def _deliver(self, endings: Endings, ended_at: float, delivered: int) -> int:
        """Every listener with each ending; returns the running count of events delivered."""
        for ending in endings:
            event = SessionEnd.from_ending(ending, ended_at)
            for listener in self.listeners:
                await self._call(listener, event)
            delivered += 1
            if delivered % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
        return delivered

    async def _call(self, listener: SessionEndListener, event: SessionEnd) -> None:
        try:
            result = listener(event)
            if inspect.isawaitable(result):
                await asyncio.wait_for(result, LISTENER_TIMEOUT_S)
        except Exception as exc:  # a listener's failure is its own: count it, keep delivering
            self.errors += 1
            log.warning(
                "Session-end listener failed",
                extra={"error_type": type(exc).__name__, "reason": event.reason},
            )

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait until every queued event was delivered (bounded)."""
        if self._pending:
            self._wake.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)

    async def close(self) -> None:
        await self.drain()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
