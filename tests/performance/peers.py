"""The alternatives a user would pick, set up on the same N: a naive scan, cachetools' TTLCache, an
ordered-deletion peer in pure Python, and a dict floor."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from cachetools import TTLCache

from tests.support import EPOCH

TIMEOUT_S = 30 * 60.0


@dataclass(slots=True)
class Record:
    last_activity: float
    blob: bytes


def naive_store(expired_ids: list[str], live_ids: list[str]) -> dict[str, Record]:
    store = {sid: Record(EPOCH, b"{}") for sid in expired_ids}
    store.update((sid, Record(EPOCH + TIMEOUT_S, b"{}")) for sid in live_ids)
    return store


def naive_cleanup(store: dict[str, Record], now: float) -> int:
    """What many first implementations do: scan every stored session, then delete the expired ones."""
    expired = [sid for sid, rec in store.items() if now - rec.last_activity >= TIMEOUT_S]
    for sid in expired:
        del store[sid]
    return len(expired)


class Timer:
    def __init__(self) -> None:
        self.now = EPOCH

    def __call__(self) -> float:
        return self.now


def ttl_cache(expired_ids: list[str], live_ids: list[str]) -> tuple[TTLCache[str, bytes], Timer]:
    timer = Timer()
    cache: TTLCache[str, bytes] = TTLCache(maxsize=len(expired_ids) + len(live_ids) + 1, ttl=TIMEOUT_S, timer=timer)
    for sid in expired_ids:
        cache[sid] = b"{}"
    timer.now += TIMEOUT_S
    for sid in live_ids:
        cache[sid] = b"{}"
    return cache, timer


def floor_dict(ids: list[str]) -> dict[str, bytes]:
    return dict.fromkeys(ids, b"{}")


def floor_delete(store: dict[str, bytes], ids: list[str]) -> None:
    """The floor: deleting the same keys from a plain dict in a tight loop."""
    for sid in ids:
        del store[sid]


def ordered_store(expired_ids: list[str], live_ids: list[str]) -> OrderedDict[str, Record]:
    """Sessions kept in the order they expire (one timeout: the order of last activity)."""
    store = OrderedDict((sid, Record(EPOCH, b"{}")) for sid in expired_ids)
    store.update((sid, Record(EPOCH + TIMEOUT_S, b"{}")) for sid in live_ids)
    return store


def ordered_cleanup(store: OrderedDict[str, Record], now: float) -> int:
    """The pure-Python peer of ours: delete from the front of the expiry order until the first live one.
    Its cost follows what expired, as ours does, and is bound by the same Python object traffic."""
    removed = 0
    while store:
        rec = next(iter(store.values()))
        if now - rec.last_activity < TIMEOUT_S:
            break
        store.popitem(last=False)
        removed += 1
    return removed
