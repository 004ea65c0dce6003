"""Who a session belongs to, beside the expiry index: each user's sessions and the resume pairs.

Only sessions with a user (or a client id) have entries here, so sessions without one, and the cleanup's
hot loop over them, carry none of it. Entries are tuples and strings in dicts: nothing the cyclic garbage
collector tracks per session.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import compress, repeat
from operator import is_not, itemgetter
from typing import TypeAlias

from faultmaven.stores.memory.layout import CLIENT, STATIC, USER, Node, Static, require
from faultmaven.stores.sizing import pair_key

UserLinks: TypeAlias = tuple[str | None, str | None]  # (user prev, user next) of one session


class _UserList:
    """One user's sessions in activity order (most recent last)."""

    __slots__ = ("first", "last")

    def __init__(self, sid: str) -> None:
        self.first: str | None = sid
        self.last: str | None = sid


class UserLists:
    """Each user's sessions in activity order, linked through one dict of (prev, next) per session."""

    def __init__(self) -> None:
        self._lists: dict[str, _UserList] = {}
        self._links: dict[str, UserLinks] = {}

    def _relink(self, users: _UserList, prev: str | None, nxt: str | None) -> None:
        links = self._links
        if prev is None:
            users.first = nxt
        else:
            links[prev] = (links[prev][0], nxt)
        if nxt is None:
            users.last = prev
        else:
            links[nxt] = (prev, links[nxt][1])

    def append(self, sid: str, user: str) -> None:
        """A new session of `user`: the most recently active of their list."""
        users = self._lists.get(user)
        if users is None:
            self._lists[user] = _UserList(sid)
            self._links[sid] = (None, None)
            return
        prev = users.last
        self._links[prev] = (self._links[prev][0], sid)  # type: ignore[index]
        self._links[sid] = (prev, None)
        users.last = sid

    def load(self, ids: list[str], users: list[str | None], order: list[int]) -> None:
        """Fill empty lists at once (a snapshot read back) from sessions by position: their ids, their
        users (None: none), `order` the positions in activity order."""
        by_user: dict[str, list[str]] = {}
        for i in compress(order, map(is_not, map(users.__getitem__, order), repeat(None))):
            by_user.setdefault(users[i], []).append(ids[i])  # type: ignore[arg-type]
        for user, mine in by_user.items():
            users_list = self._lists[user] = _UserList(mine[0])
            users_list.last = mine[-1]
            self._links.update(zip(mine, zip([None, *mine[:-1]], [*mine[1:], None], strict=True), strict=True))

    def move_to_tail(self, sid: str, user: str) -> None:
        """Activity on `sid`: the most recently active of its user's list."""
        users = self._lists[user]
        if sid != users.last:
            links = self._links
            self._relink(users, *links[sid])
            links[users.last] = (links[users.last][0], sid)  # type: ignore[index]
            links[sid] = (users.last, None)
            users.last = sid

    def remove(self, sid: str, user: str) -> None:
        users = self._lists[user]
        self._relink(users, *self._links.pop(sid))
        if users.first is None:
            del self._lists[user]

    def rename(self, sid: str, new_id: str, user: str) -> None:
        """`sid` is now `new_id`, in the same place of its user's list."""
        users = self._lists[user]
        links = self._links[new_id] = self._links.pop(sid)
        self._relink(users, links[0], new_id)
        self._relink(users, new_id, links[1])

    def ids(self, user: str) -> list[str]:
        """The user's sessions, most recently active first: O(the user's sessions)."""
        users = self._lists.get(user)
        ids, sid = [], users.last if users is not None else None
        while sid is not None:
            ids.append(sid)
            sid = self._links[sid][0]
        return ids

    def links(self, sid: str) -> UserLinks | None:
        """(prev, next) of `sid` in its user's list; None if it is in none."""
        return self._links.get(sid)

    def lists(self) -> dict[str, list[str]]:
        """Each user's sessions, least recently active first, walked from the head with each back link
        checked (AssertionError if a link is broken; so no circle can be walked, see ExpiryIndex.lists)."""
        found = {}
        for user, users in self._lists.items():
            ids, prev, sid = list[str](), None, users.first
            while sid is not None:
                links = self._links.get(sid)
                require(links is not None and links[0] == prev, "a user's list links are wrong")
                ids.append(sid)
                prev, sid = sid, links[1]  # type: ignore[index]
            require(bool(ids) and users.last == prev, "a user's list is empty, or its tail is wrong")
            found[user] = ids
        return found

    def check(self, nodes: Mapping[str, Node]) -> None:
        """AssertionError naming the first broken invariant: each list linked both ways, holding only
        stored sessions of its user; every stored session with a user in its user's list once; no links
        kept for a session that is gone."""
        in_lists: list[str] = []
        for user, ids in self.lists().items():
            require(all(sid in nodes for sid in ids), "a user's list holds a session that is gone")
            require(all(nodes[sid][STATIC][USER] == user for sid in ids), "a session is in another user's list")
            in_lists += ids
        with_user = sorted(sid for sid, node in nodes.items() if node[STATIC][USER] is not None)
        require(sorted(in_lists) == with_user, "a user's session is missing from their list, or listed twice")
        require(sorted(self._links) == with_user, "user links kept for a session that is gone")


class ResumePairs:
    """Resume key (user, client) -> the session a create with that pair resumes."""

    def __init__(self) -> None:
        self._pairs: dict[str, str] = {}

    def get(self, user: str | None, client: str) -> str | None:
        return self._pairs.get(pair_key(user, client))

    def set(self, user: str | None, client: str, sid: str) -> None:
        self._pairs[pair_key(user, client)] = sid

    def load(self, ids: list[str], users: list[str | None], clients: list[str | None], order: list[int]) -> None:
        """Fill empty pairs at once (a snapshot read back) from sessions by position, `order` the positions
        in activity order: each pair resumes the most recently active of its sessions."""
        pairs = self._pairs
        for i in compress(order, map(is_not, map(clients.__getitem__, order), repeat(None))):
            pairs[pair_key(users[i], clients[i])] = ids[i]  # type: ignore[arg-type]

    def drop(self, sid: str, static: Static) -> None:
        """`sid` ended: its pair no longer resumes it (a pair taken over by a newer session is kept)."""
        key = pair_key(static[USER], static[CLIENT])  # type: ignore[arg-type]
        if self._pairs.get(key) == sid:
            del self._pairs[key]

    def rename(self, sid: str, new_id: str, static: Static) -> None:
        key = pair_key(static[USER], static[CLIENT])  # type: ignore[arg-type]
        if self._pairs.get(key) == sid:
            self._pairs[key] = new_id

    def lists(self) -> list[str]:
        """Every pair as "<resume key>=<session id>", sorted."""
        return sorted(f"{key}={sid}" for key, sid in self._pairs.items())

    def check(self, nodes: Mapping[str, Node]) -> None:
        """AssertionError unless every pair names a stored session of that user and client."""
        for key, sid in self._pairs.items():
            node = nodes.get(sid)
            require(node is not None, "a resume pair names a session that is gone")
            static = node[STATIC]  # type: ignore[index]
            require(static[CLIENT] is not None and pair_key(static[USER], static[CLIENT]) == key, "a pair is wrong")


class SessionOwners:
    """The user lists and the resume pairs together: what a session's user and client id link it into."""

    def __init__(self) -> None:
        self.users = UserLists()
        self.pairs = ResumePairs()

    def add(self, sid: str, static: Static) -> None:
        user, client = static[USER], static[CLIENT]
        if user is not None:
            self.users.append(sid, user)
        if client is not None:
            self.pairs.set(user, client, sid)

    def load(self, ids: list[str], statics: list[Static], order: list[int]) -> None:
        """Fill empty owners at once from sessions by position, `order` the positions in activity order."""
        users, clients = list(map(itemgetter(USER), statics)), list(map(itemgetter(CLIENT), statics))
        self.users.load(ids, users, order)
        self.pairs.load(ids, users, clients, order)

    def forget(self, sid: str, static: Static) -> None:
        """`sid` ended: out of its user's list, and its resume pair gone."""
        if static[USER] is not None:
            self.users.remove(sid, static[USER])
        if static[CLIENT] is not None:
            self.pairs.drop(sid, static)

    def rename(self, sid: str, new_id: str, static: Static) -> None:
        if static[USER] is not None:
            self.users.rename(sid, new_id, static[USER])
        if static[CLIENT] is not None:
            self.pairs.rename(sid, new_id, static)

    def check(self, nodes: Mapping[str, Node]) -> None:
        """AssertionError naming the first broken invariant of the user lists or the pairs (see theirs)."""
        self.users.check(nodes)
        self.pairs.check(nodes)
