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
from ci.perf_gate import PEERS, Results, checks, peer_min, table

HERE = Path(__file__).resolve().parent
SIZES = [1_000, 10_000, 100_000, 1_000_000]
LIVE = [1_000, 100_000, 1_000_000]
LABELS = {
    "ours": "ours (batches of 50, yield each)",
    "naive": "naive full scan",
    "ttlcache": "cachetools TTLCache.expire()",
    "ordered": "ordered-deletion peer (OrderedDict)",
    "floor": "floor: dict del loop",
}


def best_time(results: Results, kind: str, n: int) -> float:
    """Best round on n expired sessions: the peers are timed inside ours' rounds."""
    return peer_min(results, kind, n) if kind in PEERS else float(results.get(kind, n)["min"])


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
    lines = {label: (SIZES, [best_time(results, kind, n) for n in SIZES]) for kind, label in LABELS.items()}
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


HTTP_STORES = {"memory": "memory", "redis": "one redis-server", "redis-cluster": "Redis Cluster (3 masters)"}
HTTP_ROUTES = {
    "get": "GET /sessions/{id}",
    "heartbeat": "POST .../heartbeat",
    "create": "POST /sessions",
    "patch": "PATCH /sessions/{id}",
}
HTTP_EXTRA = {"http-memory-health": "GET /health (memory)", "http-redis-get-2-workers": "GET, Redis, 2 workers"}


def http_results(results: Results) -> dict[str, dict[str, object]]:
    return {kind: value for (kind, _, _), value in results.by_tag.items() if kind.startswith("http-")}


def plot_http(results: Results, path: Path) -> None:
    """Every route's requests/s as a fraction of its floor's on each store: grouped bars, one per store."""
    found = http_results(results)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / len(HTTP_STORES)
    top = 1.15
    colors = ["#3e7cb1", "#e07a2f", "#59a14f"]
    for i, (store, label) in enumerate(HTTP_STORES.items()):
        ratios = [float(found.get(f"http-{store}-{r}", {}).get("ratio", 0.0)) for r in HTTP_ROUTES]  # type: ignore[arg-type]
        xs = [x + (i - 1) * width for x in range(len(HTTP_ROUTES))]
        bars = ax.bar(xs, ratios, width, label=label, color=colors[i])
        top = max(top, *(ratio + 0.1 for ratio in ratios))
        for bar, ratio in zip(bars, ratios, strict=True):
            ax.text(bar.get_x() + bar.get_width() / 2, ratio + 0.01, f"{ratio:.2f}", ha="center", fontsize=8)
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(HTTP_ROUTES)), list(HTTP_ROUTES.values()))
    ax.set(ylabel="req/s / floor's req/s (wrk, best rounds, same run)", ylim=(0, top),
           title="HTTP: each route against the floor of its path (bare route; one EVALSHA on Redis)")  # fmt: skip
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def http_lines(results: Results) -> list[str]:
    found = http_results(results)
    if not found:
        return []
    lines = ["", "## HTTP path (wrk -t1 -c16 against one uvicorn worker, the floor of each path beside it)", ""]
    lines += ["![ratios to the floor](plots/http_ratios.png)", ""]
    lines += ["| store | route | ours req/s | p50 | p99 | floor req/s | p50 | p99 | ratio | round ratios |"]
    lines += ["|---" * 10 + "|"]
    rows = [(f"http-{s}-{r}", HTTP_STORES[s], name) for s in HTTP_STORES for r, name in HTTP_ROUTES.items()]
    rows += [(kind, "", name) for kind, name in HTTP_EXTRA.items()]
    for kind, store, name in rows:
        if kind in found:
            ours, bare, info = found[kind]["ours"], found[kind]["bare"], found[kind]
            spread = ", ".join(f"{r:.2f}" for r in info.get("round_ratios", []))  # type: ignore[attr-defined]
            lines.append(
                f"| {store} | {name} | {ours['rps']:,.0f} | {ours['p50_ms']:.1f} ms | {ours['p99_ms']:.1f} ms | "  # type: ignore[index]
                f"{bare['rps']:,.0f} | {bare['p50_ms']:.1f} ms | {bare['p99_ms']:.1f} ms | "  # type: ignore[index]
                f"{info['ratio']:.2f}x | {spread} |"
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
        "| N | ours | naive scan | TTLCache.expire() | ordered peer | dict floor | ours / floor | ours, sessions/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in SIZES:
        t = {kind: best_time(results, kind, n) for kind in LABELS}
        lines.append(
            f"| {n:,} | {t['ours'] * 1e3:.2f} ms | {t['naive'] * 1e3:.2f} ms | {t['ttlcache'] * 1e3:.2f} ms | "
            f"{t['ordered'] * 1e3:.2f} ms | "
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
