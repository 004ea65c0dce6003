"""The code shape gate (ci/code_shape.py) on small synthetic modules: where its limits lie, what exempts."""

from __future__ import annotations

from ci.code_shape import Violation, check_source


def _function(lines: int, name: str = "f", above: str = "") -> str:
    """A function spanning exactly `lines` lines, def line to last line, optionally a line above its def."""
    body = "".join(f"    x{i} = {i}\n" for i in range(lines - 2))
    return f'{above}def {name}() -> None:\n    """Doc."""\n{body}'


def _class(lines: int, name: str) -> str:
    return f"class {name}:\n" + "".join(f"    a{i} = {i}\n" for i in range(lines - 1))


def test_a_function_of_41_lines_fails_and_one_of_40_passes() -> None:
    assert check_source(_function(40), "m.py") == []
    assert check_source(_function(41), "m.py") == [Violation("m.py", 1, "f", 41)]
    assert str(check_source(_function(41), "m.py")[0]) == "m.py:1 f 41 lines"


def test_async_methods_and_nested_functions_are_named_by_their_place() -> None:
    inner = _function(41, "inner").replace("\n", "\n        ").rstrip(" ")
    source = f"class C:\n    async def outer(self) -> None:\n        {inner}        return None\n"
    found = check_source(source, "m.py")
    assert [(v.name, v.line) for v in found] == [("C.outer", 2), ("C.outer.inner", 3)]


def test_a_shape_comment_above_the_def_or_its_decorator_exempts_it() -> None:
    assert check_source(_function(60, above="# shape: split costs 8% of a cleanup batch (bench X)\n"), "m.py") == []
    decorated = "# shape: one pass over the lanes, 12% slower split\n@staticmethod\n" + _function(60)
    assert check_source(decorated, "m.py") == []
    between = "@staticmethod\n# shape: one pass over the lanes, 12% slower split\n" + _function(60)
    assert check_source(between, "m.py") == []


def test_no_exemption_without_a_reason_or_away_from_the_def() -> None:
    assert len(check_source(_function(41, above="# shape:\n"), "m.py")) == 1
    assert len(check_source(_function(41, above="# shape: hot loop\n\n"), "m.py")) == 1
    assert len(check_source(_function(41, above="# hot loop\n"), "m.py")) == 1


def test_classes_over_250_lines_fail_and_session_manager_from_200() -> None:
    assert check_source(_class(250, "Store"), "faultmaven/stores/x.py") == []
    assert check_source(_class(251, "Store"), "m.py") == [Violation("m.py", 1, "Store", 251)]
    manager = "faultmaven/session_management.py"
    assert check_source(_class(199, "SessionManager"), manager) == []
    assert check_source(_class(200, "SessionManager"), manager) == [Violation(manager, 1, "SessionManager", 200)]
    assert check_source(_class(200, "SessionManager"), "faultmaven/other.py") == []
    assert check_source("# shape: one structure\n" + _class(251, "Store"), "m.py") == []
    assert check_source("# shape: one structure\n" + _class(200, "SessionManager"), manager) != []
