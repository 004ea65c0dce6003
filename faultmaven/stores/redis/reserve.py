"""What this process's creates will add to each Redis master's memory, counted before they are sent.

The create-path check compares a master's last `used_memory` reading plus this ledger with the reserve's
edge. The ledger holds, per master:
- creates in flight (sent, no reply yet), held from the check on, so a burst of concurrent creates that
  all pass the check at once is counted whole;
- creates that returned after the last reading was *sent* (Redis, one thread, answered the reading
  after every command it had replied to before the reading was sent; those that replied later may or
  may not be in it, so they stay counted: never too little);
- the room this process's connections can still take (client buffers are part of `used_memory`).

Each create is counted in Redis' own bytes: the in-process estimate times a ratio calibrated from the
readings (the change of used_memory, less client buffers, per estimated byte created between two
readings), never below a floor measured on Redis 7 (docs/benchmarks.md, "Redis memory per session").
A stale or late reading therefore never lets creates through: they accumulate here until a reading that
was sent after them arrives.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FLOOR_RATIO = 1.25  # Redis bytes per estimated byte, at least (measured 0.93 to 1.72 with the fixed part)
PER_SESSION_BYTES = 1024  # keys, index entries and allocator rounding beyond the estimate, at least
MAX_RATIO = 8.0  # a calibration beyond this is other traffic, not sessions
CALIBRATE_MIN = 32  # creates between two readings before their used_memory change calibrates the ratio
CONNECTION_BYTES = 48 * 1024  # what one connection can hold on Redis: reply buffer and query buffer
QUERY_BUFFER_BYTES = 16 * 1024  # a request up to this size fits the query buffer every connection has


@dataclass(frozen=True, slots=True)
class Hold:
    """One create's reservation until its reply: its master, Redis bytes, estimate and transient bytes."""

    master: str
    cost: int
    estimate: int
    transient: int


@dataclass(slots=True)
class _Ledger:
    inflight: int = 0  # Redis bytes of creates sent and not answered, transient buffers included
    inflight_estimate: int = 0
    done: int = 0  # Redis bytes of answered creates, cumulative
    done_estimate: int = 0
    done_count: int = 0
    seen: tuple[int, int, int] = (0, 0, 0)  # done, done_estimate, done_count at the applied reading's send
    data_used: int | None = None  # used_memory less client buffers at the applied reading
    clients: int = 0  # client buffers at the applied reading


@dataclass(frozen=True, slots=True)
class Mark:
    """The ledgers as a reading was sent: what that reading certainly includes."""

    done: dict[str, tuple[int, int, int]] = field(default_factory=dict)


class Reserve:
    """The per-master ledger of creates this process sent since the reading each master was judged on."""

    def __init__(self, connections: int) -> None:
        """`connections`: the most connections this process opens to one master."""
        self.connections = connections
        self.ratio = FLOOR_RATIO
        self._ledgers: dict[str, _Ledger] = {}

    def _ledger(self, master: str) -> _Ledger:
        ledger = self._ledgers.get(master)
        if ledger is None:
            ledger = self._ledgers[master] = _Ledger()
        return ledger

    def hold(self, master: str, estimate: int, request_bytes: int) -> Hold:
        """What a create about to be sent will cost: its Redis bytes, and while in flight twice a request
        too large for a connection's own buffers (Redis' query buffer grows to hold it, and the script
        gets a copy of its arguments)."""
        transient = 2 * request_bytes if request_bytes > QUERY_BUFFER_BYTES else 0
        return Hold(master, int(self.ratio * estimate) + PER_SESSION_BYTES, estimate, transient)

    def send(self, hold: Hold) -> None:
        ledger = self._ledger(hold.master)
        ledger.inflight += hold.cost + hold.transient
        ledger.inflight_estimate += hold.estimate

    def settle(self, hold: Hold, stored: bool) -> None:
        """The create's reply came: its bytes stay counted if it stored a new session."""
        ledger = self._ledger(hold.master)
        ledger.inflight -= hold.cost + hold.transient
        ledger.inflight_estimate -= hold.estimate
        if stored:
            ledger.done += hold.cost
            ledger.done_estimate += hold.estimate
            ledger.done_count += 1

    def mark(self) -> Mark:
        """Take as a reading is sent."""
        return Mark({name: (lg.done, lg.done_estimate, lg.done_count) for name, lg in self._ledgers.items()})

    def apply(self, mark: Mark, readings: dict[str, tuple[int, int]]) -> None:
        """A reading sent at `mark` arrived: `readings` is each master's (used_memory, client buffers).
        Creates answered before the mark are in it now; the ratio is calibrated from what they added."""
        for name, (used, clients) in readings.items():
            ledger = self._ledger(name)
            seen = mark.done.get(name, (0, 0, 0))
            if seen[2] < ledger.seen[2]:
                continue  # an older reading that arrived late: the applied one already covers more
            data_used = used - clients
            created_estimate, created = seen[1] - ledger.seen[1], seen[2] - ledger.seen[2]
            if ledger.data_used is not None and created >= CALIBRATE_MIN and data_used > ledger.data_used:
                observed = (data_used - ledger.data_used) / created_estimate
                self.ratio = min(MAX_RATIO, max(FLOOR_RATIO, observed))
            ledger.seen, ledger.data_used, ledger.clients = seen, data_used, clients

    def pending(self, master: str) -> int:
        """Redis bytes this process may have added to `master` beyond its applied reading."""
        ledger = self._ledger(master)
        since = ledger.done - ledger.seen[0]
        return ledger.inflight + since + max(0, self.connections * CONNECTION_BYTES - ledger.clients)

    def pending_estimate(self) -> int:
        """In-process estimate bytes created or in flight beyond the applied readings, on every master."""
        return sum(lg.inflight_estimate + lg.done_estimate - lg.seen[1] for lg in self._ledgers.values())
