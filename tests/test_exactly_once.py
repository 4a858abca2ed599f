"""Lost replies and dead servers: every write is applied once, and classed honestly.

A loopback TCP proxy (``tcp_proxy.py``) in front of a real SessionStore drops the
reply of chosen calls: the server has applied the write and answered, the client
sees its connection cut with no answer. BridgedState then retries with the same
request id within its deadline, and the server answers the retry with the first
answer instead of applying it again. Every drop records what the server held at
that moment, so each test also proves the write was applied before its reply was
lost (a drop before the apply would prove nothing).

Then the outcome classes when the server is out of reach: reads raise
``BridgeUnavailable``; a write that may have reached the server and got no answer
raises ``OutcomeUnknown`` — never ``BridgeUnavailable`` for a write that was
applied (apply, lose the reply, kill the server before the retry). A write that
was never handed to gRPC (no connection was up, or the Calls stream never had the
server's headers) is ``BridgeUnavailable``: not applied (``test_server_down.py``).
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from bridge_support import held, killable_server
from tcp_proxy import TcpProxy

from dspex_actors.bridge import BridgedState, SessionStoreServer, serve
from dspex_actors.errors import BridgeUnavailable, OutcomeUnknown
from dspex_actors.supervision import Supervisor

Hook = Callable[[], None]


class DropRecorder:
    """The proxy's ``on_drop`` hook: notes what the server holds when a reply is
    lost, then runs the test's next action (e.g. killing the server)."""

    def __init__(self) -> None:
        self.observe: Callable[[], Any] | None = None
        self.then: Hook | None = None
        self.seen: list[Any] = []

    def __call__(self) -> None:
        if self.observe is not None:
            self.seen.append(self.observe())
        if self.then is not None:
            self.then()


@pytest.fixture
def server() -> Iterator[SessionStoreServer]:
    with serve() as running:
        yield running


@pytest.fixture
def recorder() -> DropRecorder:
    return DropRecorder()


@pytest.fixture
def proxy(server: SessionStoreServer, recorder: DropRecorder) -> Iterator[TcpProxy]:
    with TcpProxy(server.address, on_drop=recorder) as running:
        yield running


@pytest.fixture
def state(proxy: TcpProxy) -> Iterator[BridgedState]:
    handle = BridgedState.init(address=proxy.address, timeout=5)
    try:
        yield handle
    finally:
        handle.cleanup()


def _server_version(server: SessionStoreServer, session_id: str, name: str) -> Callable[[], int]:
    return lambda: held(server, session_id).get_record(name).version


# -- a lost reply, then a retry ------------------------------------------------------------


def test_ten_lost_set_replies_are_applied_exactly_once(
    server: SessionStoreServer, proxy: TcpProxy, recorder: DropRecorder, state: BridgedState
) -> None:
    state.register_variable("x", "integer", 0)
    recorder.observe = _server_version(server, state.session_id, "x")
    versions = []
    for value in range(1, 11):
        proxy.drop_next_reply()
        versions.append(state.set_variable("x", value))
    record = state.get_record("x")
    assert proxy.drops == 10
    assert recorder.seen == list(range(1, 11))  # each was applied before its reply was lost
    assert versions == list(range(1, 11))  # and each call returned its own version
    assert (record.value, record.version) == (10, 10)
    print(
        f"faults injected: 10 lost replies over {proxy.connections} connections; "
        f"applied 10, lost 0, doubled 0"
    )


def test_a_lost_compare_and_set_reply_is_not_a_conflict(
    server: SessionStoreServer, proxy: TcpProxy, recorder: DropRecorder, state: BridgedState
) -> None:
    """The retry of an applied compare-and-set would conflict with its own write if
    it ran again; it gets the first answer instead."""
    state.register_variable("x", "integer", 0)
    recorder.observe = _server_version(server, state.session_id, "x")
    for expected in range(5):
        proxy.drop_next_reply()
        assert state.set_variable("x", expected + 1, expected_version=expected) == expected + 1
    assert recorder.seen == [1, 2, 3, 4, 5]
    assert state.get_record("x").version == 5


def test_a_lost_update_reply_is_applied_once(
    server: SessionStoreServer, proxy: TcpProxy, recorder: DropRecorder, state: BridgedState
) -> None:
    state.register_variable("a", "integer", 0)
    state.register_variable("b", "string", "")
    recorder.observe = _server_version(server, state.session_id, "a")
    for round_ in range(1, 6):
        proxy.drop_next_reply()
        state.update_variables({"a": round_, "b": f"round {round_}"})
    assert recorder.seen == [1, 2, 3, 4, 5]
    assert [state.get_record(n).version for n in ("a", "b")] == [5, 5]
    assert state.get_variables(["a", "b"]) == {"a": 5, "b": "round 5"}


def test_a_lost_register_reply_is_not_variable_exists(
    server: SessionStoreServer, proxy: TcpProxy, recorder: DropRecorder, state: BridgedState
) -> None:
    recorder.observe = lambda: [
        record["name"] for record in held(server, state.session_id).list_variables()
    ]
    ids = []
    for n in range(3):
        proxy.drop_next_reply()
        ids.append(state.register_variable(f"v{n}", "float", 0.5))
    assert recorder.seen == [["v0"], ["v0", "v1"], ["v0", "v1", "v2"]]
    listed = state.list_variables()
    assert [(r["id"], r["name"], r["version"]) for r in listed] == [
        (ids[n], f"v{n}", 0) for n in range(3)
    ]


def test_a_lost_delete_reply_is_not_variable_not_found(
    server: SessionStoreServer, proxy: TcpProxy, recorder: DropRecorder, state: BridgedState
) -> None:
    state.register_variable("doomed", "integer", 1)
    state.register_variable("kept", "integer", 2)
    recorder.observe = lambda: held(server, state.session_id).variable_count
    proxy.drop_next_reply()
    state.delete_variable("doomed")
    assert recorder.seen == [1]
    assert [r["name"] for r in state.list_variables()] == ["kept"]


def test_a_lost_import_reply_is_not_variable_exists(proxy: TcpProxy, state: BridgedState) -> None:
    with BridgedState.init(address=proxy.address) as source:  # through the proxy too
        source.register_variable("p", "integer", 7)
        source.set_variable("p", 8)
        exported = source.export_state()
    proxy.drop_next_reply()
    state.import_state(exported)
    assert proxy.drops == 1
    record = state.get_record("p")
    assert (record.value, record.version) == (8, 1)


def test_a_lost_open_reply_keeps_the_creator_the_owner(
    server: SessionStoreServer, proxy: TcpProxy
) -> None:
    proxy.drop_next_reply()
    handle = BridgedState.init(session_id="lost-open", address=proxy.address)
    try:
        assert proxy.drops == 1
        assert handle.owner  # the retry was told `created` again
    finally:
        handle.cleanup()  # the owner closes it
    with pytest.raises(KeyError):
        held(server, "lost-open")


@pytest.mark.parametrize(
    ("after", "rpc"), [(0, "OpenSession"), (1, "ImportSession"), (2, "CommitSession")]
)
def test_a_migration_losing_a_reply_switches_whole_and_once(
    server: SessionStoreServer, proxy: TcpProxy, after: int, rpc: str
) -> None:
    """The switch's three calls (open the pending copy, import it, commit it) each
    survive a lost reply: the retry is answered as the first call was."""
    with Supervisor.start(bridge_address=proxy.address) as supervisor:
        ctx = supervisor.start_context(session_id="moving")
        ctx.register_variable("a", "integer", 1)
        ctx.set_variable("a", 2)
        ctx.register_variable("b", "string", "x", metadata={"k": "v"})
        before = ctx.list_variables()
        proxy.drop_next_reply(after=after)
        ctx.ensure_bridged()
        assert proxy.drops == 1
        assert ctx.backend_info()["type"] == "bridged"
        assert ctx.list_variables() == before
        assert ctx.set_variable("a", 3) == 2
        assert held(server, "moving").get_record("a").version == 2
    print(f"the reply of {rpc} lost during a switch: switched whole, once")


# -- outcome classes when the server dies ---------------------------------------------------


def _kill(process: subprocess.Popen[str]) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def test_a_killed_server_makes_reads_unavailable_and_later_writes_not_applied() -> None:
    """After SIGKILL: the first write may go out on the dying connection before the
    client has seen it end (then OutcomeUnknown, honestly) or not (BridgeUnavailable);
    once a read has failed, a write was certainly never sent: BridgeUnavailable, not
    applied."""
    with killable_server() as (process, address):
        state = BridgedState.init(address=address, timeout=0.5)
        try:
            state.register_variable("a", "integer", 1)
            _kill(process)
            with pytest.raises((OutcomeUnknown, BridgeUnavailable)):
                state.set_variable("a", 2)
            with pytest.raises(BridgeUnavailable):
                state.get_variable("a")
            with pytest.raises(BridgeUnavailable, match="was not applied") as later:
                state.set_variable("a", 3)
            assert not isinstance(later.value, OutcomeUnknown)
        finally:
            state.cleanup()
    print(f"after SIGKILL: reads BridgeUnavailable, a later write {type(later.value).__name__}")


def test_an_applied_write_with_its_reply_lost_and_its_server_killed_is_unknown() -> None:
    """Apply, drop the reply, kill the server before the retry: OutcomeUnknown."""
    recorder = DropRecorder()
    with killable_server() as (process, address), TcpProxy(address, on_drop=recorder) as proxy:
        direct = grpc.insecure_channel(address)
        get = direct.unary_unary(
            "/dspex_actors.v1.SessionStore/GetVariable",
            request_serializer=None,
            response_deserializer=None,
        )
        state = BridgedState.init(address=proxy.address, timeout=1)
        try:
            state.register_variable("x", "integer", 0)
            request = _get_request(state.session_id, "x")
            recorder.observe = lambda: _version_of(get(request, timeout=5))
            recorder.then = lambda: _kill(process)
            proxy.drop_next_reply()
            with pytest.raises(OutcomeUnknown):
                state.set_variable("x", 1)
        finally:
            state.cleanup()
            direct.close()
    assert recorder.seen == [1]  # the server had applied it when the reply was lost


def test_an_applied_write_on_a_reconnecting_channel_is_unknown(
    server: SessionStoreServer, recorder: DropRecorder, proxy: TcpProxy
) -> None:
    """A channel whose connection was lost before (a dropped reply, then a cut) makes
    a new one for the next write, which is applied and loses its reply; the server
    is then out of reach. It was applied, so only OutcomeUnknown is honest, whatever
    the channel's history or its connectivity as gRPC reports it (asynchronously:
    under load a connection that came up, carried the write and broke could still
    look down, 3 of 40 rounds when writes were classed by it).

    A write after that never reaches the server (the proxy refuses every
    connection): it was never handed to gRPC (no connection was up), so it is
    BridgeUnavailable, not applied. Reads stay BridgeUnavailable."""
    state = BridgedState.init(address=proxy.address, timeout=1)
    try:
        state.register_variable("x", "integer", 0)
        proxy.drop_next_reply()  # a first transport failure, survived by the retry
        assert state.set_variable("x", 1) == 1
        proxy.cut()  # the connection is gone: the next write makes a new one
        recorder.observe = _server_version(server, state.session_id, "x")
        recorder.then = proxy.refuse  # from now on the server is out of reach
        proxy.drop_next_reply()
        with pytest.raises(OutcomeUnknown):
            state.set_variable("x", 2)
        assert recorder.seen == [2]  # applied before its reply was lost
        connections = proxy.connections
        with pytest.raises(BridgeUnavailable, match="was not applied"):  # never sent
            state.set_variable("x", 3)
        assert proxy.connections == connections  # no attempt reached the server
        with pytest.raises(BridgeUnavailable):
            state.get_variable("x")
    finally:
        state.cleanup()
    assert held(server, state.session_id).get_record("x").version == 2
    print(
        f"an applied write on a reconnected channel ({connections} connections), its reply "
        f"lost: OutcomeUnknown; a write that never reached the server: BridgeUnavailable; "
        f"the server holds version 2"
    )


def _get_request(session_id: str, name: str) -> bytes:
    from dspex_actors.v1 import session_store_pb2 as pb

    return pb.GetVariableRequest(session_id=session_id, identifier=name).SerializeToString()


def _version_of(response: bytes) -> int:
    from dspex_actors.v1 import session_store_pb2 as pb

    return pb.GetVariableResponse.FromString(response).version
