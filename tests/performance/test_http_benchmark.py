"""The HTTP path: our routes served by uvicorn (one worker, as served by default: info level, the access
log on), against the floor of each path in its own uvicorn (tests/performance/bare_app.py), both driven by
wrk with the same threads, connections and time, taking turns in the same test.

On memory the floor is a bare FastAPI route answering a session-sized constant; on one redis-server and
on the local Redis Cluster it is a bare route doing one EVALSHA of a one-command script (HGETALL of the
session's hash) through the client and pool our store builds. Each test runs ROUNDS turns (floor, then
ours; GATED_ROUNDS for the gated GETs) and records the ratio of the best rounds' requests/s, with those
rounds' p50 and p99 on both sides and the median of the round-by-round ratios (extra_info);
ci/perf_gate.py gates GET on memory and on one redis-server.
wrk, the server and its peer share the machine's two cores: the ratio carries the comparison.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from faultmaven.stores.redis.shards import shard_of_id, shard_tags
from tests.redis_server import RedisServer, _free_port
from tests.support import require_tool

ROOT = Path(__file__).resolve().parents[2]
SECONDS = int(os.environ.get("HTTP_BENCH_SECONDS", "1"))
ROUNDS = int(os.environ.get("HTTP_BENCH_ROUNDS", "3"))
GATED_ROUNDS = 2 * ROUNDS  # GET on memory and on one redis-server, which ci/perf_gate.py gates
CONNECTIONS = 16
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


class Server:
    """A uvicorn process on a free loopback port, stopped at the end."""

    def __init__(self, args: list[str], env: dict[str, str], ready_path: str) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_")} | env
        self.proc = subprocess.Popen(
            [sys.executable, *args, "--port", str(self.port)],
            env=full_env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,  # our access log writes a JSON line per request here, as in production
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.base + ready_path, timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{args} did not start")

    def post(self, path: str, body: bytes = b"") -> dict[str, Any]:
        headers = {"Content-Type": "application/json"} if body else {}
        request = urllib.request.Request(self.base + path, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def serve_ours(workers: int, store_url: str = "memory://") -> Server:
    env = {"SESSION_STORE_URL": store_url, "SESSION_HEALTH_MAX_ACTIVE": "100000000", "SESSION_MAX_MEMORY_MB": "4096"}
    args = ["-m", "faultmaven", "--workers", str(workers)]  # as served by default: info, the access log on
    return Server(args, env, "/health")


def serve_bare(workers: int, redis_url: str | None = None) -> Server:
    args = ["-m", "uvicorn", "tests.performance.bare_app:app", "--log-level", "warning", "--no-access-log"]
    env = {"BARE_REDIS_URL": redis_url} if redis_url else {}
    return Server([*args, "--workers", str(workers)], env, "/bare")


SCRIPTS = {"POST": "wrk_post.lua", "PATCH": "wrk_patch.lua"}


def wrk(url: str, method: str = "GET", seconds: int = SECONDS) -> dict[str, float]:
    """requests/s, p50 and p99 (ms) of one wrk run; non-2xx answers fail the benchmark. A URL may carry a
    header after a space ("http://... Cookie: session=..."), sent with every request."""
    binary = require_tool("wrk", "wrk")
    url, _, header = url.partition(" ")
    args = [binary, "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", url]
    if header:
        args[1:1] = ["-H", header]
    if method != "GET":
        args[1:1] = ["-s", str(ROOT / "tests" / "performance" / SCRIPTS[method])]
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    assert "Non-2xx" not in out and "Socket errors" not in out, out
    latency = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": _ms(latency["50"]),
        "p99_ms": _ms(latency["99"]),
    }


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * _UNITS[unit]


def session_key(session_id: str) -> str:
    """The Redis key of a stored session's hash (the store's layout: prefix, shard tag, s:<id>)."""
    shard = shard_of_id(session_id)
    assert shard is not None
    return f"faultmaven:{{{shard_tags()[shard]}}}s:{session_id}"


class Pair:
    """Ours and its floor on one store, started once for the routes measured on it."""

    def __init__(self, store: str, url: str) -> None:
        self.store = store
        self.redis = url != "memory://"
        self.servers = [serve_bare(1, url if self.redis else None)]
        self.servers.append(serve_ours(1, url))
        self.bare, self.ours = self.servers

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


STORES = ["memory", "redis", "redis-cluster"]


@pytest.fixture(scope="module", params=STORES)
def pair(request: pytest.FixtureRequest) -> Iterator[Pair]:
    store = request.param
    if store == "memory":
        url = "memory://"
    else:
        backend = request.getfixturevalue("redis_server" if store == "redis" else "redis_cluster")
        backend.flush()
        url = backend.url
    started = Pair(store, url)
    yield started
    started.stop()


def paired_rounds(ours: str, bare: str, method: str, rounds: int = ROUNDS) -> dict[str, Any]:
    """ROUNDS turns of wrk on the floor, then on ours, after a warm-up of both (connections, the script
    cache, the allocator). `ratio` divides the best round of ours by the best round of the floor: on a
    shared machine a round is only ever slowed by other load, so each side's best is the nearest to its
    cost alone. The median of the round-by-round ratios is kept beside it."""
    wrk(bare, method, seconds=1)
    wrk(ours, method, seconds=1)
    mine_rounds, peer_rounds = [], []
    for _ in range(rounds):
        peer_rounds.append(wrk(bare, method))
        mine_rounds.append(wrk(ours, method))
    mine = max(mine_rounds, key=lambda r: r["rps"])
    peer = max(peer_rounds, key=lambda r: r["rps"])
    round_ratios = [m["rps"] / p["rps"] for m, p in zip(mine_rounds, peer_rounds, strict=True)]
    return {
        "ratio": mine["rps"] / peer["rps"],
        "median_round_ratio": statistics.median(round_ratios),
        "round_ratios": round_ratios,
        "ours": mine,
        "bare": peer,
    }


def record(benchmark: Any, kind: str, result: dict[str, Any]) -> None:
    benchmark.group = "HTTP: ours against the floor of its path (wrk)"
    benchmark.extra_info.update(kind=kind, n=CONNECTIONS, live=0, **result)


ROUTES = ["get", "heartbeat", "create", "patch"]


@pytest.mark.parametrize("route", ROUTES)
def test_http_route_against_floor(benchmark: Any, pair: Pair, route: str) -> None:
    ours = pair.ours
    sid = ours.post("/api/v1/sessions", b'{"data": {"case": "db-latency"}}')["session_id"]
    path, method = {
        "get": (f"/api/v1/sessions/{sid}", "GET"),
        "heartbeat": (f"/api/v1/sessions/{sid}/heartbeat", "POST"),
        "create": ("/api/v1/sessions", "POST"),
        "patch": (f"/api/v1/sessions/{sid}", "PATCH"),
    }[route]
    floor = f"/bare/redis/{quote(session_key(sid), safe='')}" if pair.redis else "/bare"
    result: dict[str, Any] = {}
    rounds = GATED_ROUNDS if route == "get" and pair.store != "redis-cluster" else ROUNDS

    def run() -> None:
        result.update(paired_rounds(ours.base + path, pair.bare.base + floor, method, rounds))

    benchmark.pedantic(run, rounds=1, iterations=1)
    record(benchmark, f"http-{pair.store}-{route}", result)


def test_http_health_against_bare(benchmark: Any) -> None:
    """GET /health on memory against the bare route (what a load balancer's probe costs)."""
    started = Pair("memory", "memory://")
    try:
        result: dict[str, Any] = {}

        def run() -> None:
            result.update(paired_rounds(started.ours.base + "/health", started.bare.base + "/bare", "GET", rounds=1))

        benchmark.pedantic(run, rounds=1, iterations=1)
        record(benchmark, "http-memory-health", result)
    finally:
        started.stop()


def test_http_get_on_redis_with_two_workers(benchmark: Any, redis_server: RedisServer) -> None:
    """GET of a session with 2 workers on a local redis-server, against the one-EVALSHA route with 2 workers."""
    redis_server.flush()
    servers = [serve_bare(2, redis_server.url), serve_ours(2, redis_server.url)]
    try:
        peer, mine = servers
        sid = mine.post("/api/v1/sessions", b"")["session_id"]
        floor = f"{peer.base}/bare/redis/{quote(session_key(sid), safe='')}"
        result: dict[str, Any] = {}

        def run() -> None:
            result.update(paired_rounds(f"{mine.base}/api/v1/sessions/{sid}", floor, "GET", rounds=1))

        benchmark.pedantic(run, rounds=1, iterations=1)
        record(benchmark, "http-redis-get-2-workers", result)
    finally:
        for server in servers:
            server.stop()


def serve_starsessions(redis_url: str | None) -> Server:
    """The peer (tests/performance/starsessions_app.py), one worker without an access log."""
    args = ["-m", "uvicorn", "tests.performance.starsessions_app:app", "--log-level", "warning", "--no-access-log"]
    return Server(args, {"PEER_REDIS_URL": redis_url} if redis_url else {}, "/session")


def starsessions_cookie(peer: Server) -> str:
    """A new session of the peer: the Cookie header that names it."""
    request = urllib.request.Request(peer.base + "/session", data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        return "Cookie: " + response.headers["set-cookie"].split(";")[0]


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_http_get_against_starsessions(benchmark: Any, request: pytest.FixtureRequest, store: str) -> None:
    """GET of a session against FastAPI + starsessions (SessionMiddleware, rolling, 30 minutes; the session
    loaded and saved back on every request), on the same store kind: each one uvicorn worker, no access
    log (ours at --log-level warning). Gated by ci/perf_gate.py: ours at least as fast."""
    redis_url = None
    if store == "redis":
        backend = request.getfixturevalue("redis_server")
        backend.flush()
        redis_url = backend.url
    ours_args = ["-m", "faultmaven", "--log-level", "warning"]
    servers = [serve_starsessions(redis_url)]
    try:
        env = {"SESSION_STORE_URL": redis_url or "memory://", "SESSION_HEALTH_MAX_ACTIVE": "100000000"}
        servers.append(Server(ours_args, env, "/health"))
        peer, mine = servers
        sid = mine.post("/api/v1/sessions", b'{"data": {"case": "db-latency"}}')["session_id"]
        cookie = starsessions_cookie(peer)
        result: dict[str, Any] = {}

        def run() -> None:
            ours, theirs = f"{mine.base}/api/v1/sessions/{sid}", f"{peer.base}/session {cookie}"
            result.update(paired_rounds(ours, theirs, "GET", GATED_ROUNDS))

        benchmark.pedantic(run, rounds=1, iterations=1)
        benchmark.group = "HTTP: ours against FastAPI + starsessions (wrk)"
        benchmark.extra_info.update(kind=f"http-{store}-get-vs-starsessions", n=CONNECTIONS, live=0, **result)
    finally:
        for server in servers:
            server.stop()
