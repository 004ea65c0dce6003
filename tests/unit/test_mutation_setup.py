"""The mutation run's setup ([tool.mutmut] in pyproject.toml, tests/mutation_plugin.py): the tests it
leaves out still exist under those names (a renamed slow test would silently come back into every
mutant's run), a looping test is stopped by its CPU budget, and a module collects only the tests named."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


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
            assert name in defined, f"{node_id} (in [tool.mutmut] pytest_add_cli_args) names no test"


def run_pytest(tmp_path: Path, *args: str, cpu_s: str = "15") -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PYTHONPATH": str(ROOT), "MUTATION_TEST_CPU_S": cpu_s}
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
