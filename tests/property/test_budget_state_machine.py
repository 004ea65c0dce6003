"""The state machine on a memory store with a small budget under SESSION_MEMORY_POLICY=reject: creates and
growing updates that do not fit are refused, nothing live is ever evicted, and the byte count is exact."""

from __future__ import annotations

from hypothesis.stateful import run_state_machine_as_test

from tests.property import machine


def test_budget_state_machine() -> None:
    before = machine.REFUSALS[0]
    run_state_machine_as_test(machine.BudgetMachine)
    assert machine.REFUSALS[0] > before, "no create or update ever reached the budget"
