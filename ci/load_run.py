"""Load harness runner: a real uvicorn server, real locust traffic, cleanup running all along.

    python ci/load_run.py [--duration 45] [--users 60] [--out loadtest/out]
    python ci/load_run.py --cluster --workers 2      # on a local Redis Cluster (3 masters, 3 replicas)
    python ci/load_run.py --at-budget [--duration 60] # below the store's budget, then at it

Starts `python -m faultmaven` on a free 127.0.0.1 port with a short timeout and cleanup interval, waits
until it is healthy, runs locust headless for a bounded time, stops the server, writes locust's CSV and
HTML, a latency-over-time PNG with the cleanup runs marked and summary.json, and exits 1 with a readable
summary unless every check passes. Traffic goes to 127.0.0.1 only and every step has a time limit.

With --at-budget the same scenario runs twice, each for --duration: below the budget (out/below-budget,
the checks above), then against a server whose SESSION_MAX_MEMORY_MB (--budget-mb) the churners fill
within a second of starting, their sessions living longer than the run so that the store stays full
(out/at-budget). There no live session may be lost, creates must be refused with 503 and Retry-After and
nothing else fail, the keepers' read p99 must stay within P99_RATIO_BOUND (or P99_SLACK_MS) of the run
below the budget, and /health must report the store full while it is.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
P99_RATIO_BOUND = 1.25
# ...or at most this many ms above it: with uvicorn[standard] the quiet p99 fell to about 10 ms, where a
# 20 s run measured 14.8 ms against 9.6 ms (1.55x) for a difference no client would notice.
P99_SLACK_MS = 10.0
# Measured 10 to 15 ms at full load on 2 shared cores when this bound was set; in this round's CI-like
# runs (uvicorn[standard], ~900 req/s) 22, 31, 35, 42 and once 84 ms, cause not yet found (README). The
# guard against a cleanup that blocks the loop is the stall benchmark of tox -e perf (a 1M cleanup,
# 0.6 ms, gate 5 ms); this bound catches a server that stalls for a large part of a second.
STALL_BOUND_MS = 200.0
LOAD_ADMIN_TOKEN = secrets.token_hex(16)  # the members' revoke-all needs the admin token
LOAD_TIMEOUTS = "0.08,0.1,0.12,0.15"  # minutes, around the server's 6 s default: cleanup always has work
BUDGET_TIMEOUTS = "10"  # minutes: the churners' sessions outlive the run, so the store stays at its budget
# About 240 churners' sessions (~1 kB each) beside the keepers' and members' (~0.7 kB): full within a second.
BUDGET_MB = 0.25
READS = ("GET /api/v1/sessions/{id}", "POST /api/v1/sessions/{id}/heartbeat")
REFUSED = "POST /api/v1/sessions (refused)"
STORE_FULL_REASON = "session store full"
BUDGET_REASON = "memory_usage_mb at SESSION_MAX_MEMORY_MB"


@dataclass
class Check:
    name: str
    value: float
    bound: str
    passed: bool


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        body: dict[str, Any] = json.loads(response.read())
        return body


def wait_healthy(base: str, deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            if get_json(f"{base}/health")["status"] in ("healthy", "degraded"):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"load_run: the server at {base} did not become healthy within {deadline_s:.0f} s")


def cleanup_runs(server_log: Path, since: float, until: float) -> list[tuple[float, float, int]]:
    """(start, end, sessions removed) of every cleanup run the server logged in [since, until]."""
    runs = []
    for line in server_log.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("message") != "Session cleanup completed" or record["audit"]["trigger"] == "eviction":
            continue
        start = datetime.fromisoformat(record["audit"]["started_at"]).timestamp()
        end = datetime.fromisoformat(record["audit"]["finished_at"]).timestamp()
        if since <= start <= until:
            runs.append((start, end, int(record["cleanup_count"])))
    return runs


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def window_p99(requests: list[dict[str, Any]], runs: list[tuple[float, float, int]]) -> tuple[float, float, int]:
    """p99 latency of requests in 1-second windows that held a cleanup run, against windows that did not."""
    busy_seconds = set()
    for start, end, _ in runs:
        busy_seconds.update(range(int(start), int(end) + 1))
    busy = [r["ms"] for r in requests if int(r["t"]) in busy_seconds]
    quiet = [r["ms"] for r in requests if int(r["t"]) not in busy_seconds]
    return percentile(busy, 0.99), percentile(quiet, 0.99), len(busy)


def plot(requests: list[dict[str, Any]], runs: list[tuple[float, float, int]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = min(r["t"] for r in requests)
    by_second: dict[int, list[float]] = {}
    for r in requests:
        by_second.setdefault(int(r["t"] - t0), []).append(r["ms"])
    seconds = sorted(by_second)
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.plot(seconds, [percentile(by_second[s], 0.99) for s in seconds], label="p99 per second")
    ax.plot(seconds, [statistics.median(by_second[s]) for s in seconds], label="median per second")
    for i, (start, _end, count) in enumerate(runs):
        ax.axvline(start - t0, color="tab:red", alpha=0.35, lw=1, label="cleanup run" if i == 0 else None)
        ax.annotate(str(count), (start - t0, 0), fontsize=6, color="tab:red", rotation=90, va="bottom")
    ax.set(xlabel="seconds into the run", ylabel="latency (ms)", title="Latency under load, cleanup runs marked")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def locust_totals(stats_csv: Path, failures_csv: Path) -> dict[str, float]:
    rows = list(csv.DictReader(stats_csv.open()))
    total = next(r for r in rows if r["Name"] == "Aggregated")
    lost = sum(int(r["Occurrences"]) for r in csv.DictReader(failures_csv.open()) if "live session lost" in r["Error"])
    return {
        "requests": int(total["Request Count"]),
        "failures": int(total["Failure Count"]),
        "rps": float(total["Requests/s"]),
        "p50_ms": float(total["50%"]),
        "p95_ms": float(total["95%"]),
        "p99_ms": float(total["99%"]),
        "live_sessions_lost": lost,
    }


@dataclass
class Phase:
    """What one server and one locust run left behind."""

    out: Path
    started: float
    finished: float
    lines: list[dict[str, Any]]
    requests: list[dict[str, Any]]
    runs: list[tuple[float, float, int]]
    totals: dict[str, float]
    metrics: dict[str, Any]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=None, help="seconds of traffic (45; 60 per phase at budget)")
    parser.add_argument("--users", type=int, default=60)
    parser.add_argument("--spawn-rate", type=float, default=30)
    parser.add_argument("--timeout-minutes", default="0.1")
    parser.add_argument("--interval-minutes", default="0.05")
    parser.add_argument("--store-url", default="memory://")
    parser.add_argument("--redis", action="store_true", help="start a redis-server and use the Redis store")
    parser.add_argument("--cluster", action="store_true", help="start a local Redis Cluster and use it")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers (more than 1 needs --redis/--cluster)")
    parser.add_argument("--out", type=Path, default=ROOT / "loadtest" / "out")
    parser.add_argument("--at-budget", action="store_true", help="run below the store's budget, then at it")
    parser.add_argument("--budget-mb", type=float, default=BUDGET_MB, help="SESSION_MAX_MEMORY_MB at the budget")
    parser.add_argument("--memory-policy", default="reject", choices=("reject", "evict"), help="SESSION_MEMORY_POLICY")
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 60 if args.at_budget else 45
    if args.at_budget and (args.redis or args.cluster):
        parser.error("--at-budget sets SESSION_MAX_MEMORY_MB, which bounds the memory store only")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    redis: Any = None
    sys.path.insert(0, str(ROOT))
    if args.redis:
        from tests.redis_server import RedisServer

        redis = RedisServer()
    elif args.cluster:
        from tests.redis_cluster import RedisCluster

        redis = RedisCluster()
    if redis is not None:
        redis.start()
        args.store_url = redis.url
    try:
        return run_at_budget(args, out) if args.at_budget else run(args, out)
    finally:
        if redis is not None:
            redis.cleanup()


def serve_and_load(
    args: argparse.Namespace,
    out: Path,
    server_env: dict[str, str] | None = None,
    load_env: dict[str, str] | None = None,
) -> Phase | None:
    """Serve, run locust against the server, stop it; None (and why, printed) when locust failed."""
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_")} | {
        "SESSION_TIMEOUT_MINUTES": args.timeout_minutes,
        "SESSION_MIN_TIMEOUT_MINUTES": "0.01",
        "SESSION_ADMIN_TOKEN": LOAD_ADMIN_TOKEN,
        "SESSION_CLEANUP_INTERVAL_MINUTES": args.interval_minutes,
        "SESSION_STORE_URL": args.store_url,
        "SESSION_HEALTH_MAX_ACTIVE": "1000000",
        "SESSION_MAX_MEMORY_MB": "1024",
        "SESSION_MEMORY_POLICY": args.memory_policy,
    }
    env |= server_env or {}
    server_log = out / "server.log"
    print(
        f"load_run: serving on {base} with {args.workers} worker(s) on {args.store_url.split(':')[0]} "
        f"(timeout {args.timeout_minutes} min, interval {args.interval_minutes} min, "
        f"budget {env['SESSION_MAX_MEMORY_MB']} MB, policy {env['SESSION_MEMORY_POLICY']})"
    )
    with server_log.open("w") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "faultmaven",
                "--port",
                str(port),
                "--log-level",
                "info",
                "--workers",
                str(args.workers),
            ],
            env=env,
            stderr=log,
            cwd=ROOT,
        )
        try:
            wait_healthy(base)
            started = time.time()
            print(f"load_run: locust, {args.users} users for {args.duration} s")
            locust = subprocess.run(
                [
                    sys.executable, "-m", "locust", "-f", str(ROOT / "loadtest"), "--host", base, "--headless",
                    "-u", str(args.users), "-r", str(args.spawn_rate), "-t", f"{args.duration}s",
                    "--csv", str(out / "locust"), "--html", str(out / "locust.html"),
                    "--only-summary", "--stop-timeout", "5", "--exit-code-on-error", "0",
                ],
                env=os.environ
                | {
                    "LOADTEST_REQUEST_LOG": str(out / "requests.jsonl"),
                    "LOADTEST_ADMIN_TOKEN": LOAD_ADMIN_TOKEN,
                    "LOADTEST_TIMEOUTS": LOAD_TIMEOUTS,
                }
                | (load_env or {}),
                timeout=args.duration + 120,
                cwd=ROOT,
            )  # fmt: skip
            finished = time.time()
            after = get_json(f"{base}/api/v1/sessions/metrics")
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
    if locust.returncode != 0:
        print(f"load_run: locust exited {locust.returncode}")
        return None
    lines = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()]
    requests = [r for r in lines if "ms" in r and r["name"] != "GET /health" and not r["name"].endswith("/metrics")]
    runs = cleanup_runs(server_log, started, finished)
    totals = locust_totals(out / "locust_stats.csv", out / "locust_failures.csv")
    plot(requests, runs, out / "latency.png")
    return Phase(out, started, finished, lines, requests, runs, totals, after)


def cleanup_checks(phase: Phase, args: argparse.Namespace) -> tuple[list[Check], dict[str, Any]]:
    """The checks of a run below the budget: nothing lost or failed, cleanup busy, p99 steady across it."""
    totals, runs = phase.totals, phase.runs
    busy_p99, quiet_p99, busy_count = window_p99(phase.requests, runs)
    # From the server's log, which every worker writes to: per-process counters would see one worker only.
    cleaned = sum(count for *_, count in runs)
    run_count = len(runs)
    stall_ms = phase.metrics["event_loop_max_stall_ms"]
    ratio = busy_p99 / quiet_p99 if quiet_p99 else float("inf")
    checks = [
        Check("failed requests", totals["failures"], "= 0", totals["failures"] == 0),
        Check("live sessions lost", totals["live_sessions_lost"], "= 0", totals["live_sessions_lost"] == 0),
        Check("cleanup runs during the run", run_count, ">= 3", run_count >= 3),
        Check("sessions cleaned during the run", cleaned, ">= 1000", cleaned >= 1000),
        Check(
            "p99 in cleanup windows / p99 elsewhere",
            ratio,
            f"<= {P99_RATIO_BOUND} or +{P99_SLACK_MS:g} ms",
            ratio <= P99_RATIO_BOUND or busy_p99 - quiet_p99 <= P99_SLACK_MS,
        ),
        Check("server's longest event-loop stall (ms)", stall_ms, f"<= {STALL_BOUND_MS:g}", stall_ms <= STALL_BOUND_MS),
    ]
    summary = totals | {
        "duration_s": round(phase.finished - phase.started, 1),
        "users": args.users,
        "cleanup_runs": run_count,
        "sessions_cleaned": cleaned,
        "largest_run": max((count for *_, count in runs), default=0),
        "p99_cleanup_windows_ms": busy_p99,
        "p99_quiet_windows_ms": quiet_p99,
        "requests_in_cleanup_windows": busy_count,
        "max_stall_ms": stall_ms,
        "read_p99_ms": percentile([r["ms"] for r in phase.requests if r["name"] in READS], 0.99),
    }
    print(
        f"\nload_run: {totals['requests']:,} requests in {summary['duration_s']} s ({totals['rps']:.0f}/s), "
        f"p50 {totals['p50_ms']:.0f} ms, p95 {totals['p95_ms']:.0f} ms, p99 {totals['p99_ms']:.0f} ms; "
        f"{run_count} cleanup runs removed {cleaned:,} sessions (largest run {summary['largest_run']:,}); "
        f"p99 {busy_p99:.1f} ms in cleanup windows vs {quiet_p99:.1f} ms elsewhere\n"
    )
    return checks, summary


def budget_checks(phase: Phase, below_read_p99: float) -> tuple[list[Check], dict[str, Any]]:
    """The checks at the budget, from the store's first refusal on: nothing lost, creates refused with
    Retry-After and nothing else failed, reads as fast as below the budget, /health saying the store is full."""
    totals = phase.totals
    refusals = [r for r in phase.lines if "refused" in r]
    without_retry_after = sum(1 for r in refusals if not r["retry_after"])
    # Full from the first refusal; a store that never refuses (SESSION_MEMORY_POLICY=evict) is full from
    # the first /health read that names the budget.
    at_budget = [r["health"] for r in phase.lines if "health" in r and any(BUDGET_REASON in x for x in r["reasons"])]
    full_from = min((r["refused"] for r in refusals), default=min(at_budget, default=phase.finished))
    first_request = min((r["t"] for r in phase.requests), default=phase.started)
    reads = [r["ms"] for r in phase.requests if r["name"] in READS and r["t"] >= full_from]
    read_p99 = percentile(reads, 0.99)
    ratio = read_p99 / below_read_p99 if below_read_p99 else float("inf")
    # /health read while the store is full: from one second after the first refusal (the observer reads
    # it once a second) to the end of the traffic.
    health = [r for r in phase.lines if "health" in r and r["health"] >= full_from + 1.0]
    reported = sum(1 for r in health if r["status"] == "degraded" and any(STORE_FULL_REASON in x for x in r["reasons"]))
    stall_ms = phase.metrics["event_loop_max_stall_ms"]
    other_failures = totals["failures"] - totals["live_sessions_lost"]
    checks = [
        Check("live sessions lost", totals["live_sessions_lost"], "= 0", totals["live_sessions_lost"] == 0),
        Check("creates refused (503, Retry-After)", len(refusals), "> 0", len(refusals) > 0),
        Check("refusals without Retry-After", without_retry_after, "= 0", without_retry_after == 0),
        Check("other failed requests", other_failures, "= 0", other_failures == 0),
        Check(
            "read p99 at budget / below budget",
            ratio,
            f"<= {P99_RATIO_BOUND} or +{P99_SLACK_MS:g} ms",
            ratio <= P99_RATIO_BOUND or read_p99 - below_read_p99 <= P99_SLACK_MS,
        ),
        Check(
            "/health reads without the store-full reason",
            len(health) - reported,
            f"= 0 of {len(health)}",
            bool(health) and reported == len(health),
        ),
        Check("server's longest event-loop stall (ms)", stall_ms, f"<= {STALL_BOUND_MS:g}", stall_ms <= STALL_BOUND_MS),
    ]
    summary = totals | {
        "duration_s": round(phase.finished - phase.started, 1),
        "store_full_after_s": round(full_from - first_request, 1),  # seconds into the traffic
        "refusals": len(refusals),
        "refusals_without_retry_after": without_retry_after,
        "reads_while_full": len(reads),
        "read_p99_ms": read_p99,
        "read_p99_below_budget_ms": below_read_p99,
        "health_reads_while_full": len(health),
        "health_reads_store_full": reported,
        "max_stall_ms": stall_ms,
        "sessions_rejected_total": phase.metrics.get("sessions_rejected_total"),
        "sessions_evicted_total": phase.metrics.get("sessions_evicted_total"),
    }
    print(
        f"\nload_run: at the budget, {totals['requests']:,} requests in {summary['duration_s']} s "
        f"({totals['rps']:.0f}/s); store full after {summary['store_full_after_s']} s; {len(refusals):,} creates "
        f"refused; {totals['live_sessions_lost']:,} live sessions lost; read p99 {read_p99:.1f} ms "
        f"({len(reads):,} reads while full) vs {below_read_p99:.1f} ms below the budget\n"
    )
    return checks, summary


def report(checks: list[Check]) -> None:
    for c in checks:
        print(f"  {c.name:<44} {c.value:>10,.3g}  {c.bound:<12} {'ok' if c.passed else 'FAIL'}")


def run(args: argparse.Namespace, out: Path) -> int:
    phase = serve_and_load(args, out)
    if phase is None:
        return 1
    checks, summary = cleanup_checks(phase, args)
    summary["checks"] = {c.name: c.passed for c in checks}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    report(checks)
    print(f"\nload_run: CSV, HTML, latency.png and summary.json in {out}")
    return 0 if all(c.passed for c in checks) else 1


def run_at_budget(args: argparse.Namespace, out: Path) -> int:
    """The same scenario below the budget, then at it; one summary.json with both and every check."""
    print("load_run: below the budget")
    below = serve_and_load(args, out / "below-budget")
    if below is None:
        return 1
    below_checks, below_summary = cleanup_checks(below, args)
    report(below_checks)
    print("\nload_run: at the budget")
    spawn_s = args.users / args.spawn_rate
    at = serve_and_load(
        args,
        out / "at-budget",
        server_env={"SESSION_MAX_MEMORY_MB": f"{args.budget_mb:g}"},
        load_env={"LOADTEST_TIMEOUTS": BUDGET_TIMEOUTS, "LOADTEST_CHURN_AFTER_S": f"{spawn_s + 1:g}"},
    )
    if at is None:
        return 1
    at_checks, at_summary = budget_checks(at, below_summary["read_p99_ms"])
    report(at_checks)
    checks = {f"below budget: {c.name}": c.passed for c in below_checks}
    checks |= {f"at budget: {c.name}": c.passed for c in at_checks}
    summary = {
        "budget_mb": args.budget_mb,
        "memory_policy": args.memory_policy,
        "below_budget": below_summary,
        "at_budget": at_summary,
        "checks": checks,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    failed = [name for name, passed in checks.items() if not passed]
    print(f"\nload_run: {'FAILED: ' + ', '.join(failed) if failed else 'every check passed'}")
    print(f"load_run: summary.json in {out}; CSV, HTML and latency.png in its below-budget and at-budget folders")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
