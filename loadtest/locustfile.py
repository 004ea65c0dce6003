"""Live traffic while cleanup runs: `locust -f loadtest --host http://127.0.0.1:PORT`.

- Keeper: holds one session and reads or heartbeats it well inside the timeout. A 404 on its own live
  session is the failure "live session lost" (then it starts a new session and goes on).
- Churner: creates sessions and abandons them, so that every cleanup run has real work.
- Observer: one user reading /health and the session metrics once a second.

Set LOADTEST_REQUEST_LOG to a file path to get every request as a JSON line (start time, latency, name);
the runner (ci/load_run.py) uses it to compare latency in windows with and without a cleanup run.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from typing import Any

from locust import FastHttpUser, between, constant, events, task

API = "/api/v1/sessions"
LOST = "live session lost"
_requests: list[tuple[float, float, str, bool]] = []
_observed: list[dict[str, Any]] = []


@events.request.add_listener
def _record(request_type: str, name: str, response_time: float, exception: Any, start_time: float, **_: Any) -> None:
    if os.environ.get("LOADTEST_REQUEST_LOG"):
        _requests.append((start_time, response_time, f"{request_type} {name}", exception is None))


@events.quitting.add_listener
def _write_log(**_: Any) -> None:
    path = os.environ.get("LOADTEST_REQUEST_LOG")
    if path:
        with open(path, "w") as out:
            for start, latency_ms, name, ok in _requests:
                out.write(json.dumps({"t": start, "ms": latency_ms, "name": name, "ok": ok}) + "\n")
            for seen in _observed:
                out.write(json.dumps(seen) + "\n")


class Keeper(FastHttpUser):
    weight = 3
    wait_time = between(0.2, 0.8)  # far inside any timeout the runner sets (6 s)

    def on_start(self) -> None:
        self.new_session()

    def new_session(self) -> None:
        response = self.client.post(API, json={"user_id": "keeper", "data": {"role": "keeper"}}, name=API)
        self.session_id = response.json()["session_id"] if response.status_code == 201 else None

    def use(self, method: str, path: str, name: str) -> None:
        if self.session_id is None:
            self.new_session()
            return
        with self.client.request(method, path, name=name, catch_response=True) as response:
            if response.status_code == 404:
                response.failure(LOST)
                self.new_session()
            elif response.status_code != 200:
                response.failure(f"unexpected status {response.status_code}")

    @task(3)
    def read(self) -> None:
        self.use("GET", f"{API}/{self.session_id}", f"{API}/{{id}}")

    @task(1)
    def heartbeat(self) -> None:
        self.use("POST", f"{API}/{self.session_id}/heartbeat", f"{API}/{{id}}/heartbeat")


TIMEOUTS = [0.08, 0.1, 0.12, 0.15]  # minutes: around the server's 6 s default (the harness allows 0.01 and up)


class Churner(FastHttpUser):
    weight = 2
    wait_time = constant(0.02)

    @task
    def create_and_abandon(self) -> None:
        """A copilot-shaped create: its own client id and one of several idle timeouts (several lanes)."""
        body = {
            "client_id": uuid.uuid4().hex,
            "session_type": "troubleshooting",
            "timeout_minutes": random.choice(TIMEOUTS),
            "metadata": {"source": "loadtest"},
            "data": {"abandoned": True, "notes": "x" * 200},
        }
        self.client.post(API, json=body, name=API)


class Observer(FastHttpUser):
    fixed_count = 1
    wait_time = constant(1.0)

    @task
    def observe(self) -> None:
        self.client.get("/health", name="/health")
        with self.client.get(f"{API}/metrics", name=f"{API}/metrics", catch_response=True) as response:
            if response.status_code == 200:
                metrics = response.json()
                _observed.append(
                    {
                        "observed": time.time(),
                        "cleanup_runs": metrics["cleanup_runs"],
                        "sessions_cleaned_total": metrics["sessions_cleaned_total"],
                        "active_sessions": metrics["active_sessions"],
                    }
                )
            else:
                response.failure(f"metrics answered {response.status_code}")
