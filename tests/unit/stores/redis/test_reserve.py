"""The ledger behind the Redis reserve: creates counted from the check on, in Redis' own bytes, until a
reading sent after their reply includes them."""

from __future__ import annotations

from faultmaven.stores.redis.reserve import (
    CALIBRATE_MIN,
    CONNECTION_BYTES,
    FLOOR_RATIO,
    PER_SESSION_BYTES,
    QUERY_BUFFER_BYTES,
    Reserve,
)

FULL_CLIENTS = 10 * CONNECTION_BYTES  # client buffers as large as the connections can make them


def test_a_create_in_flight_is_counted_before_its_reply() -> None:
    ledger = Reserve(connections=10)
    ledger.apply(ledger.mark(), {"": (1000, FULL_CLIENTS)})
    hold = ledger.hold("", 6000, 6100)
    assert hold.cost == int(FLOOR_RATIO * 6000) + PER_SESSION_BYTES and hold.transient == 0
    ledger.send(hold)
    assert ledger.pending("") == hold.cost
    ledger.settle(hold, stored=True)
    assert ledger.pending("") == hold.cost  # answered after the reading: still counted


def test_a_create_that_stored_nothing_is_released() -> None:
    ledger = Reserve(connections=10)
    ledger.apply(ledger.mark(), {"": (1000, FULL_CLIENTS)})
    hold = ledger.hold("", 500, 600)
    ledger.send(hold)
    ledger.settle(hold, stored=False)
    assert ledger.pending("") == 0 and ledger.pending_estimate() == 0


def test_a_large_request_holds_its_query_buffer_while_in_flight() -> None:
    ledger = Reserve(connections=10)
    ledger.apply(ledger.mark(), {"": (1000, FULL_CLIENTS)})
    hold = ledger.hold("", 60_000, QUERY_BUFFER_BYTES + 1)
    assert hold.transient == 2 * (QUERY_BUFFER_BYTES + 1)
    ledger.send(hold)
    assert ledger.pending("") == hold.cost + hold.transient
    ledger.settle(hold, stored=True)
    assert ledger.pending("") == hold.cost


def test_only_a_reading_sent_after_the_reply_releases_a_create() -> None:
    ledger = Reserve(connections=10)
    ledger.apply(ledger.mark(), {"": (1000, FULL_CLIENTS)})
    hold = ledger.hold("", 6000, 6100)
    ledger.send(hold)
    sent_before = ledger.mark()  # a reading sent while the create is in flight (it may miss it)
    ledger.settle(hold, stored=True)
    ledger.apply(sent_before, {"": (1000, FULL_CLIENTS)})
    assert ledger.pending("") == hold.cost
    ledger.apply(ledger.mark(), {"": (1000 + hold.cost, FULL_CLIENTS)})
    assert ledger.pending("") == 0


def test_a_late_older_reading_does_not_undo_a_newer_one() -> None:
    ledger = Reserve(connections=10)
    old = ledger.mark()
    hold = ledger.hold("", 6000, 6100)
    ledger.send(hold)
    ledger.settle(hold, stored=True)
    ledger.apply(ledger.mark(), {"": (9000, FULL_CLIENTS)})
    ledger.apply(old, {"": (1000, FULL_CLIENTS)})
    assert ledger.pending("") == 0


def test_connections_not_yet_in_the_reading_are_reserved() -> None:
    ledger = Reserve(connections=10)
    assert ledger.pending("") == 10 * CONNECTION_BYTES  # before any reading: every connection to come
    ledger.apply(ledger.mark(), {"": (1000, 4 * CONNECTION_BYTES)})
    assert ledger.pending("") == 6 * CONNECTION_BYTES


def test_the_ratio_follows_what_creates_added_but_never_drops_below_the_floor() -> None:
    ledger = Reserve(connections=10)
    ledger.apply(ledger.mark(), {"": (1_000_000, FULL_CLIENTS)})
    for _ in range(CALIBRATE_MIN):
        hold = ledger.hold("", 1000, 1000)
        ledger.send(hold)
        ledger.settle(hold, stored=True)
    ledger.apply(ledger.mark(), {"": (1_000_000 + 3 * 1000 * CALIBRATE_MIN, FULL_CLIENTS)})
    assert ledger.ratio == 3.0
    assert ledger.hold("", 1000, 1000).cost == 3000 + PER_SESSION_BYTES
    for _ in range(CALIBRATE_MIN):
        hold = ledger.hold("", 1000, 1000)
        ledger.send(hold)
        ledger.settle(hold, stored=True)
    ledger.apply(ledger.mark(), {"": (1_000_000 + 3 * 1000 * CALIBRATE_MIN + 10, FULL_CLIENTS)})
    assert ledger.ratio == FLOOR_RATIO  # used_memory barely moved (deletes meanwhile): the floor holds
