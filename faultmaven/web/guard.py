"""Failed credentials, per source: audited without the credential, and slowed down when they keep coming.

A source (the client's address, as a keyed fingerprint) that presented a bad bearer token or admin token
FREE_FAILURES times in a row is refused with 429 and Retry-After for a backoff that doubles with each
further failure, up to MAX_BACKOFF_S, before its credential is even looked at: guessing a token costs
time, and a correct credential ends the backoff. Each source writes at most one audit record per
AUDIT_EVERY_S ("credential refused", with the kind and how many since its last record), so a flood
cannot flood the audit trail. The state is per process and bounded (MAX_SOURCES, oldest forgotten).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from faultmaven.observability.audit import audit_refusal
from faultmaven.session import fingerprint

FREE_FAILURES = 20  # a client with a stale token retries a few times; a guesser goes on
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0
AUDIT_EVERY_S = 60.0
MAX_SOURCES = 10_000


@dataclass(slots=True)
class _Source:
    failures: int = 0
    blocked_until: float = 0.0
    unaudited: int = 0
    audited_at: float = float("-inf")


class FailureGuard:
    """The failures of each source of credentials, and the backoff they earned."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._sources: OrderedDict[str, _Source] = OrderedDict()

    def wait_s(self, source: str) -> float:
        """How long `source` must wait before a credential of its is checked again (0: check it now)."""
        if not self._sources:  # the common case, on every request: no digest to compute
            return 0.0
        entry = self._sources.get(fingerprint(source))
        return 0.0 if entry is None else max(0.0, entry.blocked_until - self._clock())

    def failed(self, source: str, kind: str) -> None:
        """A bad credential of `kind` ("bearer token", "admin token") from `source`."""
        key, now = fingerprint(source), self._clock()
        entry = self._sources.pop(key, None) or _Source()
        self._sources[key] = entry
        while len(self._sources) > MAX_SOURCES:
            self._sources.popitem(last=False)
        entry.failures += 1
        entry.unaudited += 1
        if entry.failures >= FREE_FAILURES:
            backoff = FIRST_BACKOFF_S * 2 ** (entry.failures - FREE_FAILURES)
            entry.blocked_until = now + min(MAX_BACKOFF_S, backoff)
        if now - entry.audited_at >= AUDIT_EVERY_S:
            audit_refusal(kind, key, entry.unaudited, entry.failures)
            entry.audited_at, entry.unaudited = now, 0

    def succeeded(self, source: str) -> None:
        if self._sources:
            self._sources.pop(fingerprint(source), None)
