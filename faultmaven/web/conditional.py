"""Conditional requests on a session's data version: the ETag a route sends and the If-Match a PATCH names.

The entity tag is the data version in quotes, `"3"`. It validates the session's data, not the bytes of an
answer (those change with every read's last_activity), so a weak tag `W/"3"` names the same version: a
proxy that compresses answers may have weakened it on the way to the client.
"""

from __future__ import annotations

import re

from faultmaven.exceptions import FaultMavenError

# One element of an If-Match list (RFC 9110 8.8.3, 5.6.1): an entity tag, then a comma or the end.
_ITEM = re.compile(r'[ \t,]*(W/)?"([\x21\x23-\x7e\x80-\xff]*)"[ \t]*(?:,|$)')
_REST = re.compile(r"[ \t,]*\Z")  # nothing but separators left
_VERSION = re.compile(r"[1-9][0-9]{0,17}")
NO_VERSION = 0  # what an entity tag that names no version stands for: it never matches


class BadIfMatch(FaultMavenError, ValueError):
    """An If-Match header that is neither `*` nor one entity tag."""


def etag(version: int) -> str:
    """The ETag of a session whose data is at `version`."""
    return f'"{version}"'


def if_match_version(values: list[str]) -> int | None:
    """The version an If-Match header (every line of it) requires, None for none or `*` (any version).

    A well-formed tag that is no version, e.g. `"abc"`, requires NO_VERSION, which never matches. Several
    tags naming different versions are refused (BadIfMatch): a write expects one version of the data.
    """
    if not values:
        return None
    text = ",".join(values).strip()
    if text == "*":
        return None
    found: set[int] = set()
    pos = 0
    while not _REST.match(text, pos):
        match = _ITEM.match(text, pos)
        if match is None:
            raise BadIfMatch('If-Match must be * or an entity tag such as "3"')
        opaque = match.group(2)
        found.add(int(opaque) if _VERSION.fullmatch(opaque) else NO_VERSION)
        pos = match.end()
    if len(found) != 1:
        raise BadIfMatch("If-Match must name one version of the session's data")
    return found.pop()
