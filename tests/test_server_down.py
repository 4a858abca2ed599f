"""A SessionStore that is down: a write that cannot have reached it is
``BridgeUnavailable`` (not applied), in our words; one that may have is never called so.

Issue 19, point 3: with the server stopped and every attempt refused, a write was
``OutcomeUnknown`` ("may or may not have been applied"). The client now knows, per
call, when nothing can have been sent: a Calls stream's requests are handed to gRPC
only once the server's headers came, and a unary write only once its channel is
READY, so a call that never got that far was certainly not sent. A write that was
handed over and got no answer stays ``OutcomeUnknown`` unless the settle says
otherwise (the soundness tests at the end).

The client learns that a server went away when its connection ends, in its own
time; the tests wait for that with a read that fails (a write issued before then may
go out on the dying connection, and is then honestly unknown).
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from bridge_support import held
from tcp_proxy import TcpProxy

from dspex_actors.bridge import BridgedState, serve
from dspex_actors.bridge.client.calls import CallStream, Unanswered
from dspex_actors.errors import BridgeUnavailable, OutcomeUnknown, StateError
from dspex_actors.v1 import session_store_pb2 as pb
from dspex_actors.wire import codec
from dspex_actors.wire import status as wire_status

Write = Callable[[BridgedState], Any]

WRITES: dict[str, Write] = {
    "set_variable": lambda state: state.set_variable("temperature", 1.5),
    "update_variables": lambda state: state.update_variables({"temperature": 2.0, "label": "b"}),
    "register_variable": lambda state: state.register_variable("fresh", "integer", 1),
    "delete_variable": lambda state: state.delete_variable("label"),
}


@pytest.fixture(params=[True, False], ids=["stream", "unary"])
def stream(request: pytest.FixtureRequest) -> bool:
    """Whether the handle sends its calls on the Calls stream or as unary RPCs."""
    flag: bool = request.param
    return flag


def _assert_in_our_words(error: StateError, address: str) -> None:
    """One line naming the server, with no repr of grpcio's objects."""
    message = str(error)
    assert address in message
    for unwanted in ("\n", "\t", "<_", "Rendezvous", "debug_error_string"):
        assert unwanted not in message, f"{unwanted!r} in {message!r}"


def _seen_down(state: BridgedState, address: str) -> None:
    """Block until the handle has seen its server gone: a read that fails."""
    with pytest.raises(BridgeUnavailable) as read:
        state.get_variable("temperature")
    _assert_in_our_words(read.value, address)
    assert "UNAVAILABLE" in str(read.value)


def _read_when_back(state: BridgedState, name: str, tries: int = 20) -> Any:
    """The value once a read gets through again: gRPC reconnects on its own schedule
    (at most ~1 s apart), so each try waits its timeout and the count bounds it."""
    for _ in range(tries):
        try:
            return state.get_variable(name)
        except BridgeUnavailable:
            continue
    raise AssertionError(f"the handle did not reach the server again in {tries} tries")


# -- not applied, and said so ----------------------------------------------------------


@contextlib.contextmanager
def _a_handle_whose_server_stops(
    stream: bool, *, wrote: bool = False
) -> Iterator[tuple[BridgedState, str]]:
    """A handle with two variables (and, with ``wrote``, one write that worked), its
    server stopped and the stop seen; the handle and the address, cleaned up after."""
    server = serve()
    address = server.address
    state = BridgedState.init(address=address, timeout=0.5, stream=stream)
    try:
        state.register_variable("temperature", "float", 0.5)
        state.register_variable("label", "string", "a")
        if wrote:
            assert state.set_variable("temperature", 0.7) == 1
        server.stop()
        _seen_down(state, address)
        yield state, address
    finally:
        server.stop()
        state.cleanup()


@pytest.mark.parametrize("write", list(WRITES))
def test_a_write_to_a_stopped_server_is_not_applied(stream: bool, write: str) -> None:
    with _a_handle_whose_server_stops(stream) as (state, address):
        with pytest.raises(BridgeUnavailable) as caught:
            WRITES[write](state)
        error = caught.value
        assert not isinstance(error, OutcomeUnknown)
        _assert_in_our_words(error, address)
        message = str(error)
        # gRPC's code (UNAVAILABLE: the connection was refused; DEADLINE_EXCEEDED only
        # on a machine too slow to see even a refusal within the probe's 0.1 s).
        assert re.search(
            rf"^SessionStore at {re.escape(address)} is unreachable "
            r"\((UNAVAILABLE|DEADLINE_EXCEEDED): ",
            message,
        ), message
        assert f"{write}" in message and message.endswith("was not applied")
        assert error.details["session_id"] == state.session_id


def test_every_write_after_a_stop_is_not_applied(stream: bool) -> None:
    """A working handle, its server stopped: each kind of write, one after another."""
    with _a_handle_whose_server_stops(stream, wrote=True) as (state, address):
        for name, write in WRITES.items():
            with pytest.raises(BridgeUnavailable) as caught:
                write(state)
            assert name in str(caught.value)
            _assert_in_our_words(caught.value, address)


def test_a_port_where_nothing_listens_is_unavailable_in_our_words(stream: bool) -> None:
    with socket.socket() as probe:  # a loopback port, free once this closes
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(BridgeUnavailable) as caught:
        BridgedState.init(address=address, timeout=0.3, stream=stream)
    _assert_in_our_words(caught.value, address)
    assert "UNAVAILABLE" in str(caught.value)


def test_a_tls_handshake_that_fails_is_unavailable_in_our_words() -> None:
    """TLS to a plaintext server: the channel never connects."""
    with serve() as server, pytest.raises(BridgeUnavailable) as caught:
        BridgedState.init(address=f"dspexs://{server.address}", timeout=0.3)
    _assert_in_our_words(caught.value, server.address)


def test_the_handle_works_again_once_its_server_is_back(stream: bool, tmp_path: Path) -> None:
    """Stopped, then started on the same port and file: the refused write never
    landed, and the same handle reads and writes again."""
    spec = f"sqlite:{tmp_path / 'sessions.db'}"
    server = serve(store=spec)
    address = server.address
    state = BridgedState.init(address=address, timeout=0.5, stream=stream)
    try:
        state.register_variable("temperature", "float", 0.5)
        server.stop()
        _seen_down(state, address)
        with pytest.raises(BridgeUnavailable, match="was not applied"):
            state.set_variable("temperature", 1.5)
        server = serve(address, store=spec)
        assert _read_when_back(state, "temperature") == 0.5  # the refused write: not there
        assert state.set_variable("temperature", 0.9) == 1
        assert state.get_record("temperature").version == 1
    finally:
        server.stop()
        state.cleanup()


# -- never "not applied" for a write that may have reached the server -------------------


class _OnDrop:
    """The proxy's hook when it loses a reply: note what the server holds, then make
    the server unreachable (so neither a retry nor the settle can reach it)."""

    def __init__(self, observe: Callable[[], Any], then: Callable[[], None]) -> None:
        self.observe, self.then = observe, then
        self.seen: list[Any] = []

    def __call__(self) -> None:
        self.seen.append(self.observe())
        self.then()


def test_an_applied_write_whose_reply_was_lost_is_unknown_until_settled(stream: bool) -> None:
    """The request reached the server (applied), its reply was lost, and the server
    is out of reach from then on: OutcomeUnknown, never BridgeUnavailable; once the
    server can be reached again, settle() says it was applied."""
    with serve() as server:
        hook = _OnDrop(lambda: None, lambda: None)
        with TcpProxy(server.address, on_drop=hook) as proxy:
            state = BridgedState.init(address=proxy.address, timeout=0.5, stream=stream)
            try:
                state.register_variable("x", "integer", 0)
                hook.observe = lambda: held(server, state.session_id).get_record("x").version
                hook.then = proxy.refuse
                proxy.drop_next_reply()
                with pytest.raises(OutcomeUnknown) as caught:
                    state.set_variable("x", 1)
                assert hook.seen == [1]  # applied before its reply was lost
                _assert_in_our_words(caught.value, proxy.address)
                with pytest.raises(BridgeUnavailable):  # still out of reach: a read says so
                    state.get_variable("x")
                proxy.refuse(False)
                assert _settled(caught.value) is True
                assert state.get_record("x").version == 1  # once
            finally:
                state.cleanup()


def _settled(unknown: OutcomeUnknown, tries: int = 20) -> bool:
    """``unknown.settle()`` once the server can be reached again (gRPC reconnects on
    its own schedule: each try waits its timeout, the count bounds it)."""
    for _ in range(tries):
        try:
            return unknown.settle()
        except OutcomeUnknown:
            continue
    raise AssertionError(f"settle() got no answer in {tries} tries")


def test_a_write_sent_as_the_connection_breaks_is_never_not_applied(stream: bool) -> None:
    """Writes in flight from several threads when the link is cut and then refused:
    each one is told applied, unknown or not applied, and none told not applied is
    in the session (read back after the link is restored)."""
    with serve() as server, TcpProxy(server.address) as proxy:
        state = BridgedState.init(address=proxy.address, timeout=0.5, stream=stream)
        try:
            names = [f"v{n}" for n in range(8)]
            for name in names:
                state.register_variable(name, "integer", 0)
            outcomes: dict[str, str] = {}
            start = threading.Barrier(len(names) + 1)

            def write(name: str) -> None:
                start.wait()
                try:
                    state.set_variable(name, 1)
                    outcomes[name] = "applied"
                except OutcomeUnknown:
                    outcomes[name] = "unknown"
                except BridgeUnavailable:
                    outcomes[name] = "not applied"

            threads = [threading.Thread(target=write, args=(name,)) for name in names]
            for thread in threads:
                thread.start()
            start.wait()
            proxy.refuse()  # cuts what is open, and refuses every new connection
            for thread in threads:
                thread.join()
            proxy.refuse(False)
            _read_when_back(state, "v0")  # (and the server has had time to run anything late)
            session = held(server, state.session_id)
            landed = {name for name in names if session.get_variable(name) == 1}
            told_not_applied = {n for n, outcome in outcomes.items() if outcome == "not applied"}
            assert not landed & told_not_applied, (outcomes, landed)
            assert {n for n, o in outcomes.items() if o == "applied"} <= landed
        finally:
            state.cleanup()


def test_a_streamed_write_given_up_before_the_headers_is_never_sent(tmp_path: Path) -> None:
    """The Calls stream holds its requests until the server's headers; a call whose
    caller gave up before them (told ``maybe_sent=False``) is dropped, never sent
    late. The request carries no deadline instant, so nothing on the server would
    refuse it if it came late: only the client keeps it from landing."""
    spec = f"sqlite:{tmp_path / 'sessions.db'}"
    server = serve(store=spec)
    state = BridgedState.init(address=server.address, timeout=0.5, stream=False)
    try:
        state.register_variable("x", "integer", 0)
        with TcpProxy(server.address) as proxy:
            channel = grpc.insecure_channel(proxy.address)
            calls = CallStream(channel, None, codec.DEFAULT_MAX_MESSAGE_BYTES, proxy.address)
            try:
                proxy.delay_requests(0.5)  # the stream's headers reach the server late
                write = pb.SetVariableRequest(
                    session_id=state.session_id,
                    identifier="x",
                    value=codec.pack(1),
                    request_id=uuid.uuid4().hex,
                    incarnation=state.incarnation,
                )
                with pytest.raises(Unanswered) as caught:
                    calls.call("set_variable", write, timeout=0.1)
                assert caught.value.maybe_sent is False
                # A later call on the same stream goes once the headers came: had the
                # first been sent, it would have reached the server before this one.
                read = pb.GetVariableRequest(session_id=state.session_id, identifier="x")
                calls.call("get_variable", read, timeout=10)
            finally:
                calls.close()
                channel.close()
        server.stop(grace=10)  # what it received has run
        server = serve(store=spec)
        with BridgedState.init(
            address=server.address, session_id=state.session_id, create=False
        ) as again:
            assert again.get_record("x").version == 0
    finally:
        server.stop()
        state.cleanup()  # its server is gone: logged, not raised


# -- gRPC's words, on one line ------------------------------------------------------------


@pytest.fixture
def unavailable_call() -> Iterator[grpc.RpcError]:
    """A real failed call whose details span lines, as some gRPC failures' do."""

    def abort(request: bytes, context: grpc.ServicerContext) -> bytes:
        context.abort(grpc.StatusCode.UNAVAILABLE, "first line\n\tsecond line\r\nthird")
        raise AssertionError("abort returned")

    handler = grpc.method_handlers_generic_handler(
        "test.Down", {"Fail": grpc.unary_unary_rpc_method_handler(abort)}
    )
    with futures.ThreadPoolExecutor(max_workers=1) as pool:
        server = grpc.server(pool)
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                with pytest.raises(grpc.RpcError) as caught:
                    channel.unary_unary(
                        "/test.Down/Fail", request_serializer=None, response_deserializer=None
                    )(b"", timeout=5)
                yield caught.value
        finally:
            server.stop(None).wait()


def test_a_transport_failure_is_quoted_as_its_code_and_one_line(
    unavailable_call: grpc.RpcError,
) -> None:
    error = wire_status.error_from_rpc(unavailable_call, "127.0.0.1:9")
    assert isinstance(error, BridgeUnavailable)
    assert str(error) == (
        "SessionStore at 127.0.0.1:9 is unreachable (UNAVAILABLE: first line second line third)"
    )
    assert wire_status.failure_text(unavailable_call) == (
        "UNAVAILABLE: first line second line third"
    )
