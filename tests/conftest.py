"""Fixtures shared by every suite: a fake clock, settings, a manager and an HTTP client over the app."""

from __future__ import annotations

import io
import logging
import logging.config
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import pytest_timeout

from faultmaven.config import Settings
from faultmaven.main import create_app
from faultmaven.observability.logging import logging_config
from faultmaven.session_management import SessionManager
from faultmaven.stores import MemoryStore, SessionStore
from faultmaven.stores.redis.store import RedisStore
from tests.redis_cluster import RedisCluster
from tests.redis_server import RedisServer
from tests.support import FakeClock

BACKSTOP_S = 60.0


def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> None:
    """Beside pytest-timeout's SIGALRM (which fails the test with its traceback and lets the run go on), a
    backstop: a test still running BACKSTOP_S later (the failure was caught and retried, as hypothesis
    does while shrinking, or the thread is stuck where no signal handler runs) gets every thread's stack
    dumped and the run ended. Returning None lets pytest-timeout set its own timer as well."""
    if settings.method == "signal" and settings.timeout:
        timer = threading.Timer(settings.timeout + BACKSTOP_S, pytest_timeout.timeout_timer, (item, settings))
        timer.daemon = True
        timer.start()
        item.stash[_BACKSTOP] = timer


def pytest_timeout_cancel_timer(item: pytest.Item) -> None:
    timer = item.stash.get(_BACKSTOP, None)
    if timer is not None:
        timer.cancel()


_BACKSTOP = pytest.StashKey[threading.Timer]()


_WATCHED_LOGGERS = ("", "faultmaven", "faultmaven.access", "faultmaven.audit", "uvicorn", "uvicorn.access")


def _logging_state() -> list[tuple[str, int, bool, int, bool, bool]]:
    """What a test could leave behind in the process-wide logging: levels, propagation, handlers, and
    what `isEnabledFor` answers (cached per logger; only `setLevel` clears the cache)."""
    return [
        (name, lg.level, lg.propagate, len(lg.handlers), lg.isEnabledFor(logging.INFO), lg.isEnabledFor(logging.DEBUG))
        for name, lg in ((name, logging.getLogger(name)) for name in _WATCHED_LOGGERS)
    ]


@pytest.fixture(autouse=True)
def _logging_left_as_found() -> Iterator[None]:
    """The suite runs in random order: a test that changes logging for the tests after it fails here."""
    before = _logging_state()
    yield
    after = _logging_state()
    assert after == before, f"logging left changed: {[(b, a) for b, a in zip(before, after, strict=True) if a != b]}"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings() -> Settings:
    return Settings(timeout_minutes=30, cleanup_batch_size=10, cleanup_enabled=False)


@pytest.fixture
async def manager(settings: Settings, clock: FakeClock) -> AsyncIterator[SessionManager]:
    mgr = SessionManager(MemoryStore(), settings=settings, clock=clock)
    yield mgr
    await mgr.close()


async def open_client(manager: SessionManager) -> AsyncIterator[httpx.AsyncClient]:
    """Run the real app's lifespan around an httpx client on the ASGI transport."""
    app = create_app(manager=manager)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


@pytest.fixture
async def client(manager: SessionManager) -> AsyncIterator[httpx.AsyncClient]:
    async for c in open_client(manager):
        yield c


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
def make_store(request: pytest.FixtureRequest) -> Callable[[], SessionStore]:
    """Each test that asks for it runs on every store: in memory, on one Redis node (a clean database on
    the test server) and on a local Redis Cluster (3 masters, 3 replicas, flushed)."""
    if request.param == "memory":
        return MemoryStore
    url = request.getfixturevalue("redis_url" if request.param == "redis" else "cluster_url")
    return lambda: RedisStore(url)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    cluster = RedisCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def cluster_url(redis_cluster: RedisCluster) -> str:
    """A flushed cluster, ready: every slot served, every replica in sync (a test may have failed a master
    over and restarted it as a replica)."""
    redis_cluster.wait_ready()
    redis_cluster.flush()
    return redis_cluster.url


@pytest.fixture(params=["redis", "redis-cluster"])
def any_redis_url(request: pytest.FixtureRequest) -> str:
    """One Redis node, then the cluster: tests that need Redis itself run on both."""
    return str(request.getfixturevalue("redis_url" if request.param == "redis" else "cluster_url"))


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A clean database on the shared test server."""
    if redis_server.proc is None:
        redis_server.start()
    redis_server.flush()
    return redis_server.url


def _not_the_test_client(record: logging.LogRecord) -> bool:
    """The test's own HTTP client logs the URLs it calls; those lines are not the service's."""
    return not record.name.startswith(("httpx", "httpcore"))


class _Once(logging.Filter):
    """The capture sits on the root logger and on `faultmaven` (whose records reach the root only while it
    propagates, which the service's logging config turns off): a record that comes by both is written once."""

    def __init__(self) -> None:
        super().__init__()
        self.last: logging.LogRecord | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record is self.last:
            return False
        self.last = record
        return True


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Every log line of the process at DEBUG (but the test client's), through the service's own JSON
    formatter: what a deployment's log would hold."""
    stream = io.StringIO()
    formatter = logging.config.DictConfigurator(logging_config()).configure_formatter(  # type: ignore[attr-defined]
        logging_config()["formatters"]["json"]
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.setLevel(logging.DEBUG)
    handler.addFilter(_not_the_test_client)
    handler.addFilter(_Once())
    loggers = [logging.getLogger(), logging.getLogger("faultmaven")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    yield stream
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)
