"""docs/http-api.md and the OpenAPI schema cannot drift: every route the schema has is a section of the
page, and every status the schema declares for a route is named in its section or in the page's table
of statuses any route may answer."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from faultmaven.config import Settings
from faultmaven.main import create_app
from faultmaven.session_management import SessionManager
from faultmaven.stores import MemoryStore

PAGE = Path(__file__).resolve().parents[3] / "docs" / "http-api.md"
HEADING = re.compile(r"^### `([A-Z]+) ([^`?]+)[^`]*`", re.MULTILINE)
FASTAPI_ADDS = {"422"}  # FastAPI's own 422 for any route with parameters: on the page as request validation


def schema() -> dict[str, Any]:
    app = create_app(manager=SessionManager(MemoryStore(), settings=Settings(cleanup_enabled=False)))
    return app.openapi()


def sections() -> dict[tuple[str, str], str]:
    text = PAGE.read_text()
    found = list(HEADING.finditer(text))
    ends = [m.start() for m in found[1:]] + [len(text)]
    return {(m.group(1), m.group(2)): text[m.start() : end] for m, end in zip(found, ends, strict=True)}


def common_statuses() -> set[str]:
    text = PAGE.read_text()
    table = text[text.index("Statuses any route may answer:") : text.index("## Routes")]
    return set(re.findall(r"^\| (\d{3}) \|", table, re.MULTILINE))


def test_every_route_has_a_section() -> None:
    documented = set(sections())
    routes = {(method.upper(), path) for path, ops in schema()["paths"].items() for method in ops}
    assert routes - documented == set()


def test_every_declared_status_is_documented_for_its_route() -> None:
    page, common, missing = sections(), common_statuses(), []
    for path, ops in schema()["paths"].items():
        for method, op in ops.items():
            section = page[(method.upper(), path)]
            for code in set(op["responses"]) - FASTAPI_ADDS - common:
                if not re.search(rf"\b{code}\b", section):
                    missing.append(f"{method.upper()} {path}: {code}")
    assert missing == []


def test_errors_are_problem_details_and_patch_declares_if_match() -> None:
    paths = schema()["paths"]
    patch = paths["/api/v1/sessions/{session_id}"]["patch"]
    assert [p["name"] for p in patch["parameters"] if p["in"] == "header"] == ["If-Match"]
    assert "application/problem+json" in patch["responses"]["412"]["content"]
