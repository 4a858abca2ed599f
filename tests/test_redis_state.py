"""RedisState against a real redis-server: the compliance kit, two processes sharing a
session, expiry by Redis, failures of the connection, persistence, and a latency figure.

One ``redis-server`` serves the whole run (``redis_server`` below: a free loopback
port, no RDB, no AOF, a temporary directory, stopped after); tests that restart or
break a server start their own. Waits are on conditions (events, readiness lines);
the only timed figure is printed, never asserted.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bridge_support import python_env
from redis_support import free_port, redis_server, session_key_names

from dspex_actors.errors import (
    BridgeUnavailable,
    OutcomeUnknown,
    PartialFailure,
    SessionClosed,
    SessionNotFound,
    Unauthenticated,
    ValidationError,
    VariableExists,
    VersionConflict,
)
from dspex_actors.redis.scripts import session_keys
from dspex_actors.redis.state import URL_ENV, RedisState
from dspex_actors.supervision import Supervisor
from dspex_actors.testing import StateProviderContract
from dspex_actors.testing.streaming import EventRecorder, change
from dspex_actors.urls import redacted

redis = pytest.importorskip("redis", reason="redis-py is not installed (pip install -e '.[dev]')")

WAIT = 30.0  # a hang guard for waits that end at once when all is well


@pytest.fixture
def open_redis(redis_url: str) -> Iterator[Callable[..., RedisState]]:
    """``open_redis(**init_kwargs)``: a handle on the shared server, cleaned up after."""
    opened: list[RedisState] = []

    def open_(**kwargs: Any) -> RedisState:
        kwargs.setdefault("url", redis_url)
        state = RedisState.init(**kwargs)
        opened.append(state)
        return state

    yield open_
    for state in reversed(opened):
        state.cleanup()


# -- the contract ---------------------------------------------------------------------


class TestRedisStateCompliance(StateProviderContract):
    provider = RedisState

    @pytest.fixture
    def provider_options(self, redis_url: str) -> dict[str, Any]:
        return {"url": redis_url}


# -- two processes ----------------------------------------------------------------------

_CHILD = """
import json, sys
from dspex_actors import RedisState, VersionConflict

session_id, url = sys.argv[1], sys.argv[2]
state = RedisState.init(session_id=session_id, url=url, create=False)
state.set_variable("x", 1, {"by": "child"})
print(json.dumps({"version": state.get_record("x").version}), flush=True)
sys.stdin.readline()  # the parent has written x meanwhile
try:
    state.set_variable("x", 100, expected_version=1)
    outcome = {"applied": True}
except VersionConflict as exc:
    outcome = {"expected": exc.expected, "actual": exc.actual}
state.register_variable("from_child", "string", "hello")
print(json.dumps(outcome), flush=True)
state.cleanup()  # detaches: the session is the parent's
"""


def test_two_processes_share_writes_conflicts_and_events(
    open_redis: Callable[..., RedisState],
) -> None:
    owner = open_redis()
    owner.register_variable("x", "integer", 0)
    seen = owner.get_record("x").version  # 0: the parent's compare-and-set reads this
    recorder = EventRecorder(WAIT, "parent")
    with owner.subscribe(None, recorder):
        with subprocess.Popen(
            [sys.executable, "-c", _CHILD, owner.session_id, owner.url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=python_env(),
        ) as child:
            assert child.stdin is not None and child.stdout is not None
            assert json.loads(child.stdout.readline()) == {"version": 1}
            recorder.wait_for("the child's write", change("x", 1, "updated"))
            assert owner.get_variable("x") == 1

            # The parent's compare-and-set on what it read before loses to the child's.
            with pytest.raises(VersionConflict) as info:
                owner.set_variable("x", 5, expected_version=seen)
            assert (info.value.expected, info.value.actual) == (0, 1)
            assert owner.set_variable("x", 2, expected_version=1) == 2

            # The child's compare-and-set on its own read loses to the parent's write.
            child.stdin.write("\n")
            child.stdin.flush()
            assert json.loads(child.stdout.readline()) == {"expected": 1, "actual": 2}
            assert child.wait(WAIT) == 0
        events = recorder.wait_for("the child's registration", change("from_child", 0))
    got = [(e.kind, e.name, e.version, e.value) for e in events]
    assert got == [
        ("updated", "x", 1, 1),
        ("updated", "x", 2, 2),
        ("registered", "from_child", 0, "hello"),
    ]
    assert events[0].metadata == {"by": "child"}
    assert [e.sequence for e in events] == list(range(events[0].sequence, events[0].sequence + 3))
    assert owner.get_variables(["x", "from_child"]) == {"x": 2, "from_child": "hello"}


def test_a_write_made_by_another_handle_is_validated_by_the_stored_definition(
    open_redis: Callable[..., RedisState],
) -> None:
    first = open_redis()
    first.register_variable("knob", "integer", 1, constraints={"max": 10})
    second = open_redis(session_id=first.session_id, create=False)
    assert not second.owner
    with pytest.raises(ValidationError) as info:
        second.set_variable("knob", 11)
    assert (info.value.variable, info.value.rule, info.value.value) == ("knob", "max", 11)
    assert first.set_variable("knob", 2) == 1  # the first handle caches the definition

    # The variable is replaced under the same name: the cached definition is caught.
    second.delete_variable("knob")
    second.register_variable("knob", "string", "a", constraints={"max_length": 3})
    with pytest.raises(ValidationError) as info:
        first.set_variable("knob", 3)
    assert info.value.rule == "type"
    assert first.set_variable("knob", "abc") == 1
    with pytest.raises(PartialFailure) as batch:
        first.update_variables({"knob": "abcd"})
    error = batch.value.errors["knob"]
    assert isinstance(error, ValidationError) and error.rule == "max_length"
    assert second.get_record("knob").value == "abc"


def test_metadata_merges_from_two_handles_lose_nothing(
    open_redis: Callable[..., RedisState],
) -> None:
    first = open_redis()
    first.register_variable("v", "integer", 0, metadata={"base": True})
    second = open_redis(session_id=first.session_id, create=False)
    rounds = 30

    def writer(state: RedisState, who: str) -> Callable[[], None]:
        def run() -> None:
            for i in range(rounds):
                state.set_variable("v", i, {f"{who}{i}": i})

        return run

    threads = [threading.Thread(target=writer(s, w)) for s, w in ((first, "a"), (second, "b"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    record = first.get_record("v")
    assert record.version == 2 * rounds
    expected = {"base": True, **{f"{w}{i}": i for w in "ab" for i in range(rounds)}}
    assert record.metadata == expected


# -- sessions: ownership, expiry, keys -----------------------------------------------------


def test_the_url_may_come_from_the_environment_and_a_supervisor_runs_on_it(
    redis_url: str, raw: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(URL_ENV, redis_url)
    with Supervisor.start() as supervisor:
        context = supervisor.start_context(backend=RedisState)
        context.register_variable("t", "float", 0.5, constraints={"max": 1.0})
        with pytest.raises(ValidationError):
            context.set_variable("t", 2.0)
        assert context.get_record("t").value == 0.5
        session_id = context.session_id
        assert len(session_key_names(raw, session_id)) > 1
    # The supervisor's stop cleaned the session up: only the tombstone stream is left.
    assert len(session_key_names(raw, session_id)) == 1


def test_bad_options_are_refused_before_anything_is_opened(redis_url: str) -> None:
    with pytest.raises(TypeError, match="address"):
        RedisState.init(url=redis_url, address="127.0.0.1:1")
    with pytest.raises(ValidationError):
        RedisState.init(url=redis_url, session_id="")
    with pytest.raises(ValueError, match="ttl"):
        RedisState.init(url=redis_url, ttl=0)
    with pytest.raises(ValueError, match="timeout"):
        RedisState.init(url=redis_url, timeout=-1)
    with pytest.raises(ValueError, match="event_history"):
        RedisState.init(url=redis_url, event_history=0)


def test_owner_deletes_attached_handles_detach(
    open_redis: Callable[..., RedisState], raw: Any
) -> None:
    with pytest.raises(SessionNotFound):
        open_redis(session_id="never-opened", create=False)
    owner = open_redis()
    owner.register_variable("a", "integer", 1)
    attached = open_redis(session_id=owner.session_id)
    assert owner.owner and not attached.owner
    assert attached.incarnation == owner.incarnation
    attached.cleanup()
    with pytest.raises(SessionClosed):
        attached.get_variable("a")
    assert owner.get_variable("a") == 1

    other = open_redis(session_id=owner.session_id, create=False)
    owner.cleanup()
    with pytest.raises(SessionNotFound):
        other.get_variable("a")
    # Only the event stream stays, a tombstone that expires, so late readers see `closed`.
    keys = session_key_names(raw, owner.session_id)
    assert keys == [session_keys(owner.session_id, owner.incarnation)[-1].encode()]
    assert 0 < raw.pttl(keys[0]) <= 60_000

    # The id can be opened again: a new incarnation, which the old handle never touches.
    again = open_redis(session_id=owner.session_id)
    assert again.owner and again.incarnation != owner.incarnation
    with pytest.raises(SessionNotFound):
        other.register_variable("b", "integer", 1)
    assert again.list_variables() == []


def test_keys_of_a_session_share_one_hash_tag_whatever_its_id(
    open_redis: Callable[..., RedisState], raw: Any
) -> None:
    state = open_redis(session_id="odd {id}:with}braces%")
    state.register_variable("a", "integer", 1)
    keys = session_key_names(raw, state.session_id)
    assert len(keys) >= 5
    tags = {key[key.index(b"{") + 1 : key.index(b"}")] for key in keys}
    assert tags == {b"odd %7Bid%7D:with%7Dbraces%25"}
    assert state.get_variable("a") == 1


def test_every_use_and_heartbeat_refresh_the_expiry_of_every_key(
    open_redis: Callable[..., RedisState], raw: Any
) -> None:
    state = open_redis(ttl=600)
    state.register_variable("a", "integer", 1)
    keys = session_key_names(raw, state.session_id)
    assert {raw.ttl(key) for key in keys} <= set(range(590, 601)), "every key carries the TTL"

    def shorten() -> None:
        for key in keys:
            raw.pexpire(key, 5_000)

    for use in (
        lambda: state.get_variable("a"),
        lambda: state.set_variable("a", 2),
        state.list_variables,
        state.heartbeat,
    ):
        shorten()
        use()
        assert all(raw.pttl(key) > 5_000 for key in keys), "a use did not refresh every key"
    expires = state.heartbeat()
    assert expires is not None and time.time() + 500 < expires <= time.time() + 601

    forever = open_redis(ttl=None)
    forever.register_variable("a", "integer", 1)
    assert {raw.ttl(k) for k in session_key_names(raw, forever.session_id)} == {-1}
    assert forever.heartbeat() is None


def test_an_idle_session_expires_in_redis_and_its_subscribers_hear_closed(
    open_redis: Callable[..., RedisState], raw: Any
) -> None:
    state = open_redis(ttl=0.3)
    state.register_variable("a", "integer", 1)
    recorder = EventRecorder(WAIT, "expiry")
    with state.subscribe(None, recorder):
        # Nothing uses the session now: Redis expires it, the subscriber notices.
        events = recorder.wait_for("closed after the expiry", lambda e: e.kind == "closed")
    assert [e.kind for e in events] == ["closed"]
    assert session_key_names(raw, state.session_id) == []
    with pytest.raises(SessionNotFound):
        state.get_variable("a")


# -- streams ------------------------------------------------------------------------------


def test_a_subscriber_past_the_history_gets_overflow_then_the_present(
    open_redis: Callable[..., RedisState],
) -> None:
    state = open_redis(event_history=10)
    state.register_variable("v", "integer", 0)
    for value in range(1, 400):
        state.set_variable("v", value)  # the stream is trimmed to a few nodes' worth
    late = EventRecorder(WAIT, "from the start")
    with state.subscribe(None, late, start=1):
        late.wait_for("the overflow", lambda e: e.kind == "overflow")
        state.set_variable("v", 400)
        events = late.wait_for("the write after the overflow", change("v", 400))
    assert events[0].kind == "overflow" and events[0].sequence == 0, events[:2]
    assert [e.version for e in events[1:]] == [400], "after overflow: the present only"

    resumed = EventRecorder(WAIT, "resumed")
    last = events[-1].sequence
    with state.subscribe(None, resumed, start=last - 2):
        got = resumed.wait_for("the last write again", change("v", 400))
    assert [(e.sequence, e.version) for e in got] == [
        (last - 2, 398),
        (last - 1, 399),
        (last, 400),
    ]


def test_an_attached_handle_detaching_ends_its_own_subscriptions(
    open_redis: Callable[..., RedisState],
) -> None:
    owner = open_redis()
    owner.register_variable("v", "integer", 0)
    attached = open_redis(session_id=owner.session_id, create=False)
    recorder = EventRecorder(WAIT, "attached")
    subscription = attached.subscribe(None, recorder)
    owner.set_variable("v", 1)
    attached.cleanup()
    events = recorder.wait_for("closed", lambda e: e.kind == "closed")
    assert [(e.kind, e.version) for e in events] == [("updated", 1), ("closed", None)]
    subscription.close()
    assert not subscription.active


# -- failures -------------------------------------------------------------------------------


def test_unreachable_redis_is_unavailable_and_not_applied() -> None:
    with pytest.raises(BridgeUnavailable) as info:
        RedisState.init(url=f"redis://127.0.0.1:{free_port()}/0", timeout=0.3)
    assert "not applied" in str(info.value)


class ReplyCutter:
    """A TCP proxy before Redis that can cut the connection instead of relaying a reply.

    ``cut_replies(n)``: the next ``n`` replies are dropped and their connections
    closed (the command reached Redis; its reply never comes back). Every thread it
    starts is joined by :meth:`close`.
    """

    def __init__(self, port: int) -> None:
        self._target = ("127.0.0.1", port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._cuts = 0
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._start(self._accept)

    def cut_replies(self, count: int) -> None:
        with self._lock:
            self._cuts = count

    def _start(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(self._target)
            with self._lock:
                self._sockets += [client, server]
            self._start(self._pipe, client, server, False)
            self._start(self._pipe, server, client, True)

    def _pipe(self, source: socket.socket, sink: socket.socket, replies: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if replies:
                    with self._lock:
                        cut, self._cuts = self._cuts > 0, max(self._cuts - 1, 0)
                    if cut:
                        break
                sink.sendall(data)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(WAIT)


@pytest.fixture
def cutter(redis_url: str) -> Iterator[ReplyCutter]:
    proxy = ReplyCutter(int(redis_url.rsplit(":", 1)[1].split("/", 1)[0]))
    yield proxy
    proxy.close()


def test_a_write_whose_reply_was_lost_is_sent_again_and_applied_once(
    cutter: ReplyCutter, open_redis: Callable[..., RedisState]
) -> None:
    state = open_redis(url=f"redis://127.0.0.1:{cutter.port}/0", timeout=3.0)
    state.register_variable("counter", "integer", 0)
    state.register_variable("other", "integer", 0)
    cutter.cut_replies(1)
    assert state.set_variable("counter", 1) == 1  # the retry got the first reply
    cutter.cut_replies(2)
    state.update_variables({"counter": 2, "other": 2})
    cutter.cut_replies(1)
    state.register_variable("late", "integer", 0)
    records = {r["name"]: r["version"] for r in state.list_variables()}
    assert records == {"counter": 2, "other": 1, "late": 0}, "a retried write applied twice"


def test_a_write_never_answered_is_outcome_unknown(
    cutter: ReplyCutter, open_redis: Callable[..., RedisState]
) -> None:
    state = open_redis(url=f"redis://127.0.0.1:{cutter.port}/0", timeout=0.5)
    state.register_variable("counter", "integer", 0)
    cutter.cut_replies(1_000_000)
    with pytest.raises(OutcomeUnknown):
        state.set_variable("counter", 1)
    with pytest.raises(BridgeUnavailable):  # a read is never "unknown": not applied
        state.get_variable("counter")
    cutter.cut_replies(0)
    assert state.get_record("counter").version == 1, "applied once, whatever the retries"


# -- the extra, persistence -----------------------------------------------------------------


def test_without_redis_py_init_names_the_extra() -> None:
    script = (
        "import sys\n"
        "sys.modules['redis'] = None  # as if redis-py were not installed\n"
        "import dspex_actors\n"
        "from dspex_actors import RedisState\n"
        "assert RedisState.capabilities()['distribution']\n"
        "try:\n"
        "    RedisState.init(url='redis://127.0.0.1:1/0')\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=python_env(),
        timeout=60,
        check=True,
    )
    assert "pip install 'dspex_actors[redis]'" in done.stdout, done.stdout + done.stderr


def test_importing_the_package_does_not_load_redis() -> None:
    script = (
        "import sys, dspex_actors\n"
        "from dspex_actors import RedisState\n"
        "assert 'redis' not in sys.modules, 'redis was imported'\n"
        "assert RedisState.kind == 'redis'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60, env=python_env())


_WRITER = """
import sys
from dspex_actors import RedisState

state = RedisState.init(session_id=sys.argv[1], url=sys.argv[2], ttl=None)
state.register_variable("kept", "embedding", [1.0, 2.0], metadata={"m": 1})
state.set_variable("kept", [3.0, 4.0])
# The process exits without cleanup: the session is left in Redis.
"""


def test_a_session_outlives_its_process_and_a_restart_of_a_redis_with_aof() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="dspex-redis-aof-"))
    port = free_port()
    aof = ("--appendonly", "yes", "--appendfsync", "always")
    session_id = "kept-across-restarts"
    try:
        with redis_server(*aof, workdir=workdir, port=port) as server:
            subprocess.run(
                [sys.executable, "-c", _WRITER, session_id, server.url],
                check=True,
                timeout=60,
                env=python_env(),
            )
        with redis_server(*aof, workdir=workdir, port=port) as server:
            again = RedisState.init(url=server.url, session_id=session_id, create=False)
            try:
                record = again.get_record("kept")
                assert (record.value, record.version, record.metadata) == ([3.0, 4.0], 1, {"m": 1})
                assert again.set_variable("kept", [5.0, 6.0]) == 2
            finally:
                again.cleanup()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# -- errors alike ---------------------------------------------------------------------------


def test_failures_raise_what_local_state_raises_in_its_order(
    open_redis: Callable[..., RedisState],
) -> None:
    state = open_redis()
    state.register_variable("a", "integer", 1, constraints={"max": 5})
    # A taken name wins over a bad value, as in the session actor.
    with pytest.raises(VariableExists):
        state.register_variable("a", "integer", "not a number")
    # A conflict wins over a bad value.
    with pytest.raises(VersionConflict):
        state.set_variable("a", 99, expected_version=7)
    # A bad expected_version is a ValidationError naming the variable.
    with pytest.raises(ValidationError) as info:
        state.set_variable("a", 2, expected_version=-1)
    assert (info.value.variable, info.value.rule) == ("a", "expected_version")
    with pytest.raises(PartialFailure) as batch:
        state.update_variables({"a": 6, "a ": 1})
    assert set(batch.value.errors) == {"a", "a "}
    with pytest.raises(PartialFailure) as batch:
        state.update_variables({"a": 2, state.get_record("a").id: 3})
    error = batch.value.errors[state.get_record("a").id]
    assert isinstance(error, ValidationError) and error.rule == "unique"
    assert state.get_record("a").version == 0


# -- a figure -------------------------------------------------------------------------------


def _p50_us(call: Callable[[], Any], rounds: int = 2_000) -> float:
    for _ in range(200):
        call()
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e6


def test_latency_beside_raw_redis_py(
    open_redis: Callable[..., RedisState], raw: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Information only: RedisState's get/set beside redis-py's GET/SET, same server."""
    state = open_redis()
    state.register_variable("temperature", "float", 0.5)
    raw.set("dspex-figure", b"\xcb?\xe0\x00\x00\x00\x00\x00\x00")
    figures = {
        "redis-py GET": _p50_us(lambda: raw.get("dspex-figure")),
        "redis-py SET": _p50_us(lambda: raw.set("dspex-figure", b"\xcb?\xe0")),
        "RedisState get_variable": _p50_us(lambda: state.get_variable("temperature")),
        "RedisState set_variable": _p50_us(lambda: state.set_variable("temperature", 0.7)),
    }
    with capsys.disabled():
        print("\nRedisState latency, p50 over 2,000 calls (loopback; information only):")
        for label, micros in figures.items():
            print(f"  {label:<26} {micros:8.1f} us")
        print(
            f"  get / GET {figures['RedisState get_variable'] / figures['redis-py GET']:.2f}x, "
            f"set / SET {figures['RedisState set_variable'] / figures['redis-py SET']:.2f}x"
        )


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:secret@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://user:secret@[::1]:6379/0", "redis://user:***@[::1]:6379/0"),
        ("redis://h/0?password=secret&db=1", "redis://h/0?password=***&db=1"),
        ("rediss://user@h/0", "rediss://user@h/0"),
    ],
)
def test_a_url_in_a_message_never_shows_its_password(url: str, shown: str) -> None:
    assert redacted(url) == shown


def test_errors_name_the_redis_without_its_password(redis_url: str) -> None:
    port = redis_url.rsplit(":", 1)[1].split("/", maxsplit=1)[0]
    with pytest.raises(Unauthenticated) as refused:  # this Redis has no password set
        RedisState.init(url=f"redis://:nopass@127.0.0.1:{port}/0", create=False, session_id="x")
    assert "nopass" not in str(refused.value) and ":***@" in str(refused.value)


def test_a_stream_source_woken_before_it_reads_sends_no_blocking_read(
    open_redis: Callable[..., RedisState], raw: Any
) -> None:
    """An unsubscribe right after subscribe (the reader not yet in its XREAD, so
    nothing to unblock) must not leave the reader blocked a whole block period: a
    source woken before it reads sends no XREAD at all."""
    state = open_redis()
    source = state.events(None)
    try:

        def xreads() -> int:
            stats = raw.info("commandstats").get("cmdstat_xread", {})
            return int(stats.get("calls", 0))

        before = xreads()
        source.wake()
        assert source.read(60.0) == []  # 60 s of BLOCK, were one sent
        assert xreads() == before
    finally:
        source.close()
