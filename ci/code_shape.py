"""The code shape gate: short functions and classes in faultmaven/, read from the syntax tree.

    python ci/code_shape.py [PATH ...]        (default: faultmaven)

A function may span at most 40 lines (def line to last line, docstring included), a class at most 250,
and SessionManager (faultmaven/session_management.py) less than 200: small units read and review better.
A function is exempt only with a comment `# shape: <reason with the measured cost>` on the line directly
above its def (or above its first decorator), for a hot loop whose split measurably costs speed; a class
with a `# shape: <reason>` comment ending on the line above it, for one data structure whose methods all
keep the same invariants over the same private state (cut in two, one half reaches into the other's).
SessionManager is never exempt.
Prints one line per violation, `path:line name N lines`, and exits 1 if there is any.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MAX_FUNCTION_LINES = 40
MAX_CLASS_LINES = 250
MANAGER = ("faultmaven/session_management.py", "SessionManager")
MANAGER_LINES_BELOW = 200
EXEMPTION = re.compile(r"^\s*#\s*shape:\s*\S")

Definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    name: str
    lines: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line} {self.name} {self.lines} lines"


def _definitions(node: ast.AST, prefix: str = "") -> Iterator[tuple[str, Definition]]:
    """Every function and class with its dotted name (Outer.inner), nested ones included."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, Definition):
            name = f"{prefix}{child.name}"
            yield name, child
            yield from _definitions(child, f"{name}.")
        else:
            yield from _definitions(child, prefix)


def _exempt(node: Definition, lines: list[str]) -> bool:
    """A `# shape: <reason>` comment directly above the def, or above its first decorator."""
    above = {node.lineno - 1, min((d.lineno for d in node.decorator_list), default=node.lineno) - 1}
    return any(0 < n <= len(lines) and EXEMPTION.match(lines[n - 1]) for n in above)


def _limit(path: str, name: str, node: Definition) -> int:
    """The most lines this definition may span."""
    if not isinstance(node, ast.ClassDef):
        return MAX_FUNCTION_LINES
    if (path, name) == MANAGER:
        return MANAGER_LINES_BELOW - 1
    return MAX_CLASS_LINES


def check_source(source: str, path: str) -> list[Violation]:
    """The violations in one module's source; `path` names it in the report (and picks out SessionManager)."""
    lines = source.splitlines()
    found = []
    for name, node in _definitions(ast.parse(source, filename=path)):
        span = (node.end_lineno or node.lineno) - node.lineno + 1
        if span <= _limit(path, name, node):
            continue
        if (path, name) == MANAGER or not _exempt(node, lines):  # the manager stays small, always
            found.append(Violation(path, node.lineno, name, span))
    return found


def check_paths(paths: list[Path]) -> list[Violation]:
    """The violations in every .py file under `paths`, in path order."""
    files = sorted({f for p in paths for f in ([p] if p.is_file() else p.rglob("*.py"))})
    return [v for f in files for v in check_source(f.read_text(encoding="utf-8"), f.as_posix())]


def main(argv: list[str]) -> int:
    violations = check_paths([Path(a) for a in argv] or [Path("faultmaven")])
    for violation in violations:
        print(violation)
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
