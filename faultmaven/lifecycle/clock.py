"""The manager's clock: the injected one, never moving backwards."""

from __future__ import annotations

import math
from collections.abc import Callable


class NonDecreasing:
    """Reads `clock`, but never answers less than it answered before: the stores keep sessions in
    activity order, which a wall clock stepped back (NTP) would break."""

    __slots__ = ("_clock", "_last")

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._last = -math.inf

    def __call__(self) -> float:
        self._last = now if (now := self._clock()) > self._last else self._last
        return self._last
