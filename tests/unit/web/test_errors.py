"""The HTTP edge's shape: every error status is decided in one table (web/errors.py), which the rest of
web/ and auth/ only raise into; and a constructor there of more than four parameters takes them by keyword."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from http import HTTPStatus
from pathlib import Path

import pytest

import faultmaven
import faultmaven.auth
import faultmaven.web
from faultmaven.web import errors

PACKAGE = Path(faultmaven.__file__).parent
TABLE = PACKAGE / "web" / "errors.py"
EDGE = sorted([*(PACKAGE / "web").glob("*.py"), *(PACKAGE / "auth").glob("*.py")])
_STATUS_NAME = re.compile(r"HTTP_[45]\d\d_\w+")  # fastapi.status / starlette.status error constants


def _name(node: ast.expr) -> str | None:
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None


def _error_status(node: ast.AST) -> str | None:
    """What `node` is, if it names an error status or makes an HTTPException; else None."""
    if isinstance(node, ast.Constant) and type(node.value) is int and 400 <= node.value < 600:
        return str(node.value)
    if isinstance(node, ast.Name | ast.Attribute) and _STATUS_NAME.fullmatch(_name(node) or ""):
        return _name(node)
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "HTTPStatus":
        member = HTTPStatus.__members__.get(node.attr)
        return f"HTTPStatus.{node.attr}" if member is not None and member >= 400 else None
    if isinstance(node, ast.Call) and (_name(node.func) or "").endswith("HTTPException"):
        return f"{_name(node.func)}(...)"
    return None


def decisions(source: str) -> list[str]:
    """Where the code decides an error status ("line: what"): a number 400-599, a status constant or
    HTTPStatus member of one, or an HTTPException made on the spot."""
    found = ((node, _error_status(node)) for node in ast.walk(ast.parse(source)))
    return sorted(f"{getattr(node, 'lineno', 0)}: {what}" for node, what in found if what is not None)


def test_no_module_of_web_or_auth_but_the_table_decides_an_error_status() -> None:
    elsewhere = {path.relative_to(PACKAGE).as_posix(): decisions(path.read_text()) for path in EDGE if path != TABLE}
    assert {"web/routes.py", "web/body_limit.py", "auth/verifier.py", "auth/keys.py"} <= elsewhere.keys()
    assert {module: found for module, found in elsewhere.items() if found} == {}


@pytest.mark.parametrize(
    "source",
    [
        'raise HTTPException(status.HTTP_400_BAD_REQUEST, detail="bad")',
        "raise HTTPException(code)",
        'raise StarletteHTTPException(code, "x")',
        "return JSONResponse(body, 404, headers)",
        "return JSONResponse(body, status_code=503)",
        'return problem(HTTPStatus.TOO_MANY_REQUESTS, "slow down")',
        "status = 413 if length.isdigit() else 400",
        "code = HTTP_401_UNAUTHORIZED",
    ],
)
def test_the_check_sees_a_decision_put_back(source: str) -> None:
    assert decisions(source) != []


def test_the_check_leaves_success_answers_and_the_table_itself_alone() -> None:
    success = "Response(status_code=status.HTTP_204_NO_CONTENT)\nJSONResponse({}, 201)\nHTTPStatus.OK\nx = 4096"
    assert decisions(success) == []
    assert len(decisions(TABLE.read_text())) >= 10  # the statuses are there, where they belong


def test_every_refusal_the_routes_raise_has_its_own_row() -> None:
    def subclasses(cls: type[Exception]) -> list[type[Exception]]:
        return [cls, *(sub for direct in cls.__subclasses__() for sub in subclasses(direct))]

    refusals = [cls for cls in subclasses(errors.Refused) if cls is not errors.Refused]
    assert len(refusals) >= 8
    assert [cls.__name__ for cls in refusals if cls not in errors.ANSWERS] == []
    assert set(refusals) <= set(errors.ROUTE_ERRORS)


def _edge_classes() -> list[type]:
    classes = []
    for package in (faultmaven.web, faultmaven.auth):
        for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
            module = importlib.import_module(info.name)
            classes += [c for _, c in inspect.getmembers(module, inspect.isclass) if c.__module__ == info.name]
    return classes


def _parameters(cls: type) -> list[inspect.Parameter]:
    """The constructor's named parameters; none for a class that keeps a builtin's (*args) constructor."""
    try:
        signature = inspect.signature(cls)
    except ValueError:  # e.g. an exception class that adds no __init__ to ValueError's
        return []
    return [p for p in signature.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def test_constructors_of_more_than_four_parameters_are_keyword_only_past_the_star() -> None:
    many = {cls: _parameters(cls) for cls in _edge_classes() if len(_parameters(cls)) > 4}
    assert {"TokenPolicy", "Answer"} <= {cls.__name__ for cls in many}  # the check reaches the dataclasses
    positional = [cls.__qualname__ for cls, params in many.items() if all(p.kind is not p.KEYWORD_ONLY for p in params)]
    assert positional == []
