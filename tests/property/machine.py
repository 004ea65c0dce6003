"""A hypothesis state machine that drives a SessionManager beside a small reference model of DESIGN.md.

The model is a dict of session id -> Model (activity, data, its own timeout, creation, user, client) and
the rule "expired from min(last_activity + timeout, created + ABSOLUTE) on"; resume by (user, client) and
ownership (another user's session is absent) are modelled too, and so is the data's version: writes
replace the data or merge a patch into it (RFC 7396), optionally conditional on a version. The machine is built by
`build_machine(make_store)` so the same rules run against every store, and against the deliberately
broken stores of the power check. On a memory store it also restarts: a snapshot written, the process down
a while, a new store and manager loaded from the file, and every rule and invariant goes on with them.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import string
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from faultmaven.config import Settings
from faultmaven.exceptions import SessionNotFoundError, SessionStoreFullError, SessionVersionConflict
from faultmaven.lifecycle.cleanup import yield_to_loop
from faultmaven.merge_patch import merge_patch
from faultmaven.session import encode_data
from faultmaven.session_management import SessionManager
from faultmaven.stores import MemoryStore
from faultmaven.stores.base import Report
from faultmaven.stores.memory.snapshot import load_snapshot, write_snapshot
from faultmaven.stores.redis.store import RedisStore
from faultmaven.stores.sizing import session_bytes
from tests.support import FakeClock, stored_record

TIMEOUT_MINUTES = 1.0
T = TIMEOUT_MINUTES * 60.0
ABSOLUTE_MINUTES = 3.0
ABSOLUTE = ABSOLUTE_MINUTES * 60.0
BATCH = 3
MAX_PER_USER = 3
LIST_USERS = st.sampled_from(["alice", "bob"])
TIMEOUTS = st.sampled_from([None, 0.5, 1.0, 2.0, 5.0])  # minutes; None: the default (T); 5 > ABSOLUTE
USERS = st.sampled_from([None, "alice", "bob"])
CLIENTS = st.sampled_from(["client-a1", "client-b2", "client-c3"])

# Exactly representable steps, so that "lands on the expiry instant" is exact arithmetic.
SMALL_STEPS = st.sampled_from([0.25, 0.5, 1.0, 5.0, 10.0, 20.0])
LARGE_STEPS = st.sampled_from([15.0, 30.0, 45.0, 59.75, 60.0, 60.25, 90.0, 1000.0])
MAX_AGES = st.sampled_from([0.0, 0.25, 0.5, 0.99, 1.0, 1.01, 1.5, 2.0])  # minutes: below, at, above T
DATA = st.dictionaries(st.text(string.ascii_letters, max_size=4), st.integers(-5, 5) | st.text(max_size=4), max_size=3)
# Merge patches over few keys (so they hit stored ones): null removes, objects merge, the rest replaces.
PATCH_KEYS = st.sampled_from(["a", "b", "n", "op"])
PATCH_VALUES = st.recursive(
    st.none() | st.integers(-5, 5) | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(PATCH_KEYS, inner, max_size=3),
    max_leaves=5,
)
PATCHES = st.dictionaries(PATCH_KEYS, PATCH_VALUES, max_size=3)
# What a write expects of the version: nothing, the current one, or one that is not current.
CONDITIONS = st.sampled_from([None, "current", "stale"])
UNKNOWN_IDS = st.text("ab", min_size=43, max_size=43)  # well formed, never issued
MALFORMED_IDS = st.sampled_from(["", "x", "a" * 42, "a" * 44, "a" * 42 + "!", "../etc/passwd"])
OPS = st.lists(
    # The index counts in activity order, so small ones hit the sessions the cleanup is about to reach.
    st.tuples(st.sampled_from(["touch", "get", "update", "merge", "delete", "create", "advance"]), st.integers(0, 9)),
    max_size=6,
)


class PeekableStore(MemoryStore):
    """The real MemoryStore, plus a look at one session that records no activity."""

    async def user_index(self, user: str) -> list[str]:
        """The user's list, most recent first, walked with every link checked (a broken one: AssertionError)."""
        return self.owners.users.lists().get(user, [])[::-1]

    def end_listed(self, session_id: str, report: Report) -> None:
        """End one session as expired, outside a cleanup (the power check's listing cleanups)."""
        with self.log.to(report):
            self._end(session_id, "expired")

    async def peek(self, session_id: str) -> tuple[float, dict[str, Any], int] | None:
        record = stored_record(self, session_id)
        return None if record is None else (record.last_activity, json.loads(record.blob), record.version)


class PeekableRedisStore(RedisStore):
    """The real RedisStore, plus the same look at one session (HMGET, no activity recorded)."""

    async def user_index(self, user: str) -> list[str]:
        """The user's index, most recent first: the scripts order it by each session's (last activity,
        order of the touch), read from the sessions' hashes; a member without a hash shows first."""
        shard = self.owner_shard(user)
        ids = [sid.decode() for sid in await self.client.zrange(f"{shard.prefix}u:{user}", 0, -1)]  # type: ignore[union-attr]
        keys = []
        for sid in ids:
            active, order = await self.client.hmget(shard.key(sid), ["active", "order"])  # type: ignore[misc]
            keys.append((float("inf"), 0, sid) if active is None else (float(active), int(order or 0), sid))
        return [sid for *_, sid in sorted(keys, reverse=True)]

    async def peek(self, session_id: str) -> tuple[float, dict[str, Any], int] | None:
        shard = self.shard_for(session_id)
        if shard is None:
            return None
        fields = ["active", "data", "version"]
        active, data, version = await self.client.hmget(shard.key(session_id), fields)  # type: ignore[misc]
        return None if active is None else (float(active), json.loads(data), int(version or 1))


class GatedManager(SessionManager):
    """The real manager, whose cleanup can be held at its yield point between batches."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.permits: int | None = None  # between-batch yields allowed before holding; None: never hold
        self.waiting = False
        self._changed = asyncio.Event()
        super().__init__(*args, cleanup_pause=self._gated_pause, **kwargs)

    async def _gated_pause(self) -> None:
        while self.permits is not None and self.permits <= 0:
            self.waiting = True
            self._changed.clear()
            await self._changed.wait()
        self.waiting = False
        if self.permits is not None:
            self.permits -= 1
        await yield_to_loop()

    def release(self) -> None:
        self.permits = None
        self._changed.set()


@dataclass
class Model:
    last_activity: float
    data: dict[str, Any]
    seq: int  # creation order: ids are random, so order ties by this to keep examples reproducible
    created: float = 0.0
    timeout: float = T
    user: str | None = None
    client: str | None = None
    order: int = 0  # activity order (the stores keep each user's sessions in it)
    version: int = 1  # of the data: +1 whenever a write changes its encoded bytes

    def expires_at(self) -> float:
        return min(self.last_activity + self.timeout, self.created + ABSOLUTE)


REFUSALS = [0]  # creates and updates refused for room, for the budget test to see the rule was reached
STEPS = [0]  # state-machine steps run in this process (rules and initializers), for the CI step count
# Restarts of a memory store through its snapshot: all of them, those that carried a session whose deadline
# passed (before the stop or while down), a user's list of two or more sessions, and a user's list with two
# sessions last active at the same instant (whose order only the lists themselves hold).
RESTARTS = {"all": 0, "with_expired": 0, "with_user_lists": 0, "with_ties": 0}
DOWNTIMES = st.sampled_from([0.0, 0.25, 30.0, 60.0, 200.0])  # seconds the process is down at a restart


REFUSED_ID = "b" * 43  # what a refused create hands the bundle: well formed, never issued
BUDGET = 2000  # bytes: room for about six small sessions, so creates and growing updates meet the limit


class SessionMachine(RuleBasedStateMachine):
    make_store: Callable[[], Any] = PeekableStore
    budget: int | None = None  # the store's max_bytes (policy reject); None: no budget
    sessions = Bundle("sessions")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = FakeClock()
        self.snapshot_dir: str | None = None  # made at the first restart, removed at teardown
        self.events: list[tuple[str, str]] = []  # what the listener received: (session id, reason)
        self.start(type(self).make_store())
        self.expected: list[tuple[str, str]] = []  # the removals the model made
        self.ticks = 0
        self.model: dict[str, Model] = {}
        self.cleanup_runs = 0
        self.created = 0
        self.cleaned = 0
        self.scheduler_on = False

    def start(self, store: Any) -> None:
        """A manager on `store`, as the service starts one: the settings of every run, a listener."""
        self.store = store
        settings = Settings(
            timeout_minutes=TIMEOUT_MINUTES,
            min_timeout_minutes=0.5,
            absolute_timeout_minutes=ABSOLUTE_MINUTES,
            cleanup_batch_size=BATCH,
            cleanup_enabled=False,
            max_per_user=MAX_PER_USER,
        )
        self.manager = GatedManager(self.store, settings=settings, clock=self.clock)
        self.manager.add_session_end_listener(lambda end: self.events.append((end.session_id, end.reason)))

    def teardown(self) -> None:
        self.loop.run_until_complete(self.manager.close())
        self.loop.close()
        if self.snapshot_dir is not None:
            shutil.rmtree(self.snapshot_dir, ignore_errors=True)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    # -- model helpers ---------------------------------------------------------------------------------

    def peek(self, sid: str) -> tuple[float, dict[str, Any], int] | None:
        result: tuple[float, dict[str, Any], int] | None = self.run(self.store.peek(sid))
        return result

    def live(self, sid: str) -> bool:
        entry = self.model.get(sid)
        return entry is not None and self.clock.now < entry.expires_at()

    def visible(self, sid: str, user: str | None) -> bool:
        """Live, and not another user's (a session without a user is anyone's)."""
        owner = self.model[sid].user if sid in self.model else None
        return self.live(sid) and (user is None or owner is None or owner == user)

    def due(self, sid: str, max_age_s: float | None) -> bool:
        """What a cleanup with this max age removes: expired, or idle at least max_age_s."""
        entry = self.model[sid]
        idle = max_age_s is not None and self.clock.now - entry.last_activity >= max_age_s
        return not self.live(sid) or idle

    def pick(self, index: int, *, live_only: bool = False) -> str | None:
        """A stored session by position in activity order: small indexes are the next cleanup candidates."""
        ids = sorted(self.model, key=lambda sid: (self.model[sid].last_activity, self.model[sid].seq))
        if live_only:
            ids = [sid for sid in ids if self.live(sid)] or ids
        return ids[index % len(ids)] if ids else None

    def activity(self, sid: str) -> None:
        self.ticks += 1
        self.model[sid].last_activity = self.clock.now
        self.model[sid].order = self.ticks

    def end(self, sid: str, reason: str) -> None:
        del self.model[sid]
        self.expected.append((sid, reason))

    def user_sessions(self, user: str, *, live_only: bool) -> list[str]:
        """The user's sessions in the model, most recently active first."""
        mine = [sid for sid, e in self.model.items() if e.user == user and (self.live(sid) or not live_only)]
        return sorted(mine, key=lambda sid: -self.model[sid].order)

    def cost(self, data: dict[str, Any], user: str | None, client: str | None) -> int:
        """What the memory store counts for a session (its id is always 43 ASCII characters)."""
        return session_bytes(REFUSED_ID, user, encode_data(data, 2**20), b"{}", client)

    def stored_bytes(self) -> int:
        return sum(self.cost(e.data, e.user, e.client) for e in self.model.values())

    def refused_for_room(self, incoming: int, freed: int = 0) -> bool:
        """The budget rule under reject: over the budget, every expired session goes first (one removal
        batch holds them all here); still over once `freed` bytes are gone: refused."""
        if self.budget is None or self.stored_bytes() + incoming <= self.budget:
            return False
        for sid in [sid for sid in self.model if not self.live(sid)]:
            self.end(sid, "expired")
        return self.stored_bytes() - freed + incoming > self.budget

    def expect_activity(self, sid: str, returned: Any, user: str | None = None) -> None:
        """get/touch: a visible session is returned with activity recorded; anything else is None."""
        if self.visible(sid, user):
            assert returned is not None, "a live session was not returned"
            self.activity(sid)
            assert (returned.data, returned.version) == (self.model[sid].data, self.model[sid].version)
            assert returned.last_activity.timestamp() == self.clock.now
        else:
            assert returned is None, "an expired, deleted or unknown session was returned"

    def do_create(
        self,
        data: dict[str, Any],
        timeout: float | None = None,
        user: str | None = None,
        client: str | None = None,
    ) -> str:
        resumable = [
            sid for sid, e in self.model.items() if client is not None and (e.user, e.client) == (user, client)
        ]
        resumable = [sid for sid in resumable if self.live(sid)]
        victims = [] if user is None else self.user_sessions(user, live_only=True)[MAX_PER_USER - 1 :]
        freed = sum(self.cost(self.model[sid].data, user, self.model[sid].client) for sid in victims)
        refused = not resumable and self.refused_for_room(self.cost(data, user, client), freed)
        try:
            session = self.run(self.manager.create_session(user, data, client_id=client, timeout_minutes=timeout))
        except SessionStoreFullError:
            assert refused, "a create that fits the budget was refused"
            REFUSALS[0] += 1
            return REFUSED_ID
        assert not refused, "a create over the budget was stored"
        if resumable:
            assert session.session_resumed and [session.session_id] == resumable, "the pair's live session not resumed"
            self.activity(session.session_id)
            assert session.data == self.model[session.session_id].data
            return str(session.session_id)
        assert not session.session_resumed, "a create resumed a session that is expired or not the pair's"
        assert session.session_id not in self.model
        if user is not None:  # past the limit, the user's least recently active live sessions end
            for sid in self.user_sessions(user, live_only=True)[MAX_PER_USER - 1 :]:
                self.end(sid, "user_limit")
        self.created += 1
        timeout_s = T if timeout is None else timeout * 60.0
        self.model[session.session_id] = Model(
            self.clock.now, data, self.created, self.clock.now, timeout_s, user, client
        )
        self.activity(session.session_id)
        assert session.expires_at.timestamp() == self.model[session.session_id].expires_at()
        return str(session.session_id)

    def do_update(
        self,
        sid: str,
        data: dict[str, Any],
        user: str | None = None,
        *,
        merge: bool = False,
        condition: str | None = None,
    ) -> None:
        """A write of the data (or with `merge` a merge patch of it), optionally conditional on the version:
        the current one, or a stale one (a conflict that changes nothing, not even activity)."""
        entry = self.model.get(sid)
        if_version = None
        if condition is not None:
            current = entry.version if entry is not None else 1
            if_version = current if condition == "current" else current - 1 - self.ticks % 2 * 2  # stale
        call = self.manager.update_session(sid, data, user_id=user, merge=merge, if_version=if_version)
        if not self.visible(sid, user):
            try:
                self.run(call)
            except SessionNotFoundError:
                return
            raise AssertionError("update of a session that is not live succeeded")
        assert entry is not None
        if condition == "stale":
            try:
                self.run(call)
            except SessionVersionConflict as conflict:
                assert conflict.current_version == entry.version
                return
            raise AssertionError("a write naming a stale version succeeded")
        new = merge_patch(entry.data, data) if merge else data
        growth = self.cost(new, entry.user, entry.client) - self.cost(entry.data, entry.user, entry.client)
        if self.refused_for_room(growth):
            try:
                self.run(call)
            except SessionStoreFullError:
                REFUSALS[0] += 1
                return  # refused before anything changed: no activity, the old data kept
            raise AssertionError("an update that grows past the budget was applied")
        session = self.run(call)
        if _encoded(new) != _encoded(entry.data):
            entry.version += 1
        assert session.data == new and session.version == entry.version
        self.activity(sid)
        entry.data = new

    def do_delete(self, sid: str, user: str | None = None) -> None:
        was_live = self.visible(sid, user)
        assert self.run(self.manager.delete_session(sid, user_id=user)) is was_live
        if sid in self.model and (user is None or self.model[sid].user in (None, user)):
            self.end(sid, "deleted")

    def check_cleanup(self, max_age_minutes: float | None, removed: int, before: set[str]) -> None:
        """Everything removed was due (expired, or idle >= max_age); nothing due remains; the count matches."""
        limit = None if max_age_minutes is None else max_age_minutes * 60.0
        gone = {sid for sid in before if sid in self.model and self.peek(sid) is None}
        for sid in gone:
            assert self.due(sid, limit), "cleanup removed a session in use"
            self.end(sid, "idle" if self.live(sid) else "expired")
        assert removed == len(gone), f"cleanup returned {removed} but removed {len(gone)}"
        for sid in self.model:
            assert not self.due(sid, limit), "a due session survived a finished cleanup"
        self.cleanup_runs += 1
        self.cleaned += removed

    # -- rules ----------------------------------------------------------------------------------------

    @initialize(target=sessions, data=DATA)
    def first_session(self, data: dict[str, Any]) -> str:
        return self.do_create(data)

    @rule(target=sessions, data=DATA, timeout=TIMEOUTS, user=USERS)
    def create(self, data: dict[str, Any], timeout: float | None, user: str | None) -> str:
        return self.do_create(data, timeout, user)

    @rule(target=sessions, data=DATA, timeout=TIMEOUTS, user=USERS, client=CLIENTS)
    def create_or_resume(self, data: dict[str, Any], timeout: float | None, user: str | None, client: str) -> str:
        return self.do_create(data, timeout, user, client)

    @rule(count=st.integers(2, 8), timeout=TIMEOUTS)
    def create_many(self, count: int, timeout: float | None) -> None:
        for i in range(count):
            self.do_create({"n": i}, timeout)

    @rule(sid=sessions | UNKNOWN_IDS | MALFORMED_IDS, user=USERS)
    def get(self, sid: str, user: str | None) -> None:
        self.expect_activity(sid, self.run(self.manager.get_session(sid, user_id=user)), user)

    @rule(sid=sessions | UNKNOWN_IDS | MALFORMED_IDS, user=USERS)
    def touch(self, sid: str, user: str | None) -> None:
        self.expect_activity(sid, self.run(self.manager.touch_session(sid, user_id=user)), user)

    @rule(sid=sessions | UNKNOWN_IDS | MALFORMED_IDS, data=DATA, user=USERS)
    def update(self, sid: str, data: dict[str, Any], user: str | None) -> None:
        self.do_update(sid, data, user)

    @rule(sid=sessions | UNKNOWN_IDS | MALFORMED_IDS, patch=PATCHES, user=USERS, condition=CONDITIONS)
    def merge(self, sid: str, patch: dict[str, Any], user: str | None, condition: str | None) -> None:
        self.do_update(sid, patch, user, merge=True, condition=condition)

    @rule(sid=sessions, data=DATA, condition=CONDITIONS)
    def conditional_update(self, sid: str, data: dict[str, Any], condition: str | None) -> None:
        self.do_update(sid, data, condition=condition)

    @rule(sid=sessions | UNKNOWN_IDS | MALFORMED_IDS, user=USERS)
    def delete(self, sid: str, user: str | None) -> None:
        self.do_delete(sid, user)

    @rule(step=SMALL_STEPS)
    def advance_small(self, step: float) -> None:
        self.clock.advance(step)

    @rule(step=LARGE_STEPS)
    def advance_large(self, step: float) -> None:
        self.clock.advance(step)

    @precondition(lambda self: bool(self.model))
    @rule(index=st.integers(0, 1000))
    def advance_to_an_expiry_instant(self, index: int) -> None:
        sid = self.pick(index)
        assert sid is not None
        expiry = self.model[sid].expires_at()
        if expiry > self.clock.now:
            self.clock.now = expiry

    @rule(max_age=MAX_AGES | st.none())
    def cleanup(self, max_age: float | None) -> None:
        before = set(self.model)
        removed = self.run(self.manager.cleanup_inactive_sessions(max_age))
        self.check_cleanup(max_age, removed, before)

    @rule(max_age=MAX_AGES | st.none(), batches=st.integers(0, 4), ops=OPS)
    def interleaved_cleanup(self, max_age: float | None, batches: int, ops: list[tuple[str, int]]) -> None:
        """Start a cleanup, let it run `batches` + 1 batches, act while it is suspended, then let it finish."""
        before = set(self.model)
        self.manager.permits = batches
        task = self.loop.create_task(self.manager.cleanup_inactive_sessions(max_age))
        self.run(self._until_held_or_done(task))
        if task.done():  # the run finished before holding: the operations come after it
            self.manager.release()
            self.check_cleanup(max_age, task.result(), before)
            for kind, index in ops:
                self.apply_op(kind, index)
            return
        # What the first batches removed must have been idle; the model forgets it before acting.
        limit = None if max_age is None else max_age * 60.0
        removed_early = 0
        for sid in before:
            if self.peek(sid) is None:
                assert self.due(sid, limit), "cleanup removed a live session"
                self.end(sid, "idle" if self.live(sid) else "expired")
                removed_early += 1
        for kind, index in ops:
            self.apply_op(kind, index)
        self.manager.release()
        removed = self.run(task)
        self.check_cleanup(max_age, removed - removed_early, set(self.model))
        self.cleaned += removed_early

    async def _until_held_or_done(self, task: asyncio.Task[int]) -> None:
        """Wait until the run holds at its pause or has finished: a Redis Cluster batch on a busy machine
        can take many turns of the loop, so the wait is for the condition, with a deadline."""
        async with asyncio.timeout(30):
            while not (task.done() or self.manager.waiting):
                await asyncio.sleep(0.001)

    def apply_op(self, kind: str, index: int) -> None:
        if kind == "create":
            self.do_create({"op": index}, [None, 0.5, 2.0][index % 3], client=f"client-{index % 3:03d}")
            return
        if kind == "advance":
            self.clock.advance([0.25, 1.0, 10.0, 30.0][index % 4])
            return
        sid = self.pick(index, live_only=kind != "delete")  # live ones: the sessions in use during the run
        if sid is None:
            return
        if kind == "touch":
            self.expect_activity(sid, self.run(self.manager.touch_session(sid)))
        elif kind == "get":
            self.expect_activity(sid, self.run(self.manager.get_session(sid)))
        elif kind == "update":
            self.do_update(sid, {"op": index})
        elif kind == "merge":
            self.do_update(sid, {"op": index, "n": None}, merge=True, condition=[None, "current", "stale"][index % 3])
        else:
            self.do_delete(sid)

    @rule(target=sessions, sid=sessions | UNKNOWN_IDS | MALFORMED_IDS, user=USERS)
    def rotate(self, sid: str, user: str | None) -> str:
        if not self.visible(sid, user):
            try:
                self.run(self.manager.rotate_session(sid, user_id=user))
            except SessionNotFoundError:
                return sid
            raise AssertionError("rotation of a session that is not live succeeded")
        session = self.run(self.manager.rotate_session(sid, user_id=user))
        new = session.session_id
        assert new != sid and new not in self.model and self.peek(sid) is None, "the old id survived rotation"
        entry = self.model.pop(sid)
        self.expected.append((sid, "rotated"))
        self.model[new] = entry  # everything kept, its last activity and its place in every order too
        assert session.last_activity.timestamp() == entry.last_activity
        assert (session.data, session.user_id, session.client_id) == (entry.data, entry.user, entry.client)
        assert session.version == entry.version
        assert session.created_at.timestamp() == entry.created
        return str(new)

    @rule(user=LIST_USERS, limit=st.integers(1, 4), offset=st.integers(0, 3))
    def list_user(self, user: str, limit: int, offset: int) -> None:
        sessions = self.run(self.manager.list_user_sessions(user, limit=limit, offset=offset))
        live = self.user_sessions(user, live_only=True)
        assert [s.session_id for s in sessions] == live[offset : offset + limit], "the user's page is wrong"

    @rule(user=LIST_USERS)
    def revoke(self, user: str) -> None:
        revoked = self.run(self.manager.revoke_user_sessions(user))
        mine = self.user_sessions(user, live_only=False)
        live = [sid for sid in mine if self.live(sid)]
        assert revoked == len(live)
        for sid in mine:
            self.end(sid, "revoked" if sid in live else "expired")

    @rule()
    def start_scheduler(self) -> None:
        # An hour of real time: it never fires during the test; this checks start/stop bookkeeping.
        self.run(self.manager.start_cleanup_scheduler(60))
        self.run(self.manager.start_cleanup_scheduler(60))
        self.scheduler_on = True

    @rule()
    def stop_scheduler(self) -> None:
        self.run(self.manager.stop_cleanup_scheduler())
        self.scheduler_on = False

    @precondition(lambda self: isinstance(self.store, MemoryStore))
    @rule(down=DOWNTIMES)
    def restart(self, down: float) -> None:
        """A graceful stop and a start of a memory store's service: the snapshot written, the process down
        for `down` seconds, a new store loaded from the file under a new manager, and every rule and
        invariant goes on with it. Counters start again from zero, as they do in a new process."""
        if self.snapshot_dir is None:
            self.snapshot_dir = tempfile.mkdtemp(prefix="faultmaven-machine-")
        path = f"{self.snapshot_dir}/sessions.snapshot"
        assert self.run(write_snapshot(self.store, path)) == len(self.model)
        self.run(self.manager.close())  # the old manager's endings are delivered before it stops
        self.clock.advance(down)
        self.start(type(self).make_store())
        assert self.run(load_snapshot(self.store, path)) == len(self.model)
        self.cleanup_runs = self.cleaned = 0
        self.scheduler_on = False
        RESTARTS["all"] += 1
        RESTARTS["with_expired"] += any(not self.live(sid) for sid in self.model)
        lists = [self.user_sessions(user, live_only=False) for user in ("alice", "bob")]
        RESTARTS["with_user_lists"] += any(len(ids) > 1 for ids in lists)
        actives = [[self.model[sid].last_activity for sid in ids] for ids in lists]
        RESTARTS["with_ties"] += any(len(set(times)) < len(times) for times in actives)

    # -- invariants -----------------------------------------------------------------------------------

    @invariant()
    def live_sessions_are_stored_with_their_data(self) -> None:
        STEPS[0] += 1  # invariants run once after every step
        for sid, entry in self.model.items():
            stored = self.peek(sid)
            assert stored is not None, "a session the model holds is missing from the store"
            assert stored == (entry.last_activity, entry.data, entry.version)

    @invariant()
    def user_index_matches_the_model(self) -> None:
        for user in ("alice", "bob"):
            assert self.run(self.store.user_index(user)) == self.user_sessions(user, live_only=False)

    @invariant()
    def events_equal_the_removals(self) -> None:
        self.run(self.manager.flush_session_ends())
        assert sorted(self.events) == sorted(self.expected), "an ending was missed or reported twice"

    @invariant()
    def expired_sessions_are_invisible(self) -> None:
        for sid in list(self.model):
            if not self.live(sid):
                assert self.run(self.manager.get_session(sid)) is None, "an expired session is visible"

    @invariant()
    def metrics_match_the_model(self) -> None:
        self.run(self.store.refresh_stats(self.clock.now))  # a Redis store serves a snapshot
        metrics = self.manager.get_session_metrics()
        live = sum(self.live(sid) for sid in self.model)
        assert metrics["active_sessions"] == live
        assert metrics["expired_sessions"] == len(self.model) - live
        assert metrics["cleanup_runs"] == self.cleanup_runs
        assert metrics["sessions_cleaned_total"] == self.cleaned
        assert metrics["scheduler_running"] is self.scheduler_on
        if not self.model:
            assert metrics["memory_usage_mb"] == 0, "the memory estimate did not return to empty"
        if isinstance(self.store, MemoryStore):
            self.store.check()
        if self.budget is not None:
            assert metrics["memory_usage_mb"] == self.stored_bytes() / (1024 * 1024)
            assert self.stored_bytes() <= self.budget, "the store went over its budget"


def _encoded(data: dict[str, Any]) -> str:
    """The data as the stores keep it (compact JSON, in key order): a version moves when this changes."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def build_machine(make_store: Callable[[], Any], name: str, budget: int | None = None) -> type[SessionMachine]:
    """The machine over another store (a real backend, or a broken variant for the power check); with
    `budget`, the store is expected to hold at most that many bytes and refuse what does not fit."""
    return type(name, (SessionMachine,), {"make_store": staticmethod(make_store), "budget": budget})


BudgetMachine = build_machine(lambda: PeekableStore(max_bytes=BUDGET), "BudgetMachine", BUDGET)


class UsersAtOneInstantMachine(SessionMachine):
    """The same machine, started with one user's sessions over three timeouts, created and touched at one
    instant in a drawn order: their order in the user's list is held by the list alone (their lanes differ),
    which is what a restart must bring back."""

    @initialize(target=SessionMachine.sessions, touches=st.lists(st.integers(0, 2), max_size=4))
    def sessions_at_one_instant(self, touches: list[int]) -> Any:
        ids = [self.do_create({"i": i}, timeout, "alice") for i, timeout in enumerate([None, 2.0, 0.5])]
        for i in touches:
            self.expect_activity(ids[i], self.run(self.manager.touch_session(ids[i], user_id="alice")), "alice")
        return multiple(*ids)
