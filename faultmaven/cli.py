"""`python -m faultmaven` / `faultmaven`: validate the settings, then serve the app with uvicorn."""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Sequence

from faultmaven.config.config import Settings
from faultmaven.exceptions import ConfigError
from faultmaven.observability.logging import configure_logging, logging_config


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="faultmaven", description="Serve the FaultMaven sessions API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return parser


def is_loopback(host: str) -> bool:
    """Whether `host` is reached only from this machine (localhost, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"faultmaven: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.workers < 1:
        print("faultmaven: --workers must be at least 1", file=sys.stderr)
        return 2
    if args.workers > 1 and settings.store_url.startswith("memory:"):
        print(
            "faultmaven: the in-memory store serves one process; with --workers > 1 each worker would "
            "hold its own sessions. Use one worker or SESSION_STORE_URL=redis://...",
            file=sys.stderr,
        )
        return 2
    if settings.identity_source is None and not settings.allow_unauthenticated and not is_loopback(args.host):
        print(
            f"faultmaven: no identity source, so any caller may name any user: refusing to listen on {args.host}. "
            "Set SESSION_USER_HEADER or a JWT key, serve on 127.0.0.1, or set SESSION_ALLOW_UNAUTHENTICATED=true",
            file=sys.stderr,
        )
        return 2
    import uvicorn

    configure_logging(args.log_level, settings.audit_log_path)
    uvicorn.run(
        "faultmaven.main:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        log_config=logging_config(args.log_level, settings.audit_log_path),
        access_log=False,
    )
    return 0
