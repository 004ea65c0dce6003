"""`python -m faultmaven` / `faultmaven`: validate the settings, then serve the app with uvicorn."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Mapping, Sequence

from faultmaven import __version__
from faultmaven.config.config import PREFIX, Settings
from faultmaven.exceptions import ConfigError
from faultmaven.observability.logging import configure_logging, logging_config


def _port(text: str) -> int:
    """A TCP port, 1 to 65535 (argparse reports anything else as a usage error, exit 2)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (1 to 65535)")
    return port


def _workers(text: str) -> int:
    try:
        workers = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if workers < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return workers


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="faultmaven",
        description="Serve the FaultMaven sessions API with uvicorn. Settings come from SESSION_* "
        "environment variables (or ./.env); see docs/configuration.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=_port, default=8000, help="TCP port to listen on")
    parser.add_argument(
        "--workers", type=_workers, default=1, help="worker processes (more than 1 needs a Redis SESSION_STORE_URL)"
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="the lowest level logged",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def unknown_variables(env: Mapping[str, str]) -> list[str]:
    """SESSION_* variables that name no setting (a misspelling is otherwise silently ignored)."""
    known = {PREFIX + name.upper() for name in Settings.model_fields}
    return sorted(name for name in env if name.startswith(PREFIX) and name not in known)


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
    for name in unknown_variables(os.environ):
        print(
            f"faultmaven: warning: {name} names no setting and is ignored (see docs/configuration.md)", file=sys.stderr
        )
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
