"""The one place where redis-py's exceptions become the service's: every Redis call of the store runs
inside `translated()` (as httpx maps its transports' exceptions in one context manager).

Redis' out-of-memory refusal becomes SessionStoreFullError (HTTP 503 with Retry-After); anything else
redis-py raises (RedisError, and the cluster client's RedisClusterException, which is not one) becomes
SessionStoreException with one line naming what failed and why (the host and port are in redis-py's
own message for connection errors: refused, unknown host, TLS).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from redis.exceptions import OutOfMemoryError, RedisClusterException, RedisError

from faultmaven.exceptions import SessionStoreException, SessionStoreFullError


def one_line(exc: BaseException) -> str:
    """The exception's type and message on one line (TLS and connection errors can span several)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Run a Redis call; its failure raised as the service's exception, `what` naming the operation."""
    try:
        yield
    except OutOfMemoryError as exc:
        raise SessionStoreFullError(f"redis refused a write over maxmemory ({what})") from exc
    except (RedisError, RedisClusterException) as exc:
        if str(exc).startswith("OOM "):  # as a script's error reply, depending on the client's parser
            raise SessionStoreFullError(f"redis refused a write over maxmemory ({what})") from exc
        raise SessionStoreException(f"redis {what} failed: {one_line(exc)}") from exc
