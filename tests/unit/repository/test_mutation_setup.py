"""The mutation run's setup ([tool.mutmut] in pyproject.toml, tests/mutation_plugin.py): the tests it
leaves out still exist under those names (a renamed slow test would silently come back into every
mutant's run), a looping test is stopped by its CPU budget, and a module collects only the tests named."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from faultmaven.stores import MemoryStore
from faultmaven.stores.memory import store as memory
from tests.support import StoreLines

ROOT = Path(__file__).resolve().parents[3]


def mutmut_args() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["mutmut"]
    return list(config["pytest_add_cli_args"])


def test_every_test_left_out_of_the_mutation_run_exists() -> None:
    left_out = [a.split("=", 1)[1] for a in mutmut_args() if a.startswith(("--deselect=", "--ignore="))]
    assert left_out
    for node_id in left_out:
        path, _, name = node_id.partition("::")
        assert (ROOT / path).is_file(), f"{path} (in [tool.mutmut] pytest_add_cli_args) does not exist"
        if name:
            tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
            defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
            assert name.split("[", 1)[0] in defined, f"{node_id} (in [tool.mutmut] pytest_add_cli_args) names no test"
    cases = [node_id for node_id in left_out if "[" in node_id]  # parametrized: each must be one pytest collects
    listed = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:randomly", *cases],
        cwd=ROOT,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    collected = set(listed.stdout.splitlines())
    for node_id in cases:
        assert node_id in collected, f"{node_id} (in [tool.mutmut] pytest_add_cli_args) names no case"


def run_pytest(tmp_path: Path, *args: str, cpu_s: str = "15", mutant: str = "") -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PYTHONPATH": str(ROOT), "MUTATION_TEST_CPU_S": cpu_s, "MUTANT_UNDER_TEST": mutant}
    command = [sys.executable, "-m", "pytest", "-p", "tests.mutation_plugin", "-p", "no:randomly"]
    command += ["-p", "no:cacheprovider", "-q", "--rootdir", str(tmp_path), *args]
    for unused in ("locust", "schemathesis", "memray", "benchmark", "anyio", "hypothesispytest"):
        command += ["-p", f"no:{unused}"]  # slow to import, and of no use here
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_a_test_over_its_cpu_budget_fails_and_waiting_is_not_cpu(tmp_path: Path) -> None:
    (tmp_path / "test_spin.py").write_text(
        "import time\n"
        "def test_spins():\n    while True:\n        pass\n"
        "async def test_spins_in_the_event_loop():\n    while True:\n        pass\n"
        "def test_waits():\n    time.sleep(1.5)\n"
    )
    result = run_pytest(tmp_path, "test_spin.py", "-o", "asyncio_mode=auto", cpu_s="1")
    assert "2 failed, 1 passed" in result.stdout, result.stdout + result.stderr
    assert result.stdout.count("more than 1 s of CPU") >= 2, result.stdout


def test_a_module_collects_only_the_tests_its_node_ids_name(tmp_path: Path) -> None:
    (tmp_path / "test_some.py").write_text(
        "import pytest\n"
        "def test_asked():\n    pass\n"
        "@pytest.mark.parametrize('x', [1, 2])\ndef test_asked_too(x):\n    pass\n"
        "def test_not_asked():\n    raise AssertionError('collected and run')\n"
        "class TestGroup:\n    def test_in_class(self):\n        pass\n"
    )
    (tmp_path / "conftest.py").write_text(  # the names that pytest made items (or a class) of
        "import pytest\n"
        "made = set()\n"
        "@pytest.hookimpl(wrapper=True)\n"
        "def pytest_pycollect_makeitem(collector, name, obj):\n"
        "    result = yield\n"
        "    if result:\n        made.add(name)\n"
        "    return result\n"
        "def pytest_collection_finish(session):\n    print('MADE', sorted(made))\n"
    )
    ids = ["test_some.py::test_asked", "test_some.py::test_asked_too[2]", "test_some.py::TestGroup::test_in_class"]
    result = run_pytest(tmp_path, *ids, "-s")
    assert "MADE ['TestGroup', 'test_asked', 'test_asked_too', 'test_in_class']" in result.stdout, (
        result.stdout + result.stderr
    )
    assert "3 passed" in result.stdout
    whole = run_pytest(tmp_path, "test_some.py", "-s")  # a whole file: every test, as without the plugin
    assert "'test_not_asked'" in whole.stdout and "1 failed, 4 passed" in whole.stdout, whole.stdout


ORIGINAL = """\
def x_f__mutmut_{name}(a, b=1):
    total = a + b
    if a > 2:
        total = (a
                 * b)
    try:
        total += 1
    except ValueError:
        pass
    return total
"""
# mutmut's layout: the original and each mutant, ten lines each, one change in each mutant
CHANGES = {"orig": ("", ""), "1": ("b=1", "b=2"), "2": ("* b", "/ b"), "3": ("a > 2", "a >= 2"), "4": ("Value", "Type")}
MODULE = "".join(ORIGINAL.format(name=name).replace(old, new) for name, (old, new) in CHANGES.items())


def test_a_mutant_runs_only_the_tests_that_executed_the_statement_it_changes(tmp_path: Path) -> None:
    (tmp_path / "faultmaven").mkdir()
    (tmp_path / "faultmaven" / "__init__.py").write_text("")
    (tmp_path / "faultmaven" / "mod.py").write_text(MODULE)
    spans = {f"x_f__mutmut_{n}": [1 + 10 * i, 10 + 10 * i] for i, n in enumerate(["orig", "1", "2", "3", "4"])}
    (tmp_path / "faultmaven" / "mod.py.spans").write_text(json.dumps({"version": 1, "spans": spans}))
    (tmp_path / "test_mod.py").write_text(
        "from faultmaven.mod import x_f__mutmut_orig as f\n"
        "def test_small():\n    assert f(1) == 3\n"
        "def test_large():\n    assert f(3, 2) == 7\n"
        "def test_never_calls():\n    pass\n"
    )
    plugin = ["-p", "tests.mutation_lines", "-p", "no:mutation_plugin", "-s"]
    stats = run_pytest(tmp_path, "test_mod.py", *plugin, mutant="stats")
    assert "3 passed" in stats.stdout, stats.stdout + stats.stderr
    ran = {}
    for number in range(1, 5):
        result = run_pytest(tmp_path, "test_mod.py", *plugin, "-rA", mutant=f"faultmaven.mod.x_f__mutmut_{number}")
        ran[number] = sorted(line.split("::")[1] for line in result.stdout.splitlines() if line.startswith("PASSED"))
    # the default in the signature: every test, as mutmut chose; `* b` on the if's second line: the tests
    # that ran that statement; the if's condition: the tests that ran it; an except clause: reached by none
    # of these tests' exceptions, so the tests that ran the try statement's handler header (none)
    assert ran == {
        1: ["test_large", "test_never_calls", "test_small"],
        2: ["test_large"],
        3: ["test_large", "test_small"],
        4: [],
    }, ran


def test_store_lines_puts_back_the_tracer_it_displaced_and_hands_over_the_lines_it_saw() -> None:
    def outer(frame: object, event: str, arg: object) -> None:
        return None

    before = sys.gettrace()
    sys.settrace(outer)
    try:
        StoreLines.seen = set()
        with StoreLines() as lines:
            MemoryStore().stats(0.0)
        seen, StoreLines.seen = StoreLines.seen, None
        assert sys.gettrace() is outer
    finally:
        sys.settrace(before)
    assert lines.count > 0
    assert {path for path, _ in seen} >= {memory.__file__}
