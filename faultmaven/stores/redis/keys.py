"""Where the Redis store keeps things: the keys of each shard, and the client that reaches them.

Every key of a shard carries the shard's hash tag, `<prefix>{<tag>}`, so that one script touches one hash
slot (Redis Cluster) and the shards spread evenly over a cluster's masters (see shards.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from faultmaven.stores.redis.shards import shard_tags
from faultmaven.stores.sizing import pair_key
from faultmaven.stores.urls import cluster_nodes, is_cluster, tls_options

# Connections to one node, per process. Each one holds buffers in Redis' memory (about 36 KB with 6 KB
# sessions), so a bounded pool keeps what connections add to a full Redis within the reserve.
POOL_SIZE = 32
BACKGROUND_CONNECTIONS = 8  # stats, INFO, leases: beside the calls of requests
CLUSTER_MAX_CONNECTIONS = 1024  # per node, per process; the store runs at most POOL_SIZE calls at once


@dataclass(frozen=True, slots=True)
class Shard:
    """The keys of one shard: every one carries the shard's hash tag."""

    prefix: str  # "<prefix>{<tag>}": what the scripts build the shard's other keys from

    def key(self, session_id: str) -> str:
        return f"{self.prefix}s:{session_id}"

    @property
    def deadlines(self) -> str:
        """The deadline index: a sorted set of the shard's ids scored by each one's exact deadline."""
        return self.prefix + "exp"

    @property
    def stats(self) -> str:
        """A hash: the shard's session bytes, and the longest idle timeout it stores."""
        return self.prefix + "stats"

    @property
    def indexes(self) -> list[str]:
        """The deadline index and the stats hash: the KEYS every session script names after its own."""
        return [self.deadlines, self.stats]

    @property
    def lease(self) -> str:
        return self.prefix + "lease"

    def pair(self, user_id: str | None, client_id: str) -> str:
        """The key naming the session a (user, client) pair resumes, as the scripts build it."""
        return f"{self.prefix}c:{pair_key(user_id, client_id)}"


def shards_under(prefix: str) -> tuple[Shard, ...]:
    """Every shard's keys under a key prefix, in shard order."""
    if "{" in prefix or "}" in prefix:
        raise ValueError("the key prefix must not contain a hash tag: the store adds one per shard")
    return tuple(Shard(f"{prefix}{{{tag}}}") for tag in shard_tags())


def connect(url: str) -> aioredis.Redis | RedisCluster:
    """A client for redis[s]://... (one node) or redis[s]+cluster://[user:password@]host:port[,host:port...];
    rediss: TLS, with redis-py's ssl_ca_certs, ssl_certfile, ssl_keyfile and ssl_cert_reqs from the query
    (certificates verified unless ssl_cert_reqs=none)."""
    options: dict[str, Any] = {"socket_timeout": 5, "socket_connect_timeout": 5}
    tls = tls_options(url)
    if tls.get("ssl_cert_reqs") == "none":
        options["ssl_check_hostname"] = False  # nothing is verified: neither is the name
    if not is_cluster(url):
        # A burst beyond the pool waits (up to 5 s) for a free connection instead of failing at once, as
        # redis-py's default pool does past 100 connections.
        size = connections_per_node()
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=size, timeout=5, **options)
        return aioredis.Redis.from_pool(pool)  # closing the client closes the pool
    parts = urlsplit(url)
    nodes = [ClusterNode(host, port) for host, port in cluster_nodes(url)]
    if parts.username:
        options["username"] = unquote(parts.username)
    if parts.password:
        options["password"] = unquote(parts.password)
    if parts.scheme == "rediss+cluster":
        options |= {"ssl": True, **tls}
    # redis-py's cluster client fails a call (MaxConnectionsError) rather than wait once a node has
    # max_connections in use (32 by default): a burst of concurrent requests must not fail so.
    return RedisCluster(startup_nodes=nodes, max_connections=CLUSTER_MAX_CONNECTIONS, **options)


def connections_per_node() -> int:
    """The most connections this process opens to one node in use: the calls the store runs at once
    (ScriptRunner) and a few for background readings."""
    return POOL_SIZE + BACKGROUND_CONNECTIONS
