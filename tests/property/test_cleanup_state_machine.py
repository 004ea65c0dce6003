"""The state machine against the real manager and in-memory store (profile from HYPOTHESIS_PROFILE), with
restarts through a snapshot among its steps."""

from __future__ import annotations

import os

from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test

from tests.property import machine


def _restarts_during(machine_type: type[machine.SessionMachine], most: int | None = None) -> dict[str, int]:
    """The restarts a run of the machine made (`most`: at most that many examples, else the profile's)."""
    before = dict(machine.RESTARTS)
    examples = settings.default.max_examples if most is None else min(settings.default.max_examples, most)
    run_state_machine_as_test(machine_type, settings=settings(max_examples=examples))
    return {kind: machine.RESTARTS[kind] - before[kind] for kind in before}


def test_session_state_machine() -> None:
    before = machine.STEPS[0]
    ran = _restarts_during(machine.SessionMachine)
    steps = machine.STEPS[0] - before
    print(f"state machine: {steps} steps, restarts through a snapshot: {ran}")
    if os.environ.get("HYPOTHESIS_PROFILE") == "ci":
        assert steps >= 10_000, f"the ci profile ran only {steps} steps"
    # The restart step is reached, and with sessions whose deadline passed before the stop or while down.
    assert ran["all"] and ran["with_expired"], f"restarts: {ran}"


def test_restarts_keep_each_users_list_in_its_order() -> None:
    """Started with a user's sessions last active at one instant in three lanes: restarts carry them (200
    examples at most: the rules are the first test's, only the start differs)."""
    ran = _restarts_during(machine.UsersAtOneInstantMachine, most=200)
    print(f"restarts through a snapshot: {ran}")
    assert ran["with_ties"], f"no restart carried a user's sessions last active at one instant: {ran}"
