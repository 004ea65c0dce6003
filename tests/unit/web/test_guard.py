"""Failed credentials: audited per source without the credential, rate-limited, and slowed down."""

from __future__ import annotations

import logging

import pytest

from faultmaven.config import Settings
from faultmaven.session_management import SessionManager
from faultmaven.stores import MemoryStore
from faultmaven.web.guard import AUDIT_EVERY_S, FREE_FAILURES, MAX_BACKOFF_S, FailureGuard
from tests.conftest import open_client
from tests.support import FakeClock

ADMIN = "an-admin-token-of-32-characters!"
API = "/api/v1/sessions"


def test_a_source_that_keeps_failing_backs_off_longer_each_time() -> None:
    clock = FakeClock()
    guard = FailureGuard(clock)
    for _ in range(FREE_FAILURES - 1):
        guard.failed("10.0.0.1", "admin token")
    assert guard.wait_s("10.0.0.1") == 0.0
    guard.failed("10.0.0.1", "admin token")
    first = guard.wait_s("10.0.0.1")
    guard.failed("10.0.0.1", "admin token")
    assert first > 0 and guard.wait_s("10.0.0.1") == 2 * first
    assert guard.wait_s("10.0.0.2") == 0.0  # another source is not slowed
    for _ in range(40):
        guard.failed("10.0.0.1", "admin token")
    assert guard.wait_s("10.0.0.1") == MAX_BACKOFF_S
    clock.advance(MAX_BACKOFF_S)
    assert guard.wait_s("10.0.0.1") == 0.0
    guard.succeeded("10.0.0.1")
    guard.failed("10.0.0.1", "admin token")
    assert guard.wait_s("10.0.0.1") == 0.0  # a success starts the count again


def test_refusals_are_audited_at_most_once_a_minute_per_source(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    guard = FailureGuard(clock)
    with caplog.at_level(logging.INFO, logger="faultmaven.audit"):
        for _ in range(10):
            guard.failed("10.0.0.1", "bearer token")
        clock.advance(AUDIT_EVERY_S)
        guard.failed("10.0.0.1", "bearer token")
    records = [r for r in caplog.records if r.getMessage() == "credential refused"]
    assert [r.count for r in records] == [1, 10]  # type: ignore[attr-defined]
    assert all("10.0.0.1" not in str(vars(r)) for r in records)  # the source as a fingerprint only


async def test_guessing_the_admin_token_is_slowed_down_and_audited(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(cleanup_enabled=False, admin_token=ADMIN)
    manager = SessionManager(MemoryStore(), settings=settings, clock=FakeClock())
    with caplog.at_level(logging.INFO, logger="faultmaven.audit"):
        async for client in open_client(manager):
            statuses = []
            for guess in range(FREE_FAILURES + 3):
                answer = await client.post(f"{API}/cleanup", headers={"Authorization": f"Bearer guess-{guess}"})
                statuses.append(answer.status_code)
            assert statuses[:FREE_FAILURES] == [401] * FREE_FAILURES
            assert set(statuses[FREE_FAILURES:]) == {429} and int(answer.headers["Retry-After"]) >= 1
            right = await client.post(f"{API}/cleanup", headers={"Authorization": f"Bearer {ADMIN}"})
            assert right.status_code == 429  # even the right token waits out the backoff
    assert any(r.getMessage() == "credential refused" for r in caplog.records)
    assert ADMIN not in caplog.text and "guess-" not in caplog.text


async def test_deletes_and_admin_runs_are_audited_with_their_actor(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(cleanup_enabled=False, admin_token=ADMIN)
    manager = SessionManager(MemoryStore(), settings=settings, clock=FakeClock())
    with caplog.at_level(logging.INFO, logger="faultmaven.audit"):
        async for client in open_client(manager):
            sid = (await client.post(API, json={"user_id": "alice"})).json()["session_id"]
            assert (await client.delete(f"{API}/{sid}")).status_code == 204
            assert (
                await client.post(f"{API}/cleanup", headers={"Authorization": f"Bearer {ADMIN}"})
            ).status_code == 200
    events = {getattr(r, "event", None): r for r in caplog.records}
    assert events["deleted"].count == 1  # type: ignore[attr-defined]
    assert events["admin_cleanup"].actor  # type: ignore[attr-defined]
    assert sid not in caplog.text and "alice" not in caplog.text
