"""JSON-lines logging through the standard `logging` module (python-json-logger's formatter).

Nothing here writes a session id: the access log records the route template, never the raw path.
"""

from __future__ import annotations

import logging.config
from typing import Any

_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def logging_config(level: str = "info", audit_path: str | None = None) -> dict[str, Any]:
    """A dictConfig for our loggers and uvicorn's, every line one JSON object on stderr.

    With `audit_path`, the audit records (faultmaven.audit, one per cleanup or eviction run) also go to
    that JSON-lines file.
    """
    level = level.upper()
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "fmt": _FORMAT,
                "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            }
        },
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "loggers": {
            "faultmaven": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            # uvicorn's access log writes raw paths (session ids): it stays off; see faultmaven.access.
            "uvicorn.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
        },
    }
    if audit_path:
        config["handlers"]["audit_file"] = {"class": "logging.FileHandler", "formatter": "json", "filename": audit_path}
        config["loggers"]["faultmaven.audit"] = {
            "handlers": ["stderr", "audit_file"],
            "level": "INFO",
            "propagate": False,
        }
    return config


def configure_logging(level: str = "info", audit_path: str | None = None) -> None:
    logging.config.dictConfig(logging_config(level, audit_path))
