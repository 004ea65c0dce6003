"""The HTTP path: our routes served by uvicorn, against a bare FastAPI route in its own uvicorn, both
driven by wrk for the same time and connections, one after the other in the same test.

Each result records requests/s and p50/p99 of ours and of the bare route (extra_info); ci/perf_gate.py
gates GET of a session at a ratio to the bare route. wrk, the server and its peer share the machine's two
cores: the ratio is what carries the comparison.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.redis_server import RedisServer, _free_port
from tests.support import require_tool

ROOT = Path(__file__).resolve().parents[2]
SECONDS = int(os.environ.get("HTTP_BENCH_SECONDS", "5"))
CONNECTIONS = 32
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
        request = urllib.request.Request(self.base + path, data=body, method="POST")
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


def serve_bare(workers: int) -> Server:
    args = ["-m", "uvicorn", "tests.performance.bare_app:app", "--log-level", "warning"]
    return Server([*args, "--workers", str(workers)], {}, "/bare")


def wrk(url: str, method: str = "GET") -> dict[str, float]:
    """requests/s, p50 and p99 (ms) of one wrk run; non-2xx answers fail the benchmark."""
    binary = require_tool("wrk", "wrk")
    args = [binary, "-t1", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "--latency", url]
    if method != "GET":
        script = ROOT / "tests" / "performance" / "wrk_post.lua"
        args[1:1] = ["-s", str(script)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=SECONDS + 30, check=True).stdout
    assert "Non-2xx" not in out, out
    latency = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": _ms(latency["50"]),
        "p99_ms": _ms(latency["99"]),
    }


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * _UNITS[unit]


@pytest.fixture(scope="module")
def bare() -> Iterator[Server]:
    server = serve_bare(1)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ours() -> Iterator[Server]:
    server = serve_ours(1)
    yield server
    server.stop()


def record(benchmark: Any, kind: str, mine: dict[str, float], peer: dict[str, float]) -> None:
    benchmark.group = "HTTP: ours against a bare FastAPI route (wrk)"
    benchmark.extra_info.update(kind=kind, n=CONNECTIONS, live=0, ours=mine, bare=peer)
    benchmark.extra_info["ratio"] = mine["rps"] / peer["rps"]


ROUTES = ["get", "heartbeat", "create", "health"]


@pytest.mark.parametrize("route", ROUTES)
def test_http_route_against_bare(benchmark: Any, bare: Server, ours: Server, route: str) -> None:
    sid = ours.post("/api/v1/sessions", b"")["session_id"]
    url, method = {
        "get": (f"{ours.base}/api/v1/sessions/{sid}", "GET"),
        "heartbeat": (f"{ours.base}/api/v1/sessions/{sid}/heartbeat", "POST"),
        "create": (f"{ours.base}/api/v1/sessions", "POST"),
        "health": (f"{ours.base}/health", "GET"),
    }[route]
    results: dict[str, dict[str, float]] = {}

    def run() -> None:
        results["bare"] = wrk(f"{bare.base}/bare")
        results["ours"] = wrk(url, method)

    benchmark.pedantic(run, rounds=1, iterations=1)
    record(benchmark, f"http-{route}", results["ours"], results["bare"])


def test_http_get_on_redis_with_two_workers(benchmark: Any, redis_server: RedisServer) -> None:
    """GET of a session with 2 workers on a local redis-server, against the bare route with 2 workers."""
    redis_server.flush()
    servers = [serve_bare(2), serve_ours(2, redis_server.url)]
    try:
        peer, mine = servers
        sid = mine.post("/api/v1/sessions", b"")["session_id"]
        results: dict[str, dict[str, float]] = {}

        def run() -> None:
            results["bare"] = wrk(f"{peer.base}/bare")
            results["ours"] = wrk(f"{mine.base}/api/v1/sessions/{sid}")

        benchmark.pedantic(run, rounds=1, iterations=1)
        record(benchmark, "http-get-redis-2-workers", results["ours"], results["bare"])
    finally:
        for server in servers:
            server.stop()
