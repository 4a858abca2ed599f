"""The Redis store: SessionStore servers whose sessions live in a real ``redis-server``.

The compliance kit through BridgedState against a server on Redis; two servers on
one Redis with a client on each (writes, compare-and-set conflicts, watch events,
closes, exactly-once retries crossing between them); the history checker over
handles split between the two servers; a Context migrating into a Redis-backed
server and read back by ``RedisState``; the store's own rules (pending copies,
incarnations, deadlines, resumed watches). The SIGKILL test for this store is in
``test_store_restarts.py``. Waits are on events and conditions, never sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from test_history import check_history, run_handles

from dspex_actors.bridge import BridgedState, SessionStoreServer, serve
from dspex_actors.errors import (
    BridgeUnavailable,
    SessionClosed,
    SessionNotFound,
    ValidationError,
    VersionConflict,
)
from dspex_actors.messages import DeleteVariable, GetVersioned, SetVariable
from dspex_actors.redis.follower import READER_NAME, StreamFollower
from dspex_actors.redis.scripts import session_keys
from dspex_actors.redis.state import RedisState
from dspex_actors.redis.store import RedisStore
from dspex_actors.stores import open_store
from dspex_actors.streaming import Event, Progress
from dspex_actors.supervision import Supervisor
from dspex_actors.testing import StateProviderContract
from dspex_actors.testing.streaming import EventRecorder, change

pytest.importorskip("redis", reason="redis-py is not installed (pip install -e '.[dev]')")

WAIT = 30.0  # a hang guard for waits that end at once when all is well


@pytest.fixture(scope="module")
def server(redis_url: str) -> Iterator[SessionStoreServer]:
    with serve(store=redis_url) as running:
        yield running


@pytest.fixture
def two_servers(redis_url: str) -> Iterator[tuple[SessionStoreServer, SessionStoreServer]]:
    with serve(store=redis_url) as first, serve(store=redis_url) as second:
        yield first, second


def fresh_id() -> str:
    return f"s-{uuid.uuid4().hex}"


# -- the contract ---------------------------------------------------------------------


class TestBridgedRedisStore(StateProviderContract):
    """The whole contract, through BridgedState, against a server on Redis."""

    provider = BridgedState

    @pytest.fixture
    def provider_options(self, server: SessionStoreServer) -> dict[str, Any]:
        return {"address": server.address}


# -- two servers, one Redis ----------------------------------------------------------------


def test_two_servers_share_writes_conflicts_events_and_closes(
    two_servers: tuple[SessionStoreServer, SessionStoreServer],
) -> None:
    first, second = two_servers
    sid = fresh_id()
    a = BridgedState.init(session_id=sid, address=first.address)
    b = BridgedState.init(session_id=sid, address=second.address, create=False)
    recorder = EventRecorder(WAIT, "watcher on the second server")
    try:
        subscription = b.subscribe("t*", recorder)
        a.register_variable("temperature", "float", 0.5, constraints={"min": 0, "max": 2})
        assert b.get_variable("temperature") == 0.5
        assert b.set_variable("temperature", 1.0) == 1
        # Validated by the definition stored in Redis, whichever server the write reaches.
        with pytest.raises(ValidationError):
            b.set_variable("temperature", 3.0)
        assert a.get_record("temperature").version == 1
        # A compare-and-set against a version the other server's write moved is refused.
        assert a.set_variable("temperature", 1.5, expected_version=1) == 2
        with pytest.raises(VersionConflict) as conflict:
            b.set_variable("temperature", 0.1, expected_version=1)
        assert (conflict.value.expected, conflict.value.actual) == (1, 2)
        events = recorder.wait_for("version 2", change("temperature", 2))
        assert [(e.kind, e.name, e.value, e.version) for e in events] == [
            ("registered", "temperature", 0.5, 0),
            ("updated", "temperature", 1.0, 1),
            ("updated", "temperature", 1.5, 2),
        ]
        # The owner closes through its server: the other server's watcher hears it.
        a.cleanup()
        recorder.wait_for("closed", lambda event: event.kind == "closed")
        with pytest.raises(SessionNotFound):
            b.get_variable("temperature")
        b.unsubscribe(subscription)
    finally:
        a.cleanup()
        b.cleanup()


def test_a_retry_through_another_server_is_answered_not_applied_again(redis_url: str) -> None:
    """The same request id reaching two stores on one Redis: applied once, one answer."""
    sid = fresh_id()

    async def scenario() -> tuple[int, int, tuple[Any, int]]:
        first, second = RedisStore(redis_url), RedisStore(redis_url)
        try:
            opened = await first.open(sid, create=True, metadata=None)
            await first.run(sid, _register_counter(), request_id=None, deadline=None)
            write = SetVariable("n", 7, None, 0)
            one = await first.run(sid, write, request_id="r-1", deadline=None)
            again = await second.run(
                sid, write, request_id="r-1", deadline=None, incarnation=opened.incarnation
            )
            now = await second.run(sid, GetVersioned("n"), request_id=None, deadline=None)
            await first.close(sid, opened.incarnation)
            return one, again, now
        finally:
            await first.aclose()
            await second.aclose()

    one, again, now = asyncio.run(scenario())
    assert (one, again) == (1, 1)
    assert now == (7, 1)


def _register_counter() -> Any:
    from dspex_actors.messages import RegisterVariable

    return RegisterVariable("n", "integer", 0, None, None, None)


def test_history_across_two_servers_is_linearizable(
    two_servers: tuple[SessionStoreServer, SessionStoreServer],
) -> None:
    """Eight handles, half on each server, run the history checker's workload."""
    addresses = [server.address for server in two_servers]
    ops, version, value = run_handles(addresses, fresh_id())
    print(f"two servers on one Redis: {len(ops)} operations checked")
    assert check_history(ops, version, value) == []


# -- a migration into Redis -------------------------------------------------------------------


def test_a_context_migrates_into_a_redis_server_and_redis_state_reads_it(
    server: SessionStoreServer, redis_url: str
) -> None:
    with Supervisor.start(bridge_address=server.address) as supervisor:
        context = supervisor.start_context()
        context.register_variable(
            "style", "choice", "short", constraints={"choices": ["short", "long"]}
        )
        context.set_variable("style", "long")
        recorder = EventRecorder(WAIT, "the context's subscriber")
        context.subscribe(None, recorder)
        context.ensure_bridged()
        assert context.backend_info()["type"] == "bridged"
        context.set_variable("style", "short")
        events = recorder.wait_for("version 2", change("style", 2))
        assert [e.sequence for e in events] == [3]  # the count went on across the switch
        direct = RedisState.init(url=redis_url, session_id=context.session_id, create=False)
        try:
            record = direct.get_record("style")
            assert (record.value, record.version) == ("short", 2)
        finally:
            direct.cleanup()


# -- the store's own rules ------------------------------------------------------------------


def test_a_pending_copy_is_invisible_until_committed(redis_url: str) -> None:
    sid = fresh_id()

    async def scenario() -> None:
        store, other = RedisStore(redis_url), RedisStore(redis_url)
        try:
            opened = await store.open(
                sid, create=True, metadata={"m": 1}, pending=True, request_id="copy-1"
            )
            assert opened.created and opened.ttl_seconds is not None and opened.ttl_seconds <= 60.0
            with pytest.raises(SessionNotFound):
                await other.open(sid, create=False, metadata=None)
            with pytest.raises(SessionClosed, match="migration"):
                await other.open(sid, create=True, metadata=None)
            # A retry of the creating open is still the creation.
            again = await store.open(
                sid, create=True, metadata=None, pending=True, request_id="copy-1"
            )
            assert (again.created, again.incarnation) == (True, opened.incarnation)
            with pytest.raises(SessionClosed):  # any other pending open is refused
                await other.open(sid, create=True, metadata=None, pending=True)
            await other.commit(sid, opened.incarnation)  # any server, knowing the incarnation
            attached = await other.open(sid, create=False, metadata=None)
            assert (attached.incarnation, attached.ttl_seconds) == (opened.incarnation, 3600.0)
            assert (await other.info(sid)).metadata == {"m": 1}
            await store.close(sid, opened.incarnation)
        finally:
            await store.aclose()
            await other.aclose()

    asyncio.run(scenario())


def test_the_creators_retried_open_is_told_it_created_the_session(redis_url: str) -> None:
    sid = fresh_id()

    async def scenario() -> None:
        store = RedisStore(redis_url)
        try:
            first = await store.open(sid, create=True, metadata=None, request_id="open-1")
            retry = await store.open(sid, create=True, metadata=None, request_id="open-1")
            other = await store.open(sid, create=True, metadata=None, request_id="open-2")
            assert (first.created, retry.created, other.created) == (True, True, False)
            await store.close(sid, first.incarnation)
        finally:
            await store.aclose()

    asyncio.run(scenario())


def test_a_stale_incarnation_cannot_write_or_close_a_newer_session(redis_url: str) -> None:
    sid = fresh_id()

    async def scenario() -> None:
        store = RedisStore(redis_url)
        try:
            old = await store.open(sid, create=True, metadata=None)
            await store.close(sid, old.incarnation)
            new = await store.open(sid, create=True, metadata=None)
            await store.run(sid, _register_counter(), request_id=None, deadline=None)
            with pytest.raises(SessionNotFound):
                await store.run(
                    sid,
                    SetVariable("n", 1, None, None),
                    request_id=None,
                    deadline=None,
                    incarnation=old.incarnation,
                )
            with pytest.raises(SessionNotFound):
                await store.close(sid, old.incarnation)
            assert await store.run(sid, GetVersioned("n"), request_id=None, deadline=None) == (
                0,
                0,
            )
            await store.close(sid, new.incarnation)
        finally:
            await store.aclose()

    asyncio.run(scenario())


def test_a_write_whose_deadline_passed_before_it_started_is_not_applied(redis_url: str) -> None:
    sid = fresh_id()

    async def scenario() -> tuple[Any, int]:
        store = RedisStore(redis_url)
        try:
            opened = await store.open(sid, create=True, metadata=None)
            await store.run(sid, _register_counter(), request_id=None, deadline=None)
            with pytest.raises(BridgeUnavailable, match="not applied"):
                await store.run(
                    sid,
                    SetVariable("n", 5, None, None),
                    request_id="late",
                    deadline=time.monotonic() - 1.0,
                )
            now = await store.run(sid, GetVersioned("n"), request_id=None, deadline=None)
            await store.close(sid, opened.incarnation)
            return now
        finally:
            await store.aclose()

    assert asyncio.run(scenario()) == (0, 0)


def test_a_watcher_resuming_before_the_shared_reader_gets_the_history(redis_url: str) -> None:
    """A second watcher asking for sequence 1 while a shared reader started later
    gets every event from 1 (Redis's history), then the live ones, in order."""
    sid = fresh_id()

    async def take(events: Any, count: int) -> list[Event]:
        taken: list[Event] = []
        async for event in events:
            taken.append(event)
            if len(taken) == count:
                break
        return taken

    async def scenario() -> tuple[list[int], list[int]]:
        store = RedisStore(redis_url)
        try:
            opened = await store.open(sid, create=True, metadata=None)
            await store.run(sid, _register_counter(), request_id=None, deadline=None)
            for value in (1, 2):
                await store.run(
                    sid, SetVariable("n", value, None, None), request_id=None, deadline=None
                )
            live = await store.watch(sid, [], None)  # the shared reader starts at 4
            resumed = await store.watch(sid, ["n"], 1)
            await store.run(sid, SetVariable("n", 3, None, None), request_id=None, deadline=None)
            got_live = await asyncio.wait_for(take(live, 1), WAIT)
            got_resumed = await asyncio.wait_for(take(resumed, 4), WAIT)
            await live.aclose()
            await resumed.aclose()
            await store.close(sid, opened.incarnation)
            return [e.sequence for e in got_live], [e.sequence for e in got_resumed]
        finally:
            await store.aclose()

    live, resumed = asyncio.run(scenario())
    assert live == [4]
    assert resumed == [1, 2, 3, 4]


def test_open_store_builds_a_redis_store_from_a_url(redis_url: str) -> None:
    store = open_store(redis_url, session_ttl=5.0, clock=time.monotonic)
    assert isinstance(store, RedisStore)
    assert (store.kind, store.url, store.session_ttl) == ("redis", redis_url, 5.0)
    asyncio.run(store.aclose())


def test_stopping_a_server_leaves_its_sessions_in_redis(redis_url: str) -> None:
    sid = fresh_id()
    with serve(store=redis_url) as first:
        owner = BridgedState.init(session_id=sid, address=first.address)
        owner.register_variable("kept", "integer", 41)
        owner.set_variable("kept", 42)
    owner.cleanup()  # its server is gone; the session is Redis's
    with serve(store=redis_url) as second:
        again = BridgedState.init(session_id=sid, address=second.address, create=False)
        try:
            record = again.get_record("kept")
            assert (record.value, record.version) == (42, 1)
        finally:
            again.close_remote()
            again.cleanup()


def test_concurrent_first_calls_share_one_handle(server: SessionStoreServer) -> None:
    """Many threads' first calls on a session through one server all succeed (each
    may attach a handle; the spare ones are let go only once unused)."""
    sid = fresh_id()
    owner = BridgedState.init(session_id=sid, address=server.address)
    owner.register_variable("n", "integer", 0)
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def worker() -> None:
        try:
            with BridgedState.init(session_id=sid, address=server.address, create=False) as h:
                start.wait(WAIT)
                for _ in range(20):
                    h.get_variable("n")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    owner.cleanup()
    assert errors == []


def test_a_bridged_session_knows_its_store_is_durable(
    server: SessionStoreServer, tmp_path: Any
) -> None:
    with BridgedState.init(address=server.address) as on_redis:
        assert (on_redis.store, on_redis.persistent) == ("redis", True)
    with serve() as memory, BridgedState.init(address=memory.address) as in_memory:
        assert (in_memory.store, in_memory.persistent) == ("memory", False)
    with (
        serve(store=f"sqlite:{tmp_path / 's.db'}") as sqlite,
        Supervisor.start(bridge_address=sqlite.address) as supervisor,
    ):
        context = supervisor.start_context(backend="bridged")
        assert context.backend_info()["capabilities"]["persistence"] is True
    assert BridgedState.capabilities()["persistence"] is False  # not for every server


# -- found by trying to break it ----------------------------------------------------------


def _reader_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("dspex-redis-events")]


def test_a_retried_register_answers_the_id_it_created(redis_url: str) -> None:
    sid = fresh_id()

    async def scenario() -> tuple[str, str, Any]:
        first, second = RedisStore(redis_url), RedisStore(redis_url)
        try:
            opened = await first.open(sid, create=True, metadata=None)
            register = _register_counter()
            one = await first.run(sid, register, request_id="reg-1", deadline=None)
            again = await second.run(sid, register, request_id="reg-1", deadline=None)
            record = await second.run(sid, GetVersioned(again), request_id=None, deadline=None)
            await first.close(sid, opened.incarnation)
            return one, again, record
        finally:
            await first.aclose()
            await second.aclose()

    one, again, record = asyncio.run(scenario())
    assert one == again
    assert record == (0, 0)


def test_a_retry_after_the_variable_changed_gets_the_first_answer(redis_url: str) -> None:
    """The write was applied and its reply lost; the variable is deleted before the
    retry comes: the retry is answered with the version, not VariableNotFound."""
    sid = fresh_id()

    async def scenario() -> int:
        store = RedisStore(redis_url)
        try:
            opened = await store.open(sid, create=True, metadata=None)
            await store.run(sid, _register_counter(), request_id=None, deadline=None)
            write = SetVariable("n", 5, None, 0)
            await store.run(sid, write, request_id="w-1", deadline=None)
            await store.run(sid, DeleteVariable("n"), request_id=None, deadline=None)
            again: int = await store.run(sid, write, request_id="w-1", deadline=None)
            await store.close(sid, opened.incarnation)
            return again
        finally:
            await store.aclose()

    assert asyncio.run(scenario()) == 1


def test_a_server_holding_an_ended_incarnation_applies_a_retry_once(redis_url: str) -> None:
    """Server A still holds a handle on a closed incarnation; a write without an
    incarnation reaches the new one, and its retry is answered, not applied again."""
    sid = fresh_id()

    async def scenario() -> tuple[int, int, tuple[Any, int]]:
        a, b = RedisStore(redis_url), RedisStore(redis_url)
        try:
            old = await a.open(sid, create=True, metadata=None)
            await b.close(sid, old.incarnation)
            new = await b.open(sid, create=True, metadata=None)
            await b.run(sid, _register_counter(), request_id=None, deadline=None)
            write = SetVariable("n", 9, None, None)
            one = await a.run(sid, write, request_id="r-1", deadline=None)
            two = await a.run(sid, write, request_id="r-1", deadline=None)
            now = await b.run(sid, GetVersioned("n"), request_id=None, deadline=None)
            await a.close(sid, None)  # the current incarnation, through the stale holder
            with pytest.raises(SessionNotFound):
                await b.info(sid)
            assert new.incarnation != old.incarnation
            return one, two, now
        finally:
            await a.aclose()
            await b.aclose()

    one, two, now = asyncio.run(scenario())
    assert (one, two, now) == (1, 1, (9, 1))


def test_watches_closed_unread_or_cancelled_leave_no_reader(redis_url: str) -> None:
    sid = fresh_id()

    async def scenario() -> list[str]:
        store = RedisStore(redis_url)
        try:
            opened = await store.open(sid, create=True, metadata=None)
            unread = await store.watch(sid, [], None)
            await unread.aclose()
            joining = asyncio.ensure_future(store.watch(sid, [], None))
            await asyncio.sleep(0)  # a yield: it has started (or not); either way
            joining.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await joining
            read = await store.watch(sid, [], None)
            await store.run(sid, _register_counter(), request_id=None, deadline=None)
            assert _event(await read.__anext__()).kind == "registered"
            await read.aclose()
            await store.close(sid, opened.incarnation)
            return _reader_threads()
        finally:
            await store.aclose()

    assert asyncio.run(scenario()) == []  # each reader stopped with its last watcher
    assert _reader_threads() == []


def test_stopping_a_server_with_watchers_leaves_no_reader(redis_url: str) -> None:
    sids = [fresh_id() for _ in range(6)]
    recorders = []
    handles = []
    with serve(store=redis_url) as server:
        for sid in sids:
            handle = BridgedState.init(session_id=sid, address=server.address)
            recorder = EventRecorder(WAIT, sid)
            handle.subscribe(None, recorder)
            handles.append(handle)
            recorders.append(recorder)
        for handle in handles:
            handle.register_variable("n", "integer", 0)  # every reader is up: it got this
        for recorder in recorders:
            recorder.wait_for("n", change("n", 0))
        server.stop(grace=None)  # streams are cut, not ended: clients would reconnect
        assert _reader_threads() == []
    for handle in handles:
        handle.cleanup()


def test_many_watched_sessions_share_one_reader_thread_and_connection(
    redis_url: str, raw: Any
) -> None:
    """Twenty sessions watched through one server: each watcher gets its own
    session's events, all read by one thread on one Redis connection (not one of each
    per session), which ends with the last watch."""
    with serve(store=redis_url) as server:
        handles = [BridgedState.init(address=server.address) for _ in range(20)]
        recorders = [EventRecorder(WAIT, handle.session_id) for handle in handles]
        try:
            for handle, recorder in zip(handles, recorders, strict=True):
                handle.subscribe(None, recorder)
            for n, handle in enumerate(handles):
                handle.register_variable("n", "integer", 0)
                handle.set_variable("n", n + 1)
            for n, recorder in enumerate(recorders):
                events = recorder.wait_for("n", change("n", 1))
                assert [(e.session_id, e.value) for e in events] == [
                    (handles[n].session_id, 0),
                    (handles[n].session_id, n + 1),
                ]
            assert _reader_threads() == [READER_NAME]
            named = [c for c in raw.client_list() if c.get("name") == READER_NAME]
            assert len(named) == 1
        finally:
            for handle in handles:
                handle.cleanup()  # closes each session: its watch ends, then the reader
    assert _reader_threads() == []


def test_an_unreadable_entry_costs_its_own_watchers_an_overflow_and_no_one_else(
    redis_url: str, raw: Any
) -> None:
    """A stream entry this version cannot read (a kind it does not know) in one
    watched session: that session's watcher gets ``overflow`` (then what comes
    after); the other sessions, read by the same reader, miss nothing."""
    bad, goods = fresh_id(), [fresh_id() for _ in range(12)]

    async def scenario() -> tuple[list[Event], list[Event]]:
        store = RedisStore(redis_url)
        watches = []
        try:
            opened = await store.open(bad, create=True, metadata=None)
            for sid in goods:
                await store.open(sid, create=True, metadata=None)
            watches = [await store.watch(sid, [], None) for sid in [bad, *goods]]
            info = await store.info(bad)
            events_key = session_keys(bad, opened.incarnation)[-1]
            raw.xadd(events_key, {"k": "renamed", "n": "n"}, id=f"{info.next_sequence}-0")
            session_key = session_keys(bad, opened.incarnation)[0]
            raw.hincrby(session_key, "next_seq", 1)  # as a writer of that entry would
            for sid in goods:
                await store.run(sid, _register_counter(), request_id=None, deadline=None)
            firsts = [_event(await asyncio.wait_for(w.__anext__(), WAIT)) for w in watches[1:]]
            mine = [_event(await asyncio.wait_for(watches[0].__anext__(), WAIT))]
            await store.run(bad, _register_counter(), request_id=None, deadline=None)
            mine.append(_event(await asyncio.wait_for(watches[0].__anext__(), WAIT)))
            return firsts, mine
        finally:
            for watch in watches:
                await watch.aclose()
            for sid in [bad, *goods]:
                await store.close(sid, None)
            await store.aclose()

    firsts, mine = asyncio.run(scenario())
    assert [(e.session_id, e.kind) for e in firsts] == [(sid, "registered") for sid in goods]
    assert [(e.kind, e.sequence) for e in mine] == [("overflow", 0), ("registered", 2)]


def test_a_follower_unfollowed_by_its_own_callback_gets_nothing_more(redis_url: str) -> None:
    """``unfollow`` from the delivery callback: the rest of the batch being
    delivered does not reach it (another follower of the stream gets it all)."""
    handle = RedisState.init(url=redis_url)
    follower = StreamFollower(redis_url, 5.0)
    got: list[int] = []
    mine: list[Any] = []
    done = threading.Event()

    def deliver(event: Event, _cursor: int) -> None:
        got.append(event.sequence)
        follower.unfollow(mine[0])

    try:
        handle.register_variable("n", "integer", 0)
        for value in range(1, 6):
            handle.set_variable("n", value)  # sequences 1 to 6: one batch
        mine.append(follower.follow(handle.session_id, handle.incarnation, 1, deliver))
        follower.follow(
            handle.session_id,
            handle.incarnation,
            1,
            lambda event, _cursor: done.set() if event.sequence == 6 else None,
        )
        assert done.wait(WAIT)
    finally:
        follower.close()
        handle.cleanup()
    assert got == [1]


def test_a_watcher_resuming_past_the_history_of_an_idle_session_gets_overflow(
    redis_url: str,
) -> None:
    sid = fresh_id()

    async def scenario() -> list[tuple[str, int]]:
        store = RedisStore(redis_url, event_history=2)
        try:
            opened = await store.open(sid, create=True, metadata=None)
            await store.run(sid, _register_counter(), request_id=None, deadline=None)
            for value in range(1, 300):  # Redis trims whole stream nodes: write plenty
                await store.run(
                    sid, SetVariable("n", value, None, None), request_id=None, deadline=None
                )
            watch = await store.watch(sid, [], 1)
            first = _event(await asyncio.wait_for(watch.__anext__(), WAIT))
            await watch.aclose()
            await store.close(sid, opened.incarnation)
            return [(first.kind, first.sequence)]
        finally:
            await store.aclose()

    assert asyncio.run(scenario()) == [("overflow", 0)]


def _event(item: Event | Progress) -> Event:
    """A watch's item, which is an event (a watch asked for no progress)."""
    assert isinstance(item, Event), item
    return item
