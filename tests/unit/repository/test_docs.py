"""The documentation keeps up with the software: links resolve, and every route, setting, metric key and
Prometheus name the code has is named in its reference page under docs/.

A new route, setting or metric fails here until its page says what it is.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from faultmaven.config import Settings
from faultmaven.main import create_app
from faultmaven.observability import prometheus
from faultmaven.observability.loop_monitor import LoopMonitor
from faultmaven.session_management import SessionManager
from faultmaven.stores import MemoryStore

ROOT = Path(__file__).resolve().parents[3]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]

_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def _prose(text: str) -> str:
    """The text without code blocks and code spans, where brackets are code, not links."""
    return _CODE.sub("", _FENCE.sub("", text))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.replace("`", "").strip().lower()
    return re.sub(r"\s", "-", re.sub(r"[^\w\- ]", "", text))


def _anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for heading in _HEADING.findall(_FENCE.sub("", page.read_text(encoding="utf-8"))):
        slug = _slug(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def _relative_links(page: Path) -> list[str]:
    links = _LINK.findall(_prose(page.read_text(encoding="utf-8")))
    return [link for link in links if not re.match(r"[a-z][a-z0-9+.-]*:", link)]  # http:, https:, mailto:


def _text(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def test_the_pages_exist() -> None:
    names = {page.name for page in DOCS.glob("*.md")}
    wanted = {"http-api.md", "python-api.md", "configuration.md", "observability.md", "operations.md"}
    wanted |= {"design.md", "testing.md", "benchmarks.md"}
    assert wanted <= names, f"missing: {sorted(wanted - names)}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for link in _relative_links(page):
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{link}: no file {target.relative_to(ROOT) if ROOT in target.parents else target}")
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
            broken.append(f"{link}: no heading with the anchor #{anchor}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def test_no_path_leaves_the_repository() -> None:
    outside = []
    for page in PAGES:
        for link in _relative_links(page):
            target = (page.parent / link.partition("#")[0]).resolve()
            if target != ROOT and ROOT not in target.parents:
                outside.append(f"{page.name}: {link}")
    assert not outside


def test_every_route_is_documented() -> None:
    text = _text("http-api.md")
    missing = []
    for path, methods in create_app().openapi()["paths"].items():
        for method in methods:
            # "GET /api/v1/sessions" must not be satisfied by "GET /api/v1/sessions/metrics"
            pattern = rf"\b{method.upper()}\s+{re.escape(path)}(?![\w/{{}}-])"
            if not re.search(pattern, text):
                missing.append(f"{method.upper()} {path}")
    assert not missing, f"docs/http-api.md lacks: {missing}"


def test_every_setting_is_documented() -> None:
    text = _text("configuration.md")
    names = [f"SESSION_{field.upper()}" for field in Settings.model_fields]
    missing = [name for name in names if not re.search(rf"\b{name}\b", text)]
    assert not missing, f"docs/configuration.md lacks: {missing}"


async def test_every_metric_key_is_documented() -> None:
    manager = SessionManager(MemoryStore(), settings=Settings())
    keys = [*manager.get_session_metrics(), *LoopMonitor().snapshot()]
    text = _text("observability.md")
    missing = [key for key in keys if f"`{key}`" not in text]
    assert not missing, f"docs/observability.md lacks: {missing}"


def test_every_prometheus_name_is_documented() -> None:
    manager = SessionManager(MemoryStore(), settings=Settings())
    exposition = prometheus.render(prometheus.make_registry(lambda: manager, LoopMonitor())).decode()
    names = re.findall(r"^# TYPE (\S+) ", exposition, re.M)
    assert "faultmaven_sessions_active" in names  # the parse found the families
    text = _text("observability.md")
    missing = [name for name in names if not re.search(rf"`{name}(?:\{{|`)", text)]
    assert not missing, f"docs/observability.md lacks: {missing}"
