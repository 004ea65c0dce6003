"""A pytest plugin for mutmut's runs: each mutant runs only the tests that execute the statement it changed.

mutmut chooses a mutant's tests by function: every test that called the mutated function at all. A
mutant that survives then runs all of them, and for the functions every request goes through that is
hundreds of tests, most of which never reach the changed line. Here (`-p tests.mutation_lines`):

- in mutmut's stats run (MUTANT_UNDER_TEST is "stats"), coverage.py records, per test, which lines of
  the mutated modules each test executes, into mutants/mutation-lines.json;
- in a mutant's run, the tests that never executed the statement the mutant changed are deselected. A
  statement no test executed leaves none (pytest's exit 5, which mutmut reports as "no tests").

Where the changed statement cannot be known, mutmut's own choice stands: a change in the function's
signature or decorators (evaluated when the function is defined, and used by every call), or a change
that no statement of the original function contains. Leaving tests out can only make a mutant survive
that the function's tests would have killed, never the other way round: the selection can lower the
score, not raise it.
"""

from __future__ import annotations

import ast
import difflib
import json
import os
import sys
import textwrap
from collections import defaultdict
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

LINES_FILE = Path("mutation-lines.json")  # in mutants/, where mutmut runs the tests
_COVERAGE = pytest.StashKey[Any]()
_TRACED = pytest.StashKey[list[tuple[str, str, int]]]()


def _mutant() -> str:
    return os.environ.get("MUTANT_UNDER_TEST", "")


def pytest_configure(config: pytest.Config) -> None:
    if _mutant() != "stats":
        return
    import coverage

    cov = coverage.Coverage(data_file=None, include=[str(Path.cwd() / "faultmaven" / "*")], config_file=False)
    cov.start()
    config.stash[_COVERAGE] = cov
    config.stash[_TRACED] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    """Setup, call and teardown of one test count as that test's lines, with those run while a test's own
    tracer (tests.support.StoreLines) displaced coverage.py's."""
    cov = item.config.stash.get(_COVERAGE, None)
    if cov is None:
        return (yield)
    cov.switch_context(item.nodeid)
    store_lines = getattr(sys.modules.get("tests.support"), "StoreLines", None)  # imported by test modules
    if store_lines is not None:
        store_lines.seen = set()
    try:
        return (yield)
    finally:
        if store_lines is not None:
            item.config.stash[_TRACED].extend((item.nodeid, *seen) for seen in store_lines.seen)
            store_lines.seen = None


def pytest_unconfigure(config: pytest.Config) -> None:
    cov = config.stash.get(_COVERAGE, None)
    if cov is None:
        return
    cov.stop()
    data = cov.get_data()
    by_file: dict[str, dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
    for path in data.measured_files():
        for line, contexts in data.contexts_by_lineno(path).items():
            by_file[path][line].update(c for c in contexts if c)
    for test, path, line in config.stash[_TRACED]:
        by_file[path][line].add(test)
    tests: dict[str, int] = {}
    files = {
        str(Path(path).relative_to(Path.cwd())): {
            line: sorted(tests.setdefault(t, len(tests)) for t in contexts) for line, contexts in lines.items()
        }
        for path, lines in by_file.items()
        if Path(path).is_relative_to(Path.cwd())
    }
    LINES_FILE.write_text(json.dumps({"tests": list(tests), "files": files}), encoding="utf-8")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    name = _mutant()
    if "__mutmut_" not in name or not LINES_FILE.is_file():
        return
    covering = tests_running_the_change(name, json.loads(LINES_FILE.read_text(encoding="utf-8")))
    if covering is None:
        return
    kept = [item for item in items if item.nodeid in covering]
    dropped = [item for item in items if item.nodeid not in covering]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def tests_running_the_change(mutant: str, lines: dict[str, Any]) -> set[str] | None:
    """The node ids of the tests that executed the statement `mutant` changes, or None (not known)."""
    module, _, function = mutant.rpartition(".x")
    function = "x" + function
    source = Path(*module.split(".")).with_suffix(".py")
    if not source.is_file():
        source = Path(*module.split("."), "__init__.py")
    changed = changed_lines(source, function)
    if changed is None:
        return None
    by_line = lines["files"].get(str(source), {})
    indices = {i for line in changed for i in by_line.get(str(line), ())}
    return {lines["tests"][i] for i in indices}


def changed_lines(source: Path, mutant_function: str) -> list[int] | None:
    """The lines of the original function (numbered as in the mutated file) of the statement the mutant
    changes, or None where mutmut's function-wide choice should stand."""
    spans = json.loads(source.with_name(source.name + ".spans").read_text(encoding="utf-8"))["spans"]
    original_name = mutant_function.rpartition("__mutmut_")[0] + "__mutmut_orig"
    if mutant_function not in spans or original_name not in spans:
        return None
    text = source.read_text(encoding="utf-8").splitlines()
    (o_start, o_end), (m_start, m_end) = spans[original_name], spans[mutant_function]
    original = text[o_start - 1 : o_end]
    mutated = [line.replace(mutant_function, original_name) for line in text[m_start - 1 : m_end]]
    touched: set[int] = set()
    for tag, i1, i2, _, _ in difflib.SequenceMatcher(a=original, b=mutated, autojunk=False).get_opcodes():
        if tag != "equal":
            touched.update(range(i1, max(i2, i1 + 1)))
    if not touched:
        return None
    statements = _statement_lines(original)
    if statements is None:
        return None
    found: set[int] = set()
    for offset in touched:
        lines = statements.get(offset)
        if lines is None:  # the signature, a decorator, or no statement at all
            return None
        found.update(lines)
    return sorted(o_start + offset for offset in found)


def _statement_lines(function: list[str]) -> dict[int, range] | None:
    """For each line offset of a function's body, the offsets of the innermost statement containing it
    (of a compound statement, its header only: the lines before its body)."""
    try:
        tree = ast.parse(textwrap.dedent("\n".join(function)))
    except SyntaxError:
        return None
    top = tree.body[0]
    if not isinstance(top, ast.FunctionDef | ast.AsyncFunctionDef):
        return None
    result: dict[int, range] = {}

    def visit(statements: list[ast.stmt]) -> None:
        for statement in statements:
            first = min([statement.lineno, *(d.lineno for d in getattr(statement, "decorator_list", ()))])
            bodies = [b for b in _bodies(statement) if b]
            header_end = min(b[0].lineno for b in bodies) - 1 if bodies else statement.end_lineno or first
            for line in range(first, header_end + 1):
                result[line - 1] = range(first - 1, header_end)
            for handler in getattr(statement, "handlers", ()):  # `except ...:` runs when matching
                for line in range(handler.lineno, handler.body[0].lineno):
                    result[line - 1] = range(handler.lineno - 1, handler.body[0].lineno - 1)
            for body in bodies:
                visit(body)

    visit(top.body)
    return result


def _bodies(statement: ast.stmt) -> list[list[ast.stmt]]:
    if isinstance(statement, ast.Try | ast.TryStar):
        handlers = [h.body for h in statement.handlers]
        return [statement.body, *handlers, statement.orelse, statement.finalbody]
    if isinstance(statement, ast.Match):
        return [case.body for case in statement.cases]
    return [getattr(statement, field, []) for field in ("body", "orelse")]
