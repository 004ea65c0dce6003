"""The state machine against the real manager and in-memory store (profile from HYPOTHESIS_PROFILE)."""

from __future__ import annotations

import os

from hypothesis.stateful import run_state_machine_as_test

from tests.property import machine


def test_session_state_machine() -> None:
    before = machine.STEPS[0]
    run_state_machine_as_test(machine.SessionMachine)
    steps = machine.STEPS[0] - before
    print(f"state machine: {steps} steps")
    if os.environ.get("HYPOTHESIS_PROFILE") == "ci":
        assert steps >= 10_000, f"the ci profile ran only {steps} steps"
