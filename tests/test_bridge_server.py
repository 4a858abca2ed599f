"""The SessionStore server: health, reflection, token, TLS, limits, TTL and shutdown."""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from bridge_support import held
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from dspex_actors import failpoints
from dspex_actors.bridge import BridgedState, SessionStoreServer, serve
from dspex_actors.engine import ActorSession
from dspex_actors.errors import (
    BridgeUnavailable,
    LimitExceeded,
    SessionNotFound,
    Unauthenticated,
    VariableNotFound,
)
from dspex_actors.messages import Crash
from dspex_actors.v1 import session_store_pb2 as pb
from dspex_actors.v1 import session_store_pb2_grpc as pb_grpc
from dspex_actors.wire import codec
from dspex_actors.wire import status as wire_status

SESSION_STORE = "dspex_actors.v1.SessionStore"


@pytest.fixture
def server() -> Iterator[SessionStoreServer]:
    with serve() as running:
        yield running


@pytest.fixture
def channel(server: SessionStoreServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as open_channel:
        yield open_channel


# -- standard services -----------------------------------------------------------------


def test_health_reports_serving(channel: grpc.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", SESSION_STORE):
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_services(channel: grpc.Channel) -> None:
    database = ProtoReflectionDescriptorDatabase(channel)
    services = set(database.get_services())
    assert {SESSION_STORE, "grpc.health.v1.Health"} <= services
    descriptor = database.FindFileContainingSymbol(SESSION_STORE)
    assert descriptor.name == "dspex_actors/v1/session_store.proto"


def test_watch_streams_events_from_a_sequence_and_ends_with_closed(
    server: SessionStoreServer, channel: grpc.Channel
) -> None:
    """A client of the .proto alone: the first message (where the stream starts, and
    the session's incarnation), the events' kinds, sequences, values, and the closed
    event when the session closes."""
    stub = pb_grpc.SessionStoreStub(channel)
    state = BridgedState.init(address=server.address)
    state.register_variable("t", "float", 0.5)
    state.register_variable("other", "integer", 1)
    state.set_variable("t", 0.75)
    stream = stub.Watch(
        pb.WatchRequest(
            session_id=state.session_id, patterns=["t*"], start_sequence=1, started=True
        ),
        timeout=30,
    )
    state.delete_variable("t")
    incarnation = state.incarnation
    state.cleanup()  # the owner closes the session: the stream says so and ends
    first, *events = list(stream)
    assert pb.VariableEvent.Kind.Name(first.kind) == "KIND_STARTED"
    assert (first.sequence, first.incarnation) == (1, incarnation)
    kinds = [pb.VariableEvent.Kind.Name(e.kind) for e in events]
    assert kinds == ["KIND_REGISTERED", "KIND_UPDATED", "KIND_DELETED", "KIND_CLOSED"]
    assert [e.sequence for e in events[:3]] == [1, 3, 4]  # 2 was "other"
    assert [codec.unpack(e.value, max_bytes=99) for e in events[:2]] == [0.5, 0.75]
    assert [e.version for e in events[:3]] == [0, 1, 1]


def test_watch_from_now_says_where_it_starts_and_refuses_another_incarnation(
    server: SessionStoreServer, channel: grpc.Channel
) -> None:
    """Without a start sequence the first message says where "now" is, so a client
    needs no GetSession first; naming another incarnation is NOT_FOUND, so a stream
    opened again never crosses into a later session of the same id."""
    stub = pb_grpc.SessionStoreStub(channel)
    with BridgedState.init(address=server.address) as state:
        state.register_variable("t", "float", 0.5)
        state.set_variable("t", 0.75)
        stream = stub.Watch(
            pb.WatchRequest(
                session_id=state.session_id, incarnation=state.incarnation, started=True
            ),
            timeout=30,
        )
        first = next(iter(stream))
        assert (first.kind, first.sequence) == (pb.VariableEvent.KIND_STARTED, 3)
        stream.cancel()
        other = stub.Watch(
            pb.WatchRequest(session_id=state.session_id, incarnation="not-this-one"),
            timeout=30,
        )
        with pytest.raises(grpc.RpcError) as caught:
            next(iter(other))
        assert isinstance(caught.value, grpc.Call)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_watch_that_does_not_ask_gets_no_started_message(
    server: SessionStoreServer, channel: grpc.Channel
) -> None:
    """A client of the .proto that knows nothing of KIND_STARTED never sees one."""
    stub = pb_grpc.SessionStoreStub(channel)
    with BridgedState.init(address=server.address) as state:
        state.register_variable("t", "float", 0.5)
        first_sequence = state.session_info()["next_sequence"] - 1
        stream = stub.Watch(
            pb.WatchRequest(session_id=state.session_id, start_sequence=first_sequence),
            timeout=30,
        )
        first = next(iter(stream))
        stream.cancel()
    assert (first.kind, first.name) == (pb.VariableEvent.KIND_REGISTERED, "t")


def test_watch_of_an_unknown_session_is_not_found(channel: grpc.Channel) -> None:
    stream = pb_grpc.SessionStoreStub(channel).Watch(
        pb.WatchRequest(session_id="nobody"), timeout=5
    )
    with pytest.raises(grpc.RpcError) as caught:
        next(iter(stream))
    assert isinstance(caught.value, grpc.Call)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_list_variables_filters_by_glob(server: SessionStoreServer) -> None:
    with BridgedState.init(address=server.address) as state:
        for name in ("temp_a", "temp_b", "other"):
            state.register_variable(name, "integer", 1)
        assert [r["name"] for r in state.list_variables(pattern="temp_*")] == ["temp_a", "temp_b"]
        assert len(state.list_variables()) == 3


def test_session_info_counts_variables(server: SessionStoreServer) -> None:
    with BridgedState.init(address=server.address) as state:
        state.register_variable("a", "integer", 1)
        state.register_variable("b", "integer", 1)
        state.delete_variable("a")
        info = state.session_info()
        assert info["session_id"] == state.session_id
        assert info["variable_count"] == 1
        assert info["ttl_seconds"] == 3600.0
        assert info["created_at"] <= info["last_active_at"] <= state.heartbeat()


def test_session_info_reports_the_activity_before_it() -> None:
    clock = FakeClock()
    with serve(clock=clock) as server, BridgedState.init(address=server.address) as state:
        clock.now = 3.0
        state.register_variable("a", "integer", 1)
        clock.now = 10.0
        first = state.session_info()
        assert first["last_active_at"] == first["created_at"] + 3.0  # the register
        second = state.session_info()
        assert second["last_active_at"] == first["created_at"] + 10.0  # the first info


# -- token -----------------------------------------------------------------------------


def test_token_is_required_on_every_call_but_health() -> None:
    with serve(token="s3cret") as server:
        with pytest.raises(Unauthenticated, match="missing or wrong token"):
            BridgedState.init(address=server.address)
        with pytest.raises(Unauthenticated):
            BridgedState.init(address=server.address, token="wrong")
        with BridgedState.init(address=server.address, token="s3cret") as state:
            state.register_variable("a", "integer", 1)
            assert state.get_variable("a") == 1
        with grpc.insecure_channel(server.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.RpcError) as caught:
                ProtoReflectionDescriptorDatabase(channel).get_services()
            assert isinstance(caught.value, grpc.Call)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_non_loopback_address_needs_a_token() -> None:
    with pytest.raises(ValueError, match="without a token"):
        serve("0.0.0.0:0")


def test_a_port_in_use_is_an_os_error(server: SessionStoreServer) -> None:
    with pytest.raises(OSError, match="could not listen"):
        serve(server.address)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ],
        check=True,
        capture_output=True,
    )
    with serve(tls_cert=cert, tls_key=key) as server:
        assert server.tls
        with BridgedState.init(address=server.address, tls_root_cert=cert) as state:
            state.register_variable("a", "string", "over tls")
            assert state.get_variable("a") == "over tls"
        with pytest.raises(BridgeUnavailable):  # plaintext client, TLS server
            BridgedState.init(address=server.address, timeout=2)


# -- limits ----------------------------------------------------------------------------


def test_value_size_limit() -> None:
    with serve(max_value_bytes=1000) as server, BridgedState.init(address=server.address) as state:
        state.register_variable("s", "string", "small")
        with pytest.raises(LimitExceeded, match=r"value of variable 's' is \d+ bytes"):
            state.set_variable("s", "x" * 2000)
        with pytest.raises(LimitExceeded, match="value of variable 'big'"):
            state.register_variable("big", "string", "x" * 2000)
        with pytest.raises(LimitExceeded, match="updates holds an item over the limit"):
            state.update_variables({"s": "x" * 2000})
        assert state.get_variable("s") == "small"
        assert [r["name"] for r in state.list_variables()] == ["s"]


def test_message_size_limit() -> None:
    with (
        serve(max_message_bytes=10_000) as server,
        BridgedState.init(address=server.address) as state,
    ):
        state.register_variable("s", "string", "small")
        with pytest.raises(LimitExceeded, match="over the limit of 10000") as caught:
            state.update_variables({"s": "x" * 20_000})
        assert caught.value.limit == "max_message_bytes"
        assert state.get_variable("s") == "small"


def test_variables_per_session_limit_is_exact() -> None:
    with (
        serve(max_variables_per_session=2) as server,
        BridgedState.init(address=server.address) as state,
        BridgedState.init(address=server.address) as source,
    ):
        state.register_variable("a", "integer", 1)
        state.register_variable("b", "integer", 2)
        with pytest.raises(LimitExceeded, match="limit of 2") as caught:
            state.register_variable("c", "integer", 3)
        assert caught.value.limit == "max_variables_per_session"
        state.delete_variable("a")
        state.register_variable("c", "integer", 3)

        source.register_variable("x", "integer", 1)
        with pytest.raises(LimitExceeded):
            state.import_state(source.export_state())
        assert sorted(state.get_variables(["b", "c", "x"])) == ["b", "c"]


def test_sessions_limit() -> None:
    with serve(max_sessions=1) as server, BridgedState.init(address=server.address):
        with pytest.raises(LimitExceeded, match="sessions") as caught:
            BridgedState.init(address=server.address)
        assert caught.value.limit == "max_sessions"


# -- TTL -------------------------------------------------------------------------------


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_idle_sessions_expire_and_activity_keeps_them() -> None:
    clock = FakeClock()
    with serve(session_ttl=10.0, clock=clock) as server:
        busy = BridgedState.init(address=server.address)
        idle = BridgedState.init(address=server.address)
        busy.register_variable("a", "integer", 1)
        clock.now = 6.0
        busy.heartbeat()
        clock.now = 12.0  # idle for 12 s, busy for 6 s
        assert set(server.reap_expired()) <= {idle.session_id}
        with pytest.raises(SessionNotFound, match="closed or expired"):
            idle.get_variables(["a"])
        assert busy.get_variable("a") == 1  # also activity, at 12
        clock.now = 21.0
        server.reap_expired()
        assert busy.get_variable("a") == 1
        clock.now = 40.0
        server.reap_expired()
        with pytest.raises(SessionNotFound):
            busy.get_variable("a")
        busy.cleanup()  # the owner's close finds nothing to close; no error
        idle.cleanup()


def test_the_reaper_thread_expires_sessions() -> None:
    expired = threading.Event()

    class Listener(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "expired" in record.getMessage():
                expired.set()

    logger = logging.getLogger("dspex_actors.stores.memory")
    listener, level = Listener(), logger.level
    logger.addHandler(listener)
    logger.setLevel(logging.INFO)
    try:
        with serve(session_ttl=0.05) as server:
            state = BridgedState.init(address=server.address)
            assert expired.wait(10), "the reaper did not expire an idle session"
            with pytest.raises(SessionNotFound):
                state.get_variable("a")
            state.cleanup()
    finally:
        logger.removeHandler(listener)
        logger.setLevel(level)


class LogWatch(logging.Handler):
    """Collects the server's log messages; lets a test wait for one (no sleeping)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []
        self._changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self._changed:
            self.messages.append(record.getMessage())
            self._changed.notify_all()

    def count(self, pattern: str) -> int:
        """How many messages so far match the regex ``pattern``."""
        with self._changed:
            return self._count(pattern)

    def wait_for(self, pattern: str, count: int = 1) -> None:
        """Block until ``count`` messages match ``pattern`` (fail after 30 s)."""
        with self._changed:
            assert self._changed.wait_for(lambda: self._count(pattern) >= count, timeout=30), (
                f"never logged {count}x {pattern!r}: {self.messages!r}"
            )

    def _count(self, pattern: str) -> int:
        return sum(1 for message in self.messages if re.search(pattern, message))


@pytest.fixture
def server_log() -> Iterator[LogWatch]:
    watch = LogWatch()
    logger = logging.getLogger("dspex_actors.stores.memory")
    level = logger.level
    logger.addHandler(watch)
    logger.setLevel(logging.DEBUG)
    try:
        yield watch
    finally:
        logger.removeHandler(watch)
        logger.setLevel(level)


@pytest.fixture
def cleanup_fails_for(monkeypatch: pytest.MonkeyPatch) -> Iterator[set[str]]:
    """Session ids whose engine's close() raises (once); the test fills the set.

    Afterwards the real close runs for them, so no actor is left behind.
    """
    failing: set[str] = set()
    real_close = ActorSession.close
    broken: list[ActorSession] = []

    def close(self: ActorSession) -> None:
        if self.session_id in failing:
            failing.discard(self.session_id)
            broken.append(self)
            raise RuntimeError(f"closing {self.session_id} failed")
        real_close(self)

    monkeypatch.setattr(ActorSession, "close", close)
    yield failing
    monkeypatch.undo()
    for engine in broken:
        engine.close()


def test_reaping_goes_on_past_a_session_that_fails_to_close(
    server_log: LogWatch, cleanup_fails_for: set[str]
) -> None:
    clock = FakeClock()
    with serve(session_ttl=10.0, clock=clock) as server:
        handles = [BridgedState.init(address=server.address) for _ in range(3)]
        states = [held(server, h.session_id) for h in handles]
        cleanup_fails_for.add(handles[0].session_id)
        clock.now = 20.0
        assert sorted(server.reap_expired()) == sorted(h.session_id for h in handles)
        assert [s.alive for s in states] == [True, False, False]
        assert server_log.count(f"session {handles[0].session_id} .*closing its actor failed") == 1
        assert server_log.count("expired after") == 2
        for handle in handles:
            with pytest.raises(SessionNotFound):
                handle.get_variable("a")
            handle.cleanup()


def test_stopping_closes_every_session_even_if_one_fails(
    server_log: LogWatch, cleanup_fails_for: set[str]
) -> None:
    server = serve()
    handles = [BridgedState.init(address=server.address) for _ in range(3)]
    states = [held(server, h.session_id) for h in handles]
    cleanup_fails_for.add(handles[1].session_id)
    server.stop()
    assert [s.alive for s in states] == [False, True, False]
    assert server_log.count("closing its actor failed") == 1
    for handle in handles:
        handle.cleanup()


# -- supervision -----------------------------------------------------------------------


def _crash(server: SessionStoreServer, session_id: str) -> None:
    """Crash the server's actor for a session (a bug, as far as the server knows)."""
    held(server, session_id).actor_ref.tell(Crash("boom"))


class HookLog:
    """Calls of a supervision hook, waited on with a condition (never a sleep)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self._changed = threading.Condition()

    def __call__(self, session_id: str, error: object) -> None:
        with self._changed:
            self.calls.append((session_id, error))
            self._changed.notify_all()

    def wait(self, count: int) -> list[tuple[str, object]]:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.calls) >= count, 10), self.calls
            return list(self.calls)


def test_a_crashed_session_actor_is_restarted_with_its_variables() -> None:
    restarts = HookLog()
    with (
        serve(on_restart=restarts) as server,
        BridgedState.init(address=server.address) as state,
    ):
        state.register_variable("a", "integer", 1)
        state.set_variable("a", 2)
        local = held(server, state.session_id)
        crashed = local.actor_ref
        _crash(server, state.session_id)
        [(session_id, error)] = restarts.wait(1)
        assert session_id == state.session_id
        assert isinstance(error, RuntimeError) and str(error) == "boom"
        assert not crashed.is_alive()
        assert local.actor_ref is not crashed and local.alive
        assert state.get_variable("a") == 2
        assert state.set_variable("a", 3) == 2
        assert state.session_info()["variable_count"] == 1


def test_an_external_stop_is_restarted_like_a_crash() -> None:
    """The Supervisor's rule, now the server's too: a session that should run, runs."""
    restarts = HookLog()
    with (
        serve(on_restart=restarts) as server,
        BridgedState.init(address=server.address) as state,
    ):
        state.register_variable("a", "integer", 1)
        held(server, state.session_id).actor_ref.stop()
        assert restarts.wait(1) == [(state.session_id, None)]
        assert state.set_variable("a", 5) == 1


def test_a_session_crashing_too_often_is_closed() -> None:
    clock = FakeClock()  # frozen: every crash falls within the window
    restarts, give_ups = HookLog(), HookLog()
    with (
        serve(clock=clock, max_restarts=2, on_restart=restarts, on_give_up=give_ups) as server,
        BridgedState.init(address=server.address) as state,
    ):
        state.register_variable("a", "integer", 1)
        for count in (1, 2):
            _crash(server, state.session_id)
            restarts.wait(count)
            assert state.get_variable("a") == 1
        _crash(server, state.session_id)
        [(session_id, failure)] = give_ups.wait(1)
        assert session_id == state.session_id
        assert "died more than 2 times" in str(failure)
        assert len(restarts.calls) == 2
        with pytest.raises(SessionNotFound):
            state.get_variable("a")
        with pytest.raises(SessionNotFound):
            held(server, state.session_id)


def test_crashes_spread_over_time_are_each_restarted() -> None:
    clock = FakeClock()
    restarts, give_ups = HookLog(), HookLog()
    with (
        serve(
            clock=clock,
            max_restarts=2,
            within_seconds=10,
            on_restart=restarts,
            on_give_up=give_ups,
        ) as server,
        BridgedState.init(address=server.address) as state,
    ):
        state.register_variable("a", "integer", 1)
        for count in range(1, 6):
            clock.now += 11  # the earlier crashes fall out of the window
            state.heartbeat()  # activity, so the session does not expire meanwhile
            _crash(server, state.session_id)
            restarts.wait(count)
        assert state.get_variable("a") == 1
        assert give_ups.calls == []


def test_grpc_threads_are_bounded_and_gone_after_stop() -> None:
    """What grpcio starts for a server (found without naming its private functions)
    ends once stop() returns and stays bounded across many servers."""
    before = set(threading.enumerate())
    peak = 0
    for grace in (None, 0.5, None, 0.5, None, 0.5):
        server = serve()
        with BridgedState.init(address=server.address) as state:
            state.register_variable("a", "integer", 1)
            peak = max(peak, len(set(threading.enumerate()) - before))
        server.stop(grace=grace)
    for thread in set(threading.enumerate()) - before:
        thread.join(10)
    assert not [t for t in set(threading.enumerate()) - before if t.is_alive()]
    assert peak < 40, f"{peak} threads for one server"


# -- stopping --------------------------------------------------------------------------


def test_stop_closes_sessions_and_is_idempotent() -> None:
    server = serve()
    state = BridgedState.init(address=server.address, timeout=2)
    state.register_variable("a", "integer", 1)
    server.stop(grace=1.0)
    server.stop()
    assert server.wait_for_termination(0)
    with pytest.raises(BridgeUnavailable):
        state.get_variable("a")
    state.cleanup()  # the server is gone: logged, not raised


def test_unknown_session_is_not_found(server: SessionStoreServer, channel: grpc.Channel) -> None:
    stub = pb_grpc.SessionStoreStub(channel)
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetVariable(pb.GetVariableRequest(session_id="nope", identifier="a"), timeout=5)
    assert isinstance(caught.value, grpc.Call)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    error = wire_status.error_from_rpc(caught.value, server.address)
    assert isinstance(error, SessionNotFound)
    assert error.session_id == "nope"
    with pytest.raises(grpc.RpcError):
        stub.OpenSession(pb.OpenSessionRequest(session_id="nope"), timeout=5)


def test_variable_not_found_names_the_variable(server: SessionStoreServer) -> None:
    with BridgedState.init(address=server.address) as state:
        with pytest.raises(VariableNotFound) as caught:
            state.get_variable("missing")
        assert caught.value.variable == "missing"


def test_graceful_stop_lets_calls_in_flight_finish() -> None:
    arrived, opened = threading.Event(), threading.Event()

    async def hold() -> None:  # the write is in the server, not yet applied
        arrived.set()
        assert await asyncio.to_thread(opened.wait, 30), "the test never opened the gate"

    server = serve()
    state = BridgedState.init(address=server.address, timeout=30)
    state.register_variable("a", "integer", 41)
    results: dict[str, object] = {}

    def in_flight() -> None:
        try:
            results["version"] = state.set_variable("a", 42)
        except Exception as exc:  # reported by the assertion below
            results["version"] = exc

    with (
        grpc.insecure_channel(server.address) as channel,
        failpoints.enabled("store.apply", hold),
    ):
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=SESSION_STORE), timeout=30
        )
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        caller = threading.Thread(target=in_flight)
        caller.start()
        assert arrived.wait(30)
        stopper = threading.Thread(target=server.stop, kwargs={"grace": 30.0})
        stopper.start()
        # Health turns NOT_SERVING as shutdown begins, and the watch ends at once
        # instead of holding the shutdown for its grace.
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(StopIteration):
            next(watch)
        opened.set()
        caller.join()
        stopper.join()
    assert results["version"] == 1  # applied: its session was not closed under it
    assert server.wait_for_termination(0)
    state.cleanup()


def test_session_metadata_has_one_home(channel: grpc.Channel) -> None:
    stub = pb_grpc.SessionStoreStub(channel)
    opened = stub.OpenSession(
        pb.OpenSessionRequest(
            session_id="meta", create_if_missing=True, metadata=codec.pack({"owner": "ci"})
        ),
        timeout=5,
    )
    assert opened.created
    try:
        info = stub.GetSession(pb.GetSessionRequest(session_id="meta"), timeout=5)
        exported = stub.ExportSession(pb.ExportSessionRequest(session_id="meta"), timeout=5)
        assert codec.unpack(info.metadata, max_bytes=1 << 20) == {"owner": "ci"}
        assert codec.unpack(exported.state, max_bytes=1 << 20)["metadata"] == {"owner": "ci"}
    finally:
        stub.CloseSession(pb.CloseSessionRequest(session_id="meta"), timeout=5)
