"""Live traffic while cleanup runs: `locust -f loadtest --host http://127.0.0.1:PORT`.

- Keeper: holds one session and reads or heartbeats it well inside the timeout. A 404 on its own live
  session is the failure "live session lost" (then it starts a new session and goes on).
- Churner: creates sessions and abandons them, so that every cleanup run has real work.
- Member: logs in (a session with its own user), rotates the id once, uses it, and now and then revokes all
  of its sessions and logs in again. A 404 on a session it has not revoked or rotated away is "live
  session lost".
- Observer: one user reading /health and the session metrics once a second.

It runs against a server with its default settings. These environment variables add what needs more:
- LOADTEST_TIMEOUTS: comma-separated idle timeouts in minutes for the churners' sessions (e.g.
  `0.08,0.1,0.12,0.15`, for a server whose SESSION_MIN_TIMEOUT_MINUTES allows them), so that cleanup runs
  have expired sessions to remove during the run. Unset: churners use the server's default timeout.
- LOADTEST_ADMIN_TOKEN: the server's SESSION_ADMIN_TOKEN; members then revoke all their sessions now and
  then. Unset: members never revoke.
- LOADTEST_CHURN_AFTER_S: seconds after the start before churners begin (unset: at once), so that against
  a small budget the keepers hold their sessions before the churners fill the store.
Each unset variable is reported once at start. A create answered 503 with `Retry-After` (the store is at
its budget and refuses new sessions) is the documented answer, not a failure; the user tries again later.
Such a create is reported under its own name, `POST /api/v1/sessions (refused)`; a 503 without
`Retry-After` is a failure.

Set LOADTEST_REQUEST_LOG to a file path to get every request as a JSON line (start time, latency, name),
every create answered 503 as `{"refused": time, "retry_after": header or null}` and the observer's readings
(metrics, /health status and reasons); the runner (ci/load_run.py) uses it to compare latency in windows
with and without a cleanup run, and below and at the store's budget.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from typing import Any

from locust import FastHttpUser, between, constant, events, task
from locust.env import Environment

API = "/api/v1/sessions"
REFUSED = f"{API} (refused)"
LOST = "live session lost"
_requests: list[tuple[float, float, str, bool]] = []
_observed: list[dict[str, Any]] = []
_refusals: list[dict[str, Any]] = []
_started = time.time()


def _timeouts(raw: str | None) -> list[float] | None:
    """LOADTEST_TIMEOUTS as a list of minutes, or None when unset or empty."""
    if not raw or not raw.strip():
        return None
    return [float(item) for item in raw.split(",") if item.strip()]


TIMEOUTS = _timeouts(os.environ.get("LOADTEST_TIMEOUTS"))
ADMIN_TOKEN = os.environ.get("LOADTEST_ADMIN_TOKEN") or None
CHURN_AFTER_S = float(os.environ.get("LOADTEST_CHURN_AFTER_S") or 0)


@events.init.add_listener
def _announce(environment: Environment, **_: Any) -> None:
    if TIMEOUTS is None:
        print("loadtest: LOADTEST_TIMEOUTS not set: churners' sessions use the server's default timeout")
    if ADMIN_TOKEN is None:
        print("loadtest: LOADTEST_ADMIN_TOKEN not set: members do not revoke their sessions")


@events.test_start.add_listener
def _start(**_: Any) -> None:
    global _started
    _started = time.time()


def refused_for_now(response: Any) -> bool:
    """A create the store refused at its budget: 503 with Retry-After, the answer the service documents."""
    return bool(response.status_code == 503 and response.headers.get("Retry-After"))


def create_answered(response: Any) -> bool:
    """Judge a create's answer: True when it was refused for now (reported as a success under REFUSED, so
    refusals are counted apart from creates), else a failure unless 201. Every 503 is noted for the log."""
    if response.status_code == 503:
        _refusals.append({"refused": time.time(), "retry_after": response.headers.get("Retry-After")})
    if refused_for_now(response):
        response.request_meta["name"] = REFUSED
        response.success()
        return True
    if response.status_code != 201:
        response.failure(f"create answered {response.status_code}")
    return False


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
            for refusal in _refusals:
                out.write(json.dumps(refusal) + "\n")


class Keeper(FastHttpUser):
    weight = 3
    wait_time = between(0.2, 0.8)  # far inside any timeout the runner sets (6 s)

    def on_start(self) -> None:
        self.user_id = f"keeper-{uuid.uuid4().hex[:12]}"  # one user each: SESSION_MAX_PER_USER never bites
        self.new_session()

    def new_session(self) -> None:
        body = {"user_id": self.user_id, "data": {"role": "keeper"}}
        with self.client.post(API, json=body, name=API, catch_response=True) as response:
            self.session_id = response.json()["session_id"] if response.status_code == 201 else None
            create_answered(response)  # refused: no session yet; the next task tries again

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


class Churner(FastHttpUser):
    weight = 2
    wait_time = constant(0.02)

    def on_start(self) -> None:
        time.sleep(max(0.0, _started + CHURN_AFTER_S - time.time()))  # gevent's sleep: other users go on

    @task
    def create_and_abandon(self) -> None:
        """A copilot-shaped create: its own client id and, with LOADTEST_TIMEOUTS, one of several idle
        timeouts (several expiry lanes)."""
        body: dict[str, Any] = {
            "client_id": uuid.uuid4().hex,
            "session_type": "troubleshooting",
            "metadata": {"source": "loadtest"},
            "data": {"abandoned": True, "notes": "x" * 200},
        }
        if TIMEOUTS is not None:
            body["timeout_minutes"] = random.choice(TIMEOUTS)
        with self.client.post(API, json=body, name=API, catch_response=True) as response:
            create_answered(response)


class Member(Keeper):
    """A logged-in user: create with a user, rotate once (as after authentication), use, revoke now and then."""

    weight = 1

    def new_session(self) -> None:
        super().new_session()
        if self.session_id is None:
            return
        with self.client.post(
            f"{API}/{self.session_id}/rotate", name=f"{API}/{{id}}/rotate", catch_response=True
        ) as response:
            if response.status_code == 200:
                self.session_id = response.json()["session_id"]  # the old id is gone, by its own doing
            else:
                response.failure(LOST if response.status_code == 404 else f"rotate answered {response.status_code}")
                self.session_id = None

    @task(1)
    def revoke_all(self) -> None:
        if ADMIN_TOKEN is None or random.random() > 0.1:
            return
        self.session_id = None  # revoked by its own user: no longer expected to live
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        with self.client.delete(
            API, params={"user_id": self.user_id}, headers=headers, name=API + " (revoke)", catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"revoke answered {response.status_code}")
        self.new_session()


class Observer(FastHttpUser):
    fixed_count = 1
    wait_time = constant(1.0)

    @task
    def observe(self) -> None:
        with self.client.get("/health", name="/health", catch_response=True) as response:
            if response.status_code == 200:
                service = response.json()["services"]["session_manager"]
                _observed.append(
                    {"health": time.time(), "status": response.json()["status"], "reasons": service.get("reasons", [])}
                )
            else:
                response.failure(f"health answered {response.status_code}")
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
