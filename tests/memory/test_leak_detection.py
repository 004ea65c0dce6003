"""Each leak test is shown to fail against a deliberately leaking variant (tests/memory/leak_variants.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pytest_memray", reason="leak detection needs pytest-memray (tox -e memory installs it)")

VARIANTS = Path(__file__).with_name("leak_variants.py")


def test_every_leaking_variant_is_caught() -> None:
    env = os.environ | {"PYTHONMALLOC": "malloc"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--memray", str(VARIANTS), "-q", "-rf", "-p", "no:cacheprovider"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=Path(__file__).parents[2],
    )
    out = result.stdout
    reported = [line for line in out.splitlines() if line.startswith(("MEMORY PROBLEMS ", "FAILED "))]
    for name in ("test_leaky_cycles", "test_leaky_scheduler", "test_leaky_http_path"):
        assert any(f"leak_variants.py::{name} " in line for line in reported), out[-3000:]
    assert "allowed to leak" in out
    assert "3 failed" in out
