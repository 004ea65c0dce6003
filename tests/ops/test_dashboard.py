"""The Grafana dashboard's queries return data: a real Prometheus scrapes a real server under load, and
every panel's PromQL is asked of it, so a renamed metric fails here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.processes import free_port, stop, wait_for_answer
from tests.support import require_tool

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "faultmaven" / "observability" / "dashboard.json"
ADMIN = "an-admin-token-of-32-characters!"


def queries() -> list[tuple[str, str]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(panel["title"], target["expr"]) for panel in panels for target in panel["targets"]]


class Load:
    """Creates, reads, deletes and admin cleanups against the server until stopped."""

    def __init__(self, base: str) -> None:
        self.base, self._stop = base, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=10) as client:
            while not self._stop.is_set():
                sid = client.post("/api/v1/sessions", json={"timeout_minutes": 1}).json()["session_id"]
                client.get(f"/api/v1/sessions/{sid}")
                client.delete(f"/api/v1/sessions/{sid}")
                client.post("/api/v1/sessions/cleanup", headers={"Authorization": f"Bearer {ADMIN}"})
                time.sleep(0.05)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


@pytest.fixture(scope="module")
def prometheus_under_load() -> Iterator[str]:
    """A served app with traffic, and a Prometheus scraping it every second: Prometheus' base URL."""
    binary = require_tool("prometheus", "prometheus")
    app_port, prom_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_")}
    env |= {"PYTHONPATH": str(ROOT), "SESSION_ADMIN_TOKEN": ADMIN, "SESSION_CLEANUP_INTERVAL_MINUTES": "0.02"}
    app = subprocess.Popen(
        [sys.executable, "-m", "faultmaven", "--port", str(app_port), "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with tempfile.TemporaryDirectory(prefix="fm-prom-") as tmp:
        config = Path(tmp, "prometheus.yml")
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"scrape_configs: [{{job_name: faultmaven, static_configs: [{{targets: ['127.0.0.1:{app_port}']}}]}}]\n"
        )
        prom = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp}/data",
             f"--web.listen-address=127.0.0.1:{prom_port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for_answer(f"http://127.0.0.1:{app_port}/health", app, "the service")
            wait_for_answer(f"http://127.0.0.1:{prom_port}/-/ready", prom, "prometheus")
            with Load(f"http://127.0.0.1:{app_port}"):
                yield f"http://127.0.0.1:{prom_port}"
        finally:
            stop(prom)
            stop(app)


def test_the_dashboard_is_grafana_json_with_a_query_per_panel() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] and dashboard["panels"]
    assert all(panel["targets"] and panel["targets"][0]["expr"] for panel in dashboard["panels"])


def test_every_panel_query_returns_data(prometheus_under_load: str) -> None:
    pending = dict(queries())
    deadline = time.monotonic() + 90  # rates need two scrapes in their window; the cleanups run meanwhile
    while pending:
        for title, expr in list(pending.items()):
            answer = httpx.get(f"{prometheus_under_load}/api/v1/query", params={"query": expr}, timeout=10).json()
            assert answer["status"] == "success", (title, answer)
            if answer["data"]["result"]:
                del pending[title]
        assert time.monotonic() < deadline, f"no data for: {sorted(pending)}"
        time.sleep(1)
