"""FaultMaven sessions: server-side session lifecycle with batched background cleanup."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

__version__ = "0.1.0"

# Import paths documented before the modules moved into their layer's folder: each still imports the
# module itself, so user code written against them keeps working.
MOVED = {
    "faultmaven.auth.tokens": "faultmaven.auth",
    "faultmaven.cleanup": "faultmaven.lifecycle.cleanup",
    "faultmaven.docs_assets": "faultmaven.web.docs_assets",
    "faultmaven.events": "faultmaven.lifecycle.events",
    "faultmaven.http_errors": "faultmaven.web.errors",
    "faultmaven.scheduler": "faultmaven.lifecycle.scheduler",
}


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        """Already executed under its own name."""


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        moved = MOVED.get(fullname)
        return None if moved is None else importlib.util.spec_from_loader(fullname, _Alias(moved))


if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
    sys.meta_path.append(_MovedFinder())
