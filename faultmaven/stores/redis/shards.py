"""Shards of the Redis key space: which hash tag each shard's keys carry, and which shard an id is in.

Redis Cluster runs a script only on keys of one hash slot. So every key of a shard carries the shard's
hash tag, and every script touches one shard: a session, its indexes, its stats, its user's index and
its resume pair all live in the same shard. A user's sessions all live in that user's shard (listing,
revoking and the per-user limit stay one atomic script); a client's anonymous sessions in its client's
shard; other sessions in a random one. The shard travels in the id: 43 random characters (256 bits, as
always) and two digits.

The tags are picked so that their slots lie evenly over the 16,384 slots: shard i's slot falls in the
i-th of SHARDS equal ranges. `redis-cli --cluster create` gives each of M masters one contiguous range of
slots, so with M dividing SHARDS every master holds SHARDS / M shards (48: even on 1, 2, 3, 4, 6, 8, 12,
16, 24 or 48 masters).
"""

from __future__ import annotations

import secrets
import zlib
from functools import cache

from redis.crc import key_slot

from faultmaven.session import new_session_id

SHARDS = 48
SLOTS = 16_384
ID_LENGTH = 43  # new_session_id() without a shard


@cache
def shard_tags() -> tuple[str, ...]:
    """One hash tag per shard, shard i's slot in [i * SLOTS / SHARDS, (i + 1) * SLOTS / SHARDS)."""
    tags = []
    for shard in range(SHARDS):
        low, high = shard * SLOTS // SHARDS, (shard + 1) * SLOTS // SHARDS
        n = 0
        while not low <= key_slot(f"{shard}.{n}".encode()) < high:
            n += 1
        tags.append(f"{shard}.{n}")
    return tuple(tags)


def shard_of_owner(user_id: str | None, client_id: str | None) -> int:
    """The shard of a user's sessions (or of a client's anonymous ones); a random one for neither."""
    owner = "u:" + user_id if user_id is not None else "c:" + client_id if client_id is not None else None
    if owner is None:
        return secrets.randbelow(SHARDS)
    return zlib.crc32(owner.encode()) % SHARDS


def shard_of_id(session_id: str) -> int | None:
    """The shard an id names, or None for an id that names none (then it is in no shard: not stored)."""
    suffix = session_id[ID_LENGTH:]
    if len(suffix) != 2 or not suffix.isdigit() or int(suffix) >= SHARDS:
        return None
    return int(suffix)


def new_sharded_id(shard: int) -> str:
    return f"{new_session_id()}{shard:02d}"
