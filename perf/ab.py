"""This tree side by side with another checkout of the project (an older commit), in one run.

    git worktree add /tmp/old <commit>
    python perf/ab.py /tmp/old [--rounds 5] [--seconds 2]

Core: each workload runs in a fresh process per tree, the trees taking turns, through the public Python
API both share (SessionManager over a MemoryStore, a fake clock). HTTP: both trees served at once by
uvicorn on the in-memory store with the defaults, wrk taking turns on each. Each side keeps its best round
(on a shared machine a round is only ever slowed by other load); the ratio is new over old, for times
(core) and for requests per second (HTTP).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
N = 100_000
WORKLOADS = ("cleanup_100k_expired", "cleanup_1k_among_100k_live", "touch", "get", "create")
ROUTES = {"get": "GET", "heartbeat": "POST", "create": "POST", "patch": "PATCH"}


async def _workload(name: str) -> float:
    """Nanoseconds per session (cleanup) or per call, for one workload in this process."""
    from faultmaven.config import Settings
    from faultmaven.session_management import SessionManager
    from faultmaven.stores import MemoryStore

    now = [1_700_000_000.0]
    manager = SessionManager(MemoryStore(), settings=Settings(cleanup_enabled=False), clock=lambda: now[0])
    if name == "create":
        return await _per_call(N, lambda i: manager.create_session())
    short = 1_000 if name == "cleanup_1k_among_100k_live" else N
    ids = [(await manager.create_session(timeout_minutes=5 if i < short else None)).session_id for i in range(N)]
    if name.startswith("cleanup"):
        now[0] += 6 * 60 if short < N else 31 * 60
        t0 = time.perf_counter_ns()
        removed = await manager.cleanup_inactive_sessions()
        assert removed == short, removed
        return (time.perf_counter_ns() - t0) / removed
    random.seed(7)
    order = [random.choice(ids) for _ in range(N)]
    call = manager.touch_session if name == "touch" else manager.get_session
    return await _per_call(N, lambda i: call(order[i]))


async def _per_call(n: int, call: Callable[[int], Awaitable[Any]]) -> float:
    t0 = time.perf_counter_ns()
    for i in range(n):
        await call(i)
    return (time.perf_counter_ns() - t0) / n


def _in_tree(tree: Path, name: str) -> float:
    env = os.environ | {"PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--workload", name], cwd=tree, env=env,
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return float(out.strip().splitlines()[-1])


def _serve(tree: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_")}
    env |= {"PYTHONPATH": str(tree), "SESSION_HEALTH_MAX_ACTIVE": "100000000", "SESSION_MAX_MEMORY_MB": "4096"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "faultmaven", "--port", str(port)], cwd=tree, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{tree} did not start")


def _wrk(url: str, method: str, seconds: int) -> float:
    args = ["wrk", "-t1", "-c16", f"-d{seconds}s", url]
    if method != "GET":
        script = {"POST": "wrk_post.lua", "PATCH": "wrk_patch.lua"}[method]
        args[1:1] = ["-s", str(ROOT / "tests" / "performance" / script)]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    assert "Non-2xx" not in out, out
    return float(out.split("Requests/sec:")[1].split()[0])


def _http(old: Path, rounds: int, seconds: int) -> list[tuple[str, float, float]]:
    servers = {"old": (old, 18011), "new": (ROOT, 18012)}
    procs = [_serve(tree, port) for tree, port in servers.values()]
    try:
        rows = []
        for route, method in ROUTES.items():
            urls = {}
            for side, (_, port) in servers.items():
                request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/sessions", data=b"", method="POST")
                with urllib.request.urlopen(request, timeout=5) as answer:
                    sid = json.loads(answer.read())["session_id"]
                path = {"get": f"/{sid}", "heartbeat": f"/{sid}/heartbeat", "create": "", "patch": f"/{sid}"}[route]
                urls[side] = f"http://127.0.0.1:{port}/api/v1/sessions{path}"
            best = dict.fromkeys(servers, 0.0)
            for _ in range(rounds):
                for side in servers:
                    best[side] = max(best[side], _wrk(urls[side], method, seconds))
            rows.append((f"http {route} (req/s)", best["old"], best["new"]))
        return rows
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", nargs="?", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=2)
    parser.add_argument("--workload", choices=WORKLOADS)
    parser.add_argument("--no-http", action="store_true")
    args = parser.parse_args()
    if args.workload:
        print(asyncio.run(_workload(args.workload)))
        return
    rows = []
    for name in WORKLOADS:
        best = {"old": float("inf"), "new": float("inf")}
        for _ in range(args.rounds):
            best["old"] = min(best["old"], _in_tree(args.old.resolve(), name))
            best["new"] = min(best["new"], _in_tree(ROOT, name))
        rows.append((f"{name} (ns)", best["old"], best["new"]))
    if not args.no_http:
        rows += _http(args.old.resolve(), args.rounds, args.seconds)
    print("| measure | old | new | new/old |\n|---|---|---|---|")
    for name, old, new in rows:
        print(f"| {name} | {old:,.0f} | {new:,.0f} | {new / old:.3f} |")


if __name__ == "__main__":
    main()
