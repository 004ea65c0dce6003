"""The rule of a slow test, on a smaller scale: the same assertions through the public API, in a fraction
of the time. The mutation run (`tox -e mutation`) runs it in place of the slow one, since a mutant that
survives runs every test reaching its statement; the default suite runs both: removals that fail are
counted, run after run, and a later run removes them (tests/integration/test_faults.py, 3,000 sessions in
a store failing at random). The other slow tests of the memory store take a scale parameter instead, and
the mutation run leaves their large case out."""

from __future__ import annotations

from faultmaven.config import Settings
from faultmaven.session_management import SessionManager
from tests.support import FakeClock, PoisonStore


async def test_failed_removals_add_up_run_after_run_and_a_later_run_removes_them(clock: FakeClock) -> None:
    store = PoisonStore()
    manager = SessionManager(store, settings=Settings(cleanup_batch_size=5, cleanup_enabled=False), clock=clock)
    ids = [(await manager.create_session()).session_id for _ in range(12)]
    store.poison = {ids[1], ids[7]}
    clock.advance(minutes=31)
    assert await manager.cleanup_inactive_sessions() == 10  # the run completes past its failures
    assert manager.get_session_metrics()["cleanup_errors_total"] == 2
    assert await manager.cleanup_inactive_sessions() == 0
    assert manager.get_session_metrics()["cleanup_errors_total"] == 4  # a total: each run adds its own
    store.poison = set()
    assert await manager.cleanup_inactive_sessions() == 2
    metrics = manager.get_session_metrics()
    assert metrics["cleanup_errors_total"] == 4 and metrics["active_sessions"] == 0
