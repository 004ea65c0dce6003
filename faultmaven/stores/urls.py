"""The grammar of SESSION_STORE_URL that the stores read: the settings validate with it, the Redis
client connects with it, so the two can never disagree."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

STORE_SCHEMES = ("memory", "redis", "redis+cluster")
_CLUSTER_NODE = re.compile(r"[A-Za-z0-9.-]{1,253}:[1-9][0-9]{0,4}")  # host:port; the port range checked apart


def cluster_nodes(url: str) -> list[tuple[str, int]]:
    """The (host, port) pairs of redis+cluster://[user:password@]host:port[,host:port...]; ValueError if
    any is not a host:port."""
    items = urlsplit(url).netloc.rpartition("@")[2].split(",")
    if not all(_CLUSTER_NODE.fullmatch(node) and int(node.rpartition(":")[2]) < 65536 for node in items):
        raise ValueError("a cluster URL names its nodes as host:port[,host:port...]")
    return [(host, int(port)) for host, _, port in (node.rpartition(":") for node in items)]
