"""What the in-memory store's current call ended, until the call hands it to the caller's report."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from faultmaven.stores.base import Ending, Endings, Report, drop
from faultmaven.stores.memory.layout import ACTIVE, CLIENT, COST, CREATED, STATIC, USER, Node


class EndingsLog:
    """What the current store call ended so far, and while `detailed` the removed nodes to build each
    Ending from. Each call runs `with log.to(report):`, which hands it over as the call returns or raises:
    the store never awaits, so no other call's endings can mix in.

    `ended` (flat: id, node, reason per removal) and `swept` (flat: id, node per expired session a cleanup
    removed) are appended to by the expiry index's cleanup directly: two appends per removed session are
    the cheapest record it can keep (a tuple per ending cost it 10-20% more).
    """

    __slots__ = ("detailed", "ended", "endings", "report", "swept")

    def __init__(self) -> None:
        self.detailed = False  # keep each ending whole, for session-end events
        self.report: Report = drop  # where the current call's endings go
        self.endings = NodeEndings()
        self.ended: list[Any] = []
        self.swept: list[Any] = []

    def end(self, sid: str, node: Node, reason: str) -> None:
        """One session ended (and freed its bytes), tallied and, while detailed, kept."""
        static = node[STATIC]
        self.endings.tally(reason, 1, node[ACTIVE] - static[CREATED], static[COST])
        if self.detailed:
            self.ended += (sid, node, reason)

    def rotated(self, sid: str, node: Node) -> None:
        """The old id of a rotated session ended; its bytes stay with the new id."""
        self.endings.tally("rotated", 1, node[ACTIVE] - node[STATIC][CREATED])
        if self.detailed:
            self.ended += (sid, node, "rotated")

    def swept_pass(self, count: int, idle: int, lifetime_s: float, freed_bytes: int) -> None:
        """One cleanup pass removed `count` sessions, `idle` of them by the max age, not expired."""
        self.endings.tally("idle", idle)
        self.endings.tally("expired", count - idle, lifetime_s, freed_bytes)

    def to(self, report: Report) -> EndingsLog:
        """`with log.to(report):` hands what the block ended to `report` as the block ends (a class, not a
        generator context manager: it wraps every create and write)."""
        self.report = report
        return self

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        report, self.report = self.report, drop
        self.hand_to(report)

    def hand_to(self, report: Report) -> None:
        """Hand what was logged to `report` (not called if nothing ended). The details are read from the
        nodes only when iterated."""
        endings = self.endings
        if not (endings.counts or self.ended or self.swept):  # details without counts: a pass that raised
            return
        self.endings = NodeEndings()
        if self.ended:
            endings.flat, self.ended = self.ended, []
        if self.swept:
            endings.swept, self.swept = self.swept, []
        report(endings)


class NodeEndings(Endings):
    """Endings with the removed nodes as their details, each Ending built only when delivered.

    A cleanup run holds every batch's endings until it ends (the listeners get them then), and what each
    batch leaves held is what the garbage collector walks during the run: so one object per batch and the
    lists the nodes are in, no wrapper and no spare empty list (those cost a 100k cleanup ~10%, in
    collections that read every kept node).
    """

    __slots__ = ("flat", "swept")

    def __init__(self) -> None:
        super().__init__()
        self.flat: list[Any] | tuple[()] = ()  # id, node, reason per removal
        self.swept: list[Any] | tuple[()] = ()  # id, node per expired session a cleanup removed

    def has_details(self) -> bool:
        return bool(self.flat or self.swept) or super().has_details()

    def __iter__(self) -> Iterator[Ending]:
        yield from super().__iter__()
        flat, swept = self.flat, self.swept
        for i in range(0, len(flat), 3):
            yield _ending(flat[i], flat[i + 1], flat[i + 2])
        for i in range(0, len(swept), 2):
            yield _ending(swept[i], swept[i + 1], "expired")


def _ending(sid: str, node: Node, reason: str) -> Ending:
    static = node[STATIC]
    return sid, static[USER], static[CLIENT], static[CREATED], node[ACTIVE], reason
