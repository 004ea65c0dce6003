"""Errors the session service raises; each says what failed without naming a session id.

Every one derives from FaultMavenError (one `except` for the package's own errors) and keeps the
standard base it always had (`except ValueError` and `except LookupError` still work).
"""


class FaultMavenError(Exception):
    """The root of every exception this package raises on purpose."""


class SessionStoreException(FaultMavenError):
    """The session store could not do what was asked (unreachable, corrupt, refused)."""


class SessionCleanupException(SessionStoreException):
    """A cleanup run as a whole could not proceed; per-session failures are counted instead."""


class SessionNotFoundError(FaultMavenError, LookupError):
    """No live session has this id (unknown, malformed, deleted or expired)."""


class SessionDataTooLargeError(FaultMavenError, ValueError):
    """Session data is over SESSION_MAX_DATA_BYTES once encoded as compact UTF-8 JSON."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"session data is {size} bytes, over the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class SessionOverMemoryBudgetError(SessionDataTooLargeError):
    """One session alone would take the store over SESSION_MAX_MEMORY_MB; nothing is evicted for it."""

    def __init__(self, size: int, limit: int) -> None:
        ValueError.__init__(self, f"a session of {size} bytes would not fit the store memory budget of {limit} bytes")
        self.size = size
        self.limit = limit


class SessionVersionConflict(FaultMavenError):
    """A conditional write named a version of the session's data that is not the current one; nothing changed.

    `current_version` is the version the write would have had to name (HTTP: 412 with it as the ETag).
    """

    def __init__(self, current_version: int) -> None:
        super().__init__(f"the session's data is at version {current_version}, not the one the write expected")
        self.current_version = current_version


class ConfigError(FaultMavenError, ValueError):
    """A configuration value is invalid; the message is one line naming the variable and value."""


class SessionStoreFullError(SessionStoreException):
    """A new session (or a session's growth) does not fit the store now; existing sessions keep working.

    Raised under SESSION_MEMORY_POLICY=reject instead of evicting someone else's live session; over HTTP a
    503 with `Retry-After`, since the room comes back as sessions expire, are deleted or are cleaned up.
    """

    def __init__(self, reason: str, retry_after_s: int = 30) -> None:
        super().__init__(f"session store full: {reason}")
        self.reason = reason
        self.retry_after_s = retry_after_s
