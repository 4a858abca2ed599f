"""Change streaming beyond the kit: overflow, resumption, migration, the cache, processes.

The compliance kit proves ordering and delivery on every backend; these tests prove
what needs a backend's knobs or several parts: a subscriber that stops reading
gets one overflow event while writers go on; a Watch stream broken mid-way resumes
without a gap or a repeat; a Context's subscription crosses the switch to the
bridge with every event once; and a cached handle in one process sees another
process's write.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from bridge_support import python_env

from dspex_actors import LocalState, Supervisor, failpoints, serve
from dspex_actors.bridge import BridgedState
from dspex_actors.bridge.client.cache import ABSENT, MISS, RecordCache
from dspex_actors.errors import BridgeUnavailable, SessionClosed, StateError
from dspex_actors.limits import Limits
from dspex_actors.records import VariableRecord
from dspex_actors.streaming import Event
from dspex_actors.wire import keepalive

WAIT = 30.0  # a hang guard for waits that end at once when all is well


class Inbox:
    """Events a subscriber received, waited on with a condition (never a sleep)."""

    def __init__(self, hold: threading.Event | None = None) -> None:
        self.events: list[Event] = []
        self._changed = threading.Condition()
        self._hold = hold
        self.first = threading.Event()

    def __call__(self, event: Event) -> None:
        self.first.set()
        if self._hold is not None:
            assert self._hold.wait(WAIT), "the test never released the subscriber"
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    def wait_for(self, done: Callable[[list[Event]], bool]) -> list[Event]:
        with self._changed:
            assert self._changed.wait_for(lambda: done(self.events), WAIT), self.events[-5:]
            return list(self.events)


def _at_least(version: int) -> Callable[[list[Event]], bool]:
    return lambda events: bool(events) and (events[-1].version or 0) >= version


def _last_version(version: int) -> Callable[[list[Event]], bool]:
    return lambda events: bool(events) and events[-1].version == version


def test_a_subscriber_that_stops_reading_gets_one_overflow_and_writers_go_on() -> None:
    hold = threading.Event()
    inbox = Inbox(hold)
    with LocalState.init(event_history=10) as state:
        state.register_variable("x", "integer", 0)
        with state.subscribe("x", inbox):
            state.set_variable("x", 1)
            assert inbox.first.wait(WAIT)  # the subscriber is stuck on its first event
            for i in range(2, 61):  # six times the history, while it is stuck
                assert state.set_variable("x", i) == i  # writers are never held
            hold.set()
            inbox.wait_for(lambda got: "overflow" in [e.kind for e in got])
            state.set_variable("x", 61)  # after the overflow it goes on from the present
            events = inbox.wait_for(_last_version(61))
    kinds = [e.kind for e in events]
    assert kinds[0] == "updated" and events[0].version == 1
    assert kinds.count("overflow") == 1
    overflow = events[kinds.index("overflow")]
    assert overflow.sequence == events[0].sequence  # the last one it was given
    after = events[kinds.index("overflow") + 1 :]
    first = after[0].version
    assert first is not None
    assert [e.version for e in after] == list(range(first, 62))
    print(f"overflow after version {events[0].version}; resumed at {after[0].version}")


def test_a_remote_subscriber_that_stops_reading_gets_overflow_from_the_server() -> None:
    hold = threading.Event()
    inbox = Inbox(hold)
    chunk = "x" * 60_000  # large events fill the stream's buffers sooner
    with (
        serve(event_history=10) as server,
        BridgedState.init(address=server.address) as state,
    ):
        state.register_variable("x", "string", "")
        with state.subscribe(None, inbox):
            state.set_variable("x", "0" + chunk)
            assert inbox.first.wait(WAIT)
            for i in range(1, 400):  # 24 MB: past every buffer, then past the history
                state.set_variable("x", f"{i}{chunk}")
            hold.set()
            inbox.wait_for(lambda got: "overflow" in [e.kind for e in got])
            state.set_variable("x", "end")
            events = inbox.wait_for(lambda got: bool(got) and got[-1].value == "end")
    versions = [e.version or 0 for e in events if e.kind == "updated"]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)


def test_a_broken_watch_stream_resumes_without_a_gap_or_a_repeat() -> None:
    inbox = Inbox()
    breaks = [0]

    def break_every_97th() -> None:
        breaks[0] += 1
        if breaks[0] % 97 == 0:
            raise RuntimeError("the stream breaks here")

    with (
        serve() as server,
        BridgedState.init(address=server.address) as state,
        failpoints.enabled("watch.event", break_every_97th),
    ):
        state.register_variable("x", "integer", 0)
        subscription = state.subscribe("x", inbox)
        for i in range(1, 1001):
            state.set_variable("x", i)
        events = inbox.wait_for(_last_version(1000))
        reconnects = subscription.reconnects
        subscription.close()
    assert [e.version for e in events] == list(range(1, 1001))
    sequences = [e.sequence for e in events]
    assert sequences == list(range(sequences[0], sequences[0] + 1000))
    assert reconnects >= 9
    print(f"1000 events through {reconnects} broken streams: lost 0, repeated 0")


def test_a_watch_whose_connection_a_proxy_cuts_resumes_with_no_gap() -> None:
    """The connection itself is cut (a TCP proxy closes it) several times while
    events flow; the subscription reconnects and resumes from its last sequence."""
    from tcp_proxy import TcpProxy

    inbox = Inbox()
    with serve() as server, TcpProxy(server.address) as proxy:
        writer = BridgedState.init(address=server.address)
        watcher = BridgedState.init(session_id=writer.session_id, address=proxy.address)
        try:
            writer.register_variable("x", "integer", 0)
            subscription = watcher.subscribe("x", inbox)
            for i in range(1, 601):
                writer.set_variable("x", i)
                if i % 150 == 0:
                    inbox.wait_for(_at_least(i - 100))
                    proxy.cut()  # mid-stream: some events are in flight, more will come
            events = inbox.wait_for(_last_version(600))
            reconnects = subscription.reconnects
            subscription.close()
        finally:
            watcher.cleanup()
            writer.cleanup()
    assert [e.version for e in events] == list(range(1, 601))
    assert reconnects >= 1  # a cut while the stream was between events still reconnects
    print(f"600 events through {reconnects} cut connections: lost 0, repeated 0")


def test_watchers_hear_closed_when_the_session_closes() -> None:
    inbox = Inbox()
    with serve() as server:
        state = BridgedState.init(address=server.address)
        subscription = state.subscribe(None, inbox)
        state.register_variable("x", "integer", 0)
        state.cleanup()  # the owner closes the session
        events = inbox.wait_for(lambda got: bool(got) and got[-1].kind == "closed")
        subscription.close()
    assert [e.kind for e in events] == ["registered", "closed"]


def test_a_watch_never_crosses_into_a_new_session_of_the_same_id() -> None:
    """A memory-store server is killed (its sessions gone, no closed sent) and started
    again on its port; another client opens the same session id and writes. The old
    subscriber, reopening its watch, names the incarnation it follows: it gets
    ``closed``, never an event of the newcomer's session. Ten runs, whichever comes
    first, the reopened watch or the newcomer."""
    from bridge_support import killable_server

    crossed = 0
    for _ in range(10):
        inbox = Inbox()
        with killable_server() as (first, address):
            state = BridgedState.init(address=address, timeout=WAIT)
            state.register_variable("x", "integer", 0)
            subscription = state.subscribe(None, inbox)
            state.set_variable("x", 1)
            inbox.wait_for(_last_version(1))
            first.kill()
            first.wait(WAIT)
        try:
            with killable_server("--listen", address) as (_, again):
                assert again == address
                with BridgedState.init(session_id=state.session_id, address=address) as newcomer:
                    newcomer.register_variable("y", "integer", 100)
                    for value in range(101, 111):
                        newcomer.set_variable("y", value)
                    events = inbox.wait_for(lambda got: got[-1].kind == "closed")
        finally:
            subscription.close()
            state.cleanup()
        crossed += sum(1 for event in events if event.name == "y")
        assert [e.kind for e in events] == ["updated", "closed"], events
    assert crossed == 0


def test_watches_never_take_the_stream_slots_calls_need() -> None:
    """A server taking 3 streams per connection (it says so when a session opens):
    a handle's calls still run beside its 5 watches, which go on two connections of
    their own, and every watch delivers; one closed, a new one takes its place."""
    with serve(limits=Limits(max_calls_per_connection=3)) as server:
        state = BridgedState.init(address=server.address, timeout=WAIT, stream=False)
        try:
            inboxes = [Inbox() for _ in range(5)]
            subscriptions = [state.subscribe(None, inbox) for inbox in inboxes]
            state.register_variable("x", "integer", 0)  # beside five open watches
            subscriptions.pop().close()
            inboxes[-1] = Inbox()
            subscriptions.append(state.subscribe(None, inboxes[-1]))
            _each_hears_a_write(state, inboxes, subscriptions)
        finally:
            state.cleanup()


def test_subscribe_to_an_unreachable_server_raises_and_leaves_nothing() -> None:
    """The server is gone: ``subscribe`` (from a given sequence, so it makes no
    other call) raises BridgeUnavailable within the handle's timeout, not a
    subscription that keeps reconnecting in the background."""
    server = serve()
    state = BridgedState.init(address=server.address, timeout=1.0)
    server.stop()
    try:
        before = _watch_threads()
        with pytest.raises(BridgeUnavailable, match="did not start the watch"):
            state.subscribe(None, Inbox(), start=0)
        assert _watch_threads() == before
    finally:
        state.cleanup()


def test_a_cleaned_up_handle_opens_no_watch() -> None:
    with serve() as server:
        owner = BridgedState.init(address=server.address)
        watcher = BridgedState.init(
            session_id=owner.session_id, address=server.address, max_message_bytes=8 << 20
        )  # settings of its own: a channel of its own, released by its cleanup
        watcher.cleanup()
        with pytest.raises(SessionClosed):
            watcher.subscribe(None, Inbox(), start=0)
        owner.cleanup()


def _each_hears_a_write(
    state: BridgedState, inboxes: list[Inbox], subscriptions: list[Any]
) -> None:
    """Set ``x`` to 1: every inbox hears it; then close every subscription."""
    state.set_variable("x", 1)
    for inbox in inboxes:
        inbox.wait_for(_last_version(1))
    for subscription in subscriptions:
        subscription.close()


def _watch_threads() -> int:
    return sum(t.name.startswith("dspex-watch-") for t in threading.enumerate())


def test_a_context_subscription_crosses_the_switch_with_every_event_once() -> None:
    inbox = Inbox()
    with Supervisor.start() as sup:
        ctx = sup.start_context()
        subscription = ctx.subscribe(None, inbox)
        ctx.register_variable("t", "integer", 0)
        halfway = threading.Event()

        def writer() -> None:
            for i in range(1, 1001):
                ctx.set_variable("t", i)
                if i == 300:
                    halfway.set()

        thread = threading.Thread(target=writer)
        thread.start()
        assert halfway.wait(WAIT)
        ctx.ensure_bridged()  # while the writer goes on
        thread.join()
        assert ctx.backend_info()["type"] == "bridged"
        events = inbox.wait_for(_last_version(1000))
        subscription.close()
    assert [e.version for e in events] == list(range(1001))  # registered 0, then 1..1000
    assert [e.sequence for e in events] == list(range(1, 1002))
    print(f"{len(events)} events across the switch: lost 0, repeated 0")


def test_a_cached_handle_reads_locally_sees_its_own_writes_and_others() -> None:
    with serve() as server:
        writer = BridgedState.init(address=server.address)
        cached = BridgedState.init(
            session_id=writer.session_id, address=server.address, cache=True
        )
        try:
            writer.register_variable("t", "float", 0.5)
            cached.sync_cache()
            assert cached.cached and cached.get_variable("t") == 0.5
            for i in range(50):  # read-your-writes, every time
                version = cached.set_variable("t", i / 100)
                assert cached.get_variable("t") == i / 100
                assert cached.get_record("t").version == version
            writer.set_variable("t", 1.5)
            cached.sync_cache()
            assert cached.get_variable("t") == 1.5
            assert [r["name"] for r in cached.list_variables("t*")] == ["t"]
            cached.delete_variable("t")
            with pytest.raises(StateError):
                cached.get_variable("t")
        finally:
            cached.cleanup()
            writer.cleanup()


def test_a_cached_batch_reads_its_own_write_while_its_event_is_held() -> None:
    """A batch answers the session's next sequence, not versions: until the copy has
    taken in the events before it, reads of its entries go to the server. Held here
    (the server's Watch waits before each event), so the copy is surely behind."""
    release = threading.Event()

    async def hold() -> None:
        await asyncio.get_running_loop().run_in_executor(None, release.wait)

    with serve() as server, BridgedState.init(address=server.address, cache=True) as cached:
        cached.register_variable("x", "integer", 0)
        cached.sync_cache()
        try:
            with failpoints.enabled("watch.event", hold):
                cached.update_variables({"x": 1})
                assert cached.get_variable("x") == 1  # from the server: the copy is behind
                assert cached.get_variables(["x"]) == {"x": 1}
                assert [r["value"] for r in cached.list_variables()] == [1]
        finally:
            release.set()
        cached.sync_cache()
        assert cached.get_variable("x") == 1 and cached.cached


def _sync_after_a_thaw(cached: BridgedState) -> None:
    """``sync_cache`` once the channel has its connection back: gRPC reconnects on its
    own schedule after a long freeze, so each attempt until then is unavailable."""
    deadline = time.monotonic() + WAIT
    while True:
        try:
            cached.sync_cache(WAIT)
            return
        except BridgeUnavailable:
            if time.monotonic() > deadline:
                raise


def test_a_frozen_link_stops_a_cached_handle_from_answering_from_its_copy() -> None:
    """A link that stops passing packets never looks down by itself: keepalive gives
    it up (within ``keepalive.LIVENESS_BOUND``), and from then on no read answers from
    the copy the frozen link can no longer refresh: each goes to the server and is
    ``BridgeUnavailable`` while frozen — at least 1,000 reads, and reading on until the
    link has been frozen 20 s (the channel keeps trying to reconnect meanwhile).
    After the thaw the copy serves again, fresh."""
    from tcp_proxy import TcpProxy

    reads, frozen_seconds = 1000, 20.0
    with serve() as server, TcpProxy(server.address) as proxy:
        writer = BridgedState.init(address=server.address)
        cached = BridgedState.init(
            session_id=writer.session_id, address=proxy.address, cache=True, timeout=0.2
        )
        try:
            writer.register_variable("x", "integer", 1)
            cached.sync_cache()
            assert cached.get_variable("x") == 1 and cached.cached
            cache = cached._cache
            assert cache is not None
            frozen_at = time.monotonic()
            proxy.freeze()
            writer.set_variable("x", 2)  # the frozen link never brings its event
            assert cache.wait_down(WAIT)
            detected = time.monotonic() - frozen_at

            answers: list[Any] = []
            taken = threading.Lock()

            def read() -> None:  # until `reads` reads and `frozen_seconds` of freeze
                while True:
                    with taken:
                        if (
                            len(answers) >= reads
                            and time.monotonic() >= frozen_at + frozen_seconds
                        ):
                            return
                    try:
                        answer = cached.get_variable("x")
                    except BridgeUnavailable:
                        answer = BridgeUnavailable
                    with taken:
                        answers.append(answer)

            reading = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(10) as readers:  # 0.2 s each
                for done in [readers.submit(read) for _ in range(10)]:
                    done.result()
            frozen_for = time.monotonic() - frozen_at
            read_for = time.monotonic() - reading
            proxy.thaw()
            _sync_after_a_thaw(cached)
            assert cached.get_variable("x") == 2 and cached.cached
        finally:
            proxy.thaw()
            cached.cleanup()
            writer.cleanup()
    stale = sum(1 for answer in answers if answer is not BridgeUnavailable)
    print(
        f"frozen link given up after {detected:.2f} s (bound {keepalive.LIVENESS_BOUND} s); "
        f"then {len(answers)} reads over {read_for:.1f} s ({frozen_for:.1f} s frozen): "
        f"{stale} stale"
    )
    assert len(answers) >= reads
    assert set(answers) == {BridgeUnavailable}  # not one stale 1


def test_a_cached_handle_is_cached_as_soon_as_it_is_opened() -> None:
    """``init(cache=True)`` returns with the copy loaded: ``cached`` is True at once
    (it used to be False until ``sync_cache()``)."""
    with serve() as server:
        writer = BridgedState.init(address=server.address)
        try:
            writer.register_variable("x", "integer", 1)
            with BridgedState.init(
                session_id=writer.session_id, address=server.address, cache=True
            ) as cached:
                assert cached.cached
                assert cached.get_variable("x") == 1
        finally:
            writer.cleanup()


def test_a_cache_on_a_session_with_history_syncs_and_batches_read_their_own_writes() -> None:
    with serve() as server:
        writer = BridgedState.init(address=server.address)
        try:
            writer.register_variable("x", "integer", 0)
            for i in range(1, 6):
                writer.set_variable("x", i)  # history before the cached handle comes
            with BridgedState.init(
                session_id=writer.session_id, address=server.address, cache=True
            ) as cached:
                cached.sync_cache()  # nothing new since: it must not wait for an event
                assert cached.get_variable("x") == 5
                cached.update_variables({"x": 6})
                assert cached.get_variable("x") == 6  # its own batch, at once
                assert cached.get_record("x").version == 6
        finally:
            writer.cleanup()


WRITER = """
import sys
from dspex_actors.bridge import BridgedState
from dspex_actors.bridge.client.cache import ABSENT, MISS, RecordCache
from dspex_actors.records import VariableRecord
with BridgedState.init(session_id=sys.argv[1], create=False) as state:
    state.set_variable("temperature", 1.25)
"""


def test_two_processes_one_writes_the_others_cached_handle_sees_it() -> None:
    with serve() as server:
        cached = BridgedState.init(address=server.address, cache=True)
        try:
            cached.register_variable("temperature", "float", 0.7)
            assert cached.get_variable("temperature") == 0.7
            subprocess.run(
                [sys.executable, "-c", WRITER, cached.session_id],
                env=python_env(DSPEX_BRIDGE_ADDRESS=server.address),
                check=True,
                timeout=60,
            )
            cached.sync_cache()  # the other process's write has returned
            assert cached.cached
            assert cached.get_variable("temperature") == 1.25
        finally:
            cached.cleanup()


def test_a_cache_answers_nothing_while_its_stream_is_down() -> None:
    """The model at its edges, on the cache itself: down (or behind after an
    overflow) means every read goes to the server; a re-read brings it back."""
    listing: list[dict[str, Any]] = []
    cache = RecordCache(
        "s", lambda: list(listing), lambda var_id: VariableRecord.from_dict(listing[0])
    )
    listing.append(
        {
            "id": "var_x",
            "name": "x",
            "type": "integer",
            "value": 0,
            "constraints": {},
            "metadata": {},
            "version": 0,
            "created_at": 1.0,
            "last_updated_at": 1.0,
        }
    )
    assert cache.value("x") is MISS  # not connected yet
    cache.connected()
    assert cache.value("x") == 0 and cache.value("y") is ABSENT
    update = Event("s", 2, "updated", "var_x", "x", 5, 1, {}, 2.0)
    cache.on_event(update)
    assert cache.value("x") == 5
    cache.disconnected()
    assert cache.value("x") is MISS and cache.listing(None) is MISS
    assert cache.values(["x"]) is MISS and cache.record("x") is MISS
    listing[0] = {**listing[0], "value": 9, "version": 3}
    cache.connected()  # re-read on reconnection: the listing wins over older events
    cache.on_event(update)  # an old event arriving late changes nothing
    assert cache.value("x") == 9
    cache.expect("x", 4)  # this handle wrote version 4: until its event, the server
    assert cache.value("x") is MISS
    cache.on_event(Event("s", 5, "updated", "var_x", "x", 11, 4, {}, 3.0))
    assert cache.value("x") == 11
    cache.on_event(Event("s", 5, "overflow"))
    assert cache.value("x") == 9  # overflow re-reads at once (the listing says 9 now)
    cache.on_event(Event("s", 6, "closed"))
    assert cache.value("x") is MISS


def test_subscribers_of_two_kinds_and_one_that_raises(caplog: pytest.LogCaptureFixture) -> None:
    import pykka

    class Recorder(pykka.ThreadingActor):
        def __init__(self, inbox: Inbox) -> None:
            super().__init__()
            self.inbox = inbox

        def on_receive(self, message: Any) -> None:
            self.inbox(message)

    told, called, tried = Inbox(), Inbox(), Inbox()

    def broken(event: Event) -> None:
        tried(event)
        raise ValueError("a subscriber's bug")

    actor = Recorder.start(told)
    try:
        with (
            LocalState.init() as state,
            state.subscribe(None, actor),
            state.subscribe(None, broken),
            state.subscribe(None, called),
        ):
            state.register_variable("x", "integer", 0)
            for i in range(1, 11):
                state.set_variable("x", i)
            told.wait_for(_last_version(10))
            called.wait_for(_last_version(10))
            assert len(tried.wait_for(_last_version(10))) == 11  # it kept receiving
    finally:
        actor.stop()
    assert (
        sum(
            "a subscriber's bug" in r.getMessage() or r.exc_info is not None
            for r in caplog.records
        )
        >= 1
    )


def test_a_watch_not_opened_yet_tells_its_start_as_its_position() -> None:
    """A Context's new backend's watch starts at the switch's cut and opens on its
    first read: until then it tells the cut, so leaving the subscription drains from
    there (it told None, and a subscription left in that window dropped the events
    written after the switch: examples/supervised_app.py, 1 run in 12)."""
    from dspex_actors.bridge.client.watch import WatchSource

    def never_opened(request: Any) -> Any:
        raise AssertionError("a position needs no stream")

    source = WatchSource(
        never_opened, "s", None, 7, "inc", 1 << 20, timeout=1.0, address="127.0.0.1:1"
    )
    assert source.position == 7


@pytest.mark.parametrize("kind", ["local", "bridged", "redis", "context"])
def test_leaving_a_subscription_with_nothing_pending_waits_for_no_read(
    kind: str, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    """A subscription knows where its source starts: with no write since, it has
    nothing to deliver and leaves at once. Asked to drain within no time at all, it
    reports nothing undelivered (it used to wait for its first read to come back,
    a whole read period: one second per idle unsubscribe)."""
    with contextlib.ExitStack() as stack:
        if kind == "local":
            state: Any = stack.enter_context(LocalState.init())
        elif kind == "bridged":
            state = stack.enter_context(BridgedState.init())
        elif kind == "redis":
            from dspex_actors import RedisState

            state = stack.enter_context(RedisState.init(url=request.getfixturevalue("redis_url")))
        else:
            state = stack.enter_context(Supervisor.start()).start_context()
        state.register_variable("temperature", "float", 0.5)
        for _ in range(3):
            subscription = state.subscribe("temperature", lambda event: None)
            with caplog.at_level("WARNING", logger="dspex_actors.delivery"):
                subscription.close(timeout=0)
            assert "not all delivered" not in caplog.text
