"""The unit tests run in a few seconds each (the slowest about 4 s here): a deadlock among them fails
after UNIT_TIMEOUT_S with its traceback, not after the suite-wide 300 s that the slow integration
tests need."""

from __future__ import annotations

from pathlib import Path

import pytest

UNIT_TIMEOUT_S = 60
_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(_HERE) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(UNIT_TIMEOUT_S))
