"""The grammar of SESSION_STORE_URL that the stores read: the settings validate with it, the Redis
client connects with it, so the two can never disagree."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

STORE_SCHEMES = ("memory", "redis", "rediss", "redis+cluster", "rediss+cluster")
TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")  # redis-py's names
CERT_REQS = ("none", "optional", "required")
_CLUSTER_NODE = re.compile(r"[A-Za-z0-9.-]{1,253}:[1-9][0-9]{0,4}")  # host:port; the port range checked apart


def cluster_nodes(url: str) -> list[tuple[str, int]]:
    """The (host, port) pairs of redis+cluster://[user:password@]host:port[,host:port...]; ValueError if
    any is not a host:port."""
    items = urlsplit(url).netloc.rpartition("@")[2].split(",")
    if not all(_CLUSTER_NODE.fullmatch(node) and int(node.rpartition(":")[2]) < 65536 for node in items):
        raise ValueError("a cluster URL names its nodes as host:port[,host:port...]")
    return [(host, int(port)) for host, _, port in (node.rpartition(":") for node in items)]


def tls_options(url: str) -> dict[str, str]:
    """The TLS options in a rediss:// or rediss+cluster:// URL's query; ValueError for any other option, a
    bad ssl_cert_reqs, or TLS options on a plain-text redis:// URL (use rediss://)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if not parts.scheme.startswith("rediss"):
        if any(name.startswith("ssl") for name in query):
            raise ValueError("TLS options need a rediss:// (or rediss+cluster://) URL")
        return {}
    unknown = sorted(set(query) - set(TLS_OPTIONS))
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r} (TLS options: {', '.join(TLS_OPTIONS)})")
    if query.get("ssl_cert_reqs", "required") not in CERT_REQS:
        raise ValueError(f"ssl_cert_reqs must be one of {', '.join(CERT_REQS)}")
    return query


def is_cluster(url: str) -> bool:
    return urlsplit(url).scheme in ("redis+cluster", "rediss+cluster")
