"""The alert rules load in promtool, pass their promtool unit tests, and name metrics /metrics exports."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from faultmaven.config import Settings
from faultmaven.session_management import SessionManager
from faultmaven.stores import MemoryStore
from tests.conftest import open_client
from tests.support import FakeClock, require_tool

RULES = Path(__file__).parents[2] / "faultmaven" / "observability" / "alerts.yml"
RULE_TESTS = Path(__file__).with_name("alerts_test.yml")


def promtool() -> str:
    return require_tool("promtool", "prometheus")


def test_rules_check() -> None:
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 rules found" in result.stdout


def test_rules_unit_tests() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", RULE_TESTS.name], capture_output=True, text=True, cwd=RULE_TESTS.parent
    )
    assert result.returncode == 0, result.stdout + result.stderr


async def test_every_metric_the_rules_use_is_exported(clock: FakeClock) -> None:
    manager = SessionManager(MemoryStore(), settings=Settings(cleanup_enabled=True), clock=clock)
    async for client in open_client(manager):
        await client.post("/api/v1/sessions", json={})
        clock.advance(minutes=31)
        await manager.cleanup_inactive_sessions()
        exported = (await client.get("/metrics")).text
    used = set(re.findall(r"faultmaven_[a-z_]+", RULES.read_text()))
    assert used, "no metric names found in the rules"
    for name in used:
        assert re.search(rf"^{name}(\{{| )", exported, re.M), f"{name} is not exported by /metrics"
    assert "faultmaven_session_cleanup_duration_seconds_bucket" in exported
