"""The Redis store (store.py) and its parts: keys and client, shards, the Lua scripts and their runner,
replies, memory limits and the reserve, the stats snapshot and the cleanup leases."""

from faultmaven.stores.redis.keys import CLUSTER_MAX_CONNECTIONS, POOL_SIZE, Shard, connect
from faultmaven.stores.redis.store import RedisStore

__all__ = ["CLUSTER_MAX_CONNECTIONS", "POOL_SIZE", "RedisStore", "Shard", "connect"]
