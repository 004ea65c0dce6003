"""Write perf/report.md and PNG plots from a pytest-benchmark JSON file.

    python perf/report.py perf/out/benchmark.json

`tox -e perf-report` runs the benchmarks (pytest -v shows each as it goes), then this script.
"""

from __future__ import annotations

import json
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ci.perf_gate import Results, checks, table

HERE = Path(__file__).resolve().parent
SIZES = [1_000, 10_000, 100_000, 1_000_000]
LIVE = [1_000, 100_000, 1_000_000]
LABELS = {
    "ours": "ours (batches of 50, yield each)",
    "naive": "naive full scan",
    "ttlcache": "cachetools TTLCache.expire()",
    "floor": "floor: dict del loop",
}


def loglog(path: Path, title: str, xlabel: str, ylabel: str, lines: dict[str, tuple[list[int], list[float]]]) -> None:
    """One log-log line plot, one line per label."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, (xs, ys) in lines.items():
        ax.plot(xs, ys, marker="o", label=label)
    ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_expired(results: Results, path: Path) -> None:
    lines = {label: (SIZES, [results.get(kind, n)["min"] for n in SIZES]) for kind, label in LABELS.items()}
    loglog(path, "Cleanup of N expired sessions", "expired sessions N", "cleanup time (s, best of rounds)", lines)


def plot_live(results: Results, path: Path) -> None:
    lines = {
        LABELS[kind]: (LIVE, [results.get(kind, 1000, live)["min"] * 1e3 for live in LIVE])
        for kind in ("ours", "naive")
    }
    loglog(path, "Cleanup of 1,000 expired sessions among many live ones", "live sessions beside them",
           "cleanup time (ms)", lines)  # fmt: skip


def redis_lines(results: Results) -> list[str]:
    """The Redis store against a SCAN-based cleanup, when redis-server was there to run them."""
    if ("redis-scan", 100_000, 0) not in results.by_tag:
        return []
    scan = results.get("redis-scan", 100_000)
    lines = ["", "## Redis store, 100,000 expired sessions, local redis-server", ""]
    for batch in (50, 500):
        ours = results.get(f"redis-ours-{batch}", 100_000)
        lines.append(
            f"- ours, batches of {batch}: {ours['min']:.2f} s ({ours['sessions_per_s']:,.0f} sessions/s, "
            f"{scan['min'] / ours['min']:.1f}x the SCAN cleanup)"
        )
    lines.append(f"- SCAN-based cleanup: {scan['min']:.2f} s ({scan['sessions_per_s']:,.0f} sessions/s)")
    return lines


HTTP_KINDS = {
    "http-get": "GET /sessions/{id}",
    "http-heartbeat": "POST .../heartbeat",
    "http-create": "POST /sessions",
    "http-health": "GET /health",
    "http-get-redis-2-workers": "GET, Redis, 2 workers",
}


def http_results(results: Results) -> dict[str, dict[str, object]]:
    return {kind: value for (kind, _, _), value in results.by_tag.items() if kind in HTTP_KINDS}


def plot_http(results: Results, path: Path) -> None:
    """One bar per route: its requests/s as a fraction of the bare FastAPI route's, measured beside it."""
    found = http_results(results)
    names = [HTTP_KINDS[kind] for kind in HTTP_KINDS if kind in found]
    ratios = [float(found[kind]["ratio"]) for kind in HTTP_KINDS if kind in found]  # type: ignore[arg-type]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.barh(names[::-1], ratios[::-1], color="#3e7cb1")
    ax.axvline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.set(xlabel="requests/s as a fraction of the bare route's (wrk, same run)", xlim=(0, 1.1),
           title="HTTP: our routes against a bare FastAPI route")  # fmt: skip
    for y, ratio in enumerate(ratios[::-1]):
        ax.text(ratio + 0.01, y, f"{ratio:.2f}x", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def http_lines(results: Results) -> list[str]:
    found = http_results(results)
    if not found:
        return []
    lines = ["", "## HTTP path (wrk against uvicorn, a bare FastAPI route beside it)", ""]
    lines += ["![ratios to the bare route](plots/http_ratios.png)", ""]
    lines += ["| route | ours req/s | p50 | p99 | bare req/s | p50 | p99 | ratio |", "|---" * 8 + "|"]
    for kind, name in HTTP_KINDS.items():
        if kind in found:
            ours, bare = found[kind]["ours"], found[kind]["bare"]
            lines.append(
                f"| {name} | {ours['rps']:,.0f} | {ours['p50_ms']:.1f} ms | {ours['p99_ms']:.1f} ms | "  # type: ignore[index]
                f"{bare['rps']:,.0f} | {bare['p50_ms']:.1f} ms | {bare['p99_ms']:.1f} ms | "  # type: ignore[index]
                f"{found[kind]['ratio']:.2f}x |"
            )
    return lines


def markdown(results: Results, data: dict[str, object]) -> str:
    lines = [
        "# Benchmark report",
        "",
        f"Written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `tox -e perf-report` on "
        f"{platform.machine()}, Python {platform.python_version()}, 2 shared cores. Times are the best of "
        "the rounds (min); the gate compares ratios measured in the same run.",
        "",
        "## Cleanup of N expired sessions",
        "",
        "![cleanup time against N](plots/cleanup_expired.png)",
        "",
        "| N | ours | naive scan | TTLCache.expire() | dict floor | ours / floor | ours, sessions/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in SIZES:
        t = {kind: results.get(kind, n)["min"] for kind in LABELS}
        lines.append(
            f"| {n:,} | {t['ours'] * 1e3:.2f} ms | {t['naive'] * 1e3:.2f} ms | {t['ttlcache'] * 1e3:.2f} ms | "
            f"{t['floor'] * 1e3:.2f} ms | {t['ours'] / t['floor']:.1f}x | {n / t['ours']:,.0f} |"
        )
    lines += [
        "",
        "## 1,000 expired among live sessions",
        "",
        "![cleanup among live sessions](plots/cleanup_among_live.png)",
        "",
        "| live | ours | naive scan |",
        "|---|---|---|",
    ]
    for live in LIVE:
        ours, naive = results.get("ours", 1000, live)["min"], results.get("naive", 1000, live)["min"]
        lines.append(f"| {live:,} | {ours * 1e3:.2f} ms | {naive * 1e3:.2f} ms |")
    stall = results.get("stall", 1_000_000)
    ops = {op: results.get(f"op-{op}", 100_000, 100_000)["min"] / 1000 for op in ("create", "get", "touch")}
    lines += [
        "",
        "## Responsiveness, memory, operations",
        "",
        f"- Longest event-loop stall while 1,000,000 expired sessions are cleaned (a probe task on the same "
        f"loop): {stall['max_stall_ms']:.3f} ms in the best of 3 rounds, "
        f"{stall.get('worst_round_stall_ms', stall['max_stall_ms']):.3f} ms in the worst; "
        f"rate {stall['sessions_per_s']:,.0f} sessions/s.",
        f"- Extra peak memory (tracemalloc) during that cleanup: "
        f"{results.get('memory', 1_000_000)['extra_peak_bytes'] / 1024:.1f} KiB.",
        f"- get_session_metrics() at 1,000,000 sessions: "
        f"{results.get('metrics', 1_000_000, 500_000)['mean'] * 1e6:.2f} µs.",
        f"- Per operation with 100,000 stored: create {ops['create'] * 1e6:.1f} µs, get {ops['get'] * 1e6:.1f} µs, "
        f"touch {ops['touch'] * 1e6:.1f} µs.",
        *redis_lines(results),
        *http_lines(results),
        "",
        "## Gate",
        "",
        "```",
        table(checks(results, None)),
        "```",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    source = Path(argv[0]) if argv else HERE / "out" / "benchmark.json"
    print(f"report: reading {source}")
    data = json.loads(source.read_text())
    results = Results(data)
    (HERE / "plots").mkdir(exist_ok=True)
    print("report: plotting cleanup time against N")
    plot_expired(results, HERE / "plots" / "cleanup_expired.png")
    print("report: plotting cleanup among live sessions")
    plot_live(results, HERE / "plots" / "cleanup_among_live.png")
    if http_results(results):
        print("report: plotting the HTTP ratios")
        plot_http(results, HERE / "plots" / "http_ratios.png")
    (HERE / "report.md").write_text(markdown(results, data))
    print(f"report: wrote {HERE / 'report.md'} and {HERE / 'plots'}/*.png")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
