"""Every exception the package defines derives from FaultMavenError and keeps its standard base."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import faultmaven
from faultmaven.exceptions import ConfigError, FaultMavenError, SessionDataTooLargeError, SessionNotFoundError


def package_exceptions() -> list[type[BaseException]]:
    found = []
    for info in pkgutil.walk_packages(faultmaven.__path__, "faultmaven."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__.startswith("faultmaven."):
                found.append(value)
    return found


def test_every_exception_of_the_package_has_one_root() -> None:
    classes = package_exceptions()
    assert len(classes) >= 10
    assert [c.__qualname__ for c in classes if not issubclass(c, FaultMavenError)] == []


def test_the_standard_bases_are_kept() -> None:
    assert issubclass(ConfigError, ValueError) and issubclass(SessionDataTooLargeError, ValueError)
    assert issubclass(SessionNotFoundError, LookupError)
