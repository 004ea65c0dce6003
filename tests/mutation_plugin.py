"""A pytest plugin for mutmut's runs (`-p tests.mutation_plugin` in [tool.mutmut] pytest_add_cli_args).

Two things make a mutation run slow on a shared machine without telling anything about the code:

- mutmut starts pytest once per mutant with the node ids of the tests that reach the mutated function,
  and pytest builds an item for every test of each module named (parametrized cases, fixture closures,
  asyncio wrappers) before keeping the few asked for. Here a module collects only the functions and
  classes its node ids name. Paths without `::` (a file or a folder, as in mutmut's stats run) collect
  as usual.
- A mutant that makes a loop run forever is stopped by mutmut's wall-clock timeout, which is set from
  the tests' times and so misfires when other work slows the machine down (a survivor counted as a
  timeout, that is as killed). Here each test phase gets a budget of CPU time instead
  (MUTATION_TEST_CPU_S, 15 s: several times the slowest test mutmut runs), which other processes
  cannot use up: a test over it fails, and the mutant counts as killed.
"""

from __future__ import annotations

import os
import signal
from collections import defaultdict
from collections.abc import Generator
from types import FrameType
from typing import Any

import pytest

CPU_BUDGET_S = float(os.environ.get("MUTATION_TEST_CPU_S", "15"))
_WANTED = pytest.StashKey[dict[str, set[str]]]()


class CpuBudgetExceeded(BaseException):
    """Not an Exception, so that no test code or hypothesis catches it and carries on."""


def pytest_configure(config: pytest.Config) -> None:
    """Per module path (as node ids spell it), the top-level names asked for; a path also given
    without `::` asks for all of it."""
    wanted: dict[str, set[str]] = defaultdict(set)
    whole: set[str] = set()
    for arg in config.args:
        path, sep, rest = str(arg).partition("::")
        if sep:
            wanted[path].add(rest.split("::", 1)[0].split("[", 1)[0])
        else:
            whole.add(path)
    config.stash[_WANTED] = {path: names for path, names in wanted.items() if path not in whole}


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: Any) -> list[Any] | None:
    """No items for a test function or class of a module whose node ids do not name it."""
    if not isinstance(collector, pytest.Module):
        return None
    names = collector.config.stash.get(_WANTED, {}).get(collector.nodeid)
    if names is None or name in names:
        return None
    return []


def _over_budget(signum: int, frame: FrameType | None) -> None:
    raise CpuBudgetExceeded(f"the test used more than {CPU_BUDGET_S:g} s of CPU")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _within_budget())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _within_budget())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _within_budget())


def _within_budget() -> Generator[None, object, object]:
    """ITIMER_PROF counts the process's CPU time (every thread, user and system), not wall time."""
    previous = signal.signal(signal.SIGPROF, _over_budget)
    signal.setitimer(signal.ITIMER_PROF, CPU_BUDGET_S)
    try:
        return (yield)
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)
