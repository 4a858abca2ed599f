"""Hostile clients cannot stall a SessionStore for everyone else.

* A pathological pattern (``^(a+)+$`` on ``"a" * 26 + "!"``, exponential for a
  backtracking matcher) is refused with ``ValidationError`` (rule "pattern") at
  once, while another session on the same server keeps answering.
* A glob longer than ``MAX_PATTERN`` (a 100 KB one) is refused with
  ``ValidationError`` (rule "pattern") before any matching, by the client and by
  the server, while another session keeps answering.
* Calls that send their headers and never a body: with a token, the unauthenticated
  ones are refused (UNAUTHENTICATED) from their headers alone, the body never sent;
  authenticated ones merely wait, costing no worker (the server has no pool to
  exhaust), and other clients keep working beside 64 of them.
* Health watches need no token: at most ``MAX_WATCHES`` are held at once (the rest
  RESOURCE_EXHAUSTED), so they cannot take every call slot from authenticated
  clients.

Evidence tests print their figures (run with ``-s``); they assert outcomes only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from dspex_actors.bridge import BridgedState, SessionStoreServer, serve
from dspex_actors.bridge.server.discovery import MAX_WATCHES
from dspex_actors.errors import ValidationError
from dspex_actors.limits import DEFAULT_LIMITS
from dspex_actors.records import MAX_PATTERN
from dspex_actors.v1 import session_store_pb2 as pb
from dspex_actors.wire import status as wire_status

SET_VARIABLE = "/dspex_actors.v1.SessionStore/SetVariable"
LIST_VARIABLES = "/dspex_actors.v1.SessionStore/ListVariables"
TOKEN = "t"


@dataclass
class Load:
    """Another session's get/set loop, with what it saw."""

    calls: int = 0
    errors: list[BaseException] = field(default_factory=list)
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (start, seconds)
    started: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, state: BridgedState) -> None:
        try:
            state.register_variable("n", "integer", 0)
            while not self.stop.is_set():
                begin = time.perf_counter()
                value = state.get_variable("n")
                state.set_variable("n", value + 1)
                self.latencies.append((begin, time.perf_counter() - begin))
                self.calls += 2
                self.started.set()
        except BaseException as exc:
            self.errors.append(exc)
            self.started.set()

    def max_latency_within(self, start: float, end: float) -> float:
        """The slowest get+set pair that overlapped ``[start, end]`` (seconds)."""
        overlapping = [s for b, s in self.latencies if b <= end and b + s >= start]
        return max(overlapping, default=0.0)


@pytest.fixture
def server() -> Iterator[SessionStoreServer]:
    with serve() as running:
        yield running


def test_a_pathological_pattern_stalls_nobody(server: SessionStoreServer) -> None:
    bad = BridgedState.init(address=server.address)
    other = BridgedState.init(address=server.address)
    load = Load()
    worker = threading.Thread(target=load.run, args=(other,))
    try:
        bad.register_variable("r", "string", "a", constraints={"pattern": "^(a+)+$"})
        worker.start()
        assert load.started.wait(10)
        refused = []
        calls_before = load.calls
        start = time.perf_counter()
        for length in range(20, 32):
            with pytest.raises(ValidationError) as caught:
                bad.set_variable("r", "a" * length + "!")
            refused.append(caught.value.rule)
        end = time.perf_counter()
        calls_during = load.calls - calls_before
    finally:
        load.stop.set()
        if worker.is_alive():
            worker.join()
        bad.cleanup()
        other.cleanup()
    assert load.errors == []
    assert refused == ["pattern"] * 12
    print(
        f"12 pathological sets refused in {end - start:.4f} s; the other session made "
        f"{calls_during} calls meanwhile ({load.calls} in all, none failed), max get+set "
        f"latency during the bad calls {load.max_latency_within(start, end) * 1000:.2f} ms"
    )


def test_a_huge_glob_pattern_is_refused_and_stalls_nobody(server: SessionStoreServer) -> None:
    """Matching a glob compiles it (fnmatch, ~20 us per '*a') on the server's event
    loop: uncapped, one ListVariables with a 100 KB glob stalled every session of the
    server for seconds. Patterns are capped at MAX_PATTERN characters: a longer one
    is a ValidationError (rule "pattern") before any matching, from the client before
    it sends and from the server for a client that sends it anyway, while another
    session keeps answering within its 0.5 s deadline. The longest allowed glob
    still works."""
    bad = BridgedState.init(address=server.address, timeout=60)
    other = BridgedState.init(address=server.address, timeout=0.5)
    load = Load()
    worker = threading.Thread(target=load.run, args=(other,))
    huge = "*a" * 50_000
    channel = grpc.insecure_channel(server.address)
    list_raw = channel.unary_unary(
        LIST_VARIABLES, request_serializer=None, response_deserializer=None
    )
    try:
        bad.register_variable("aaa", "integer", 1)  # a name to match the globs against
        worker.start()
        assert load.started.wait(10)
        start = time.perf_counter()
        with pytest.raises(ValidationError) as local:
            bad.list_variables(huge)
        raw = pb.ListVariablesRequest(session_id=bad.session_id, pattern=huge)
        with pytest.raises(grpc.RpcError) as sent:  # what a client without the check gets
            list_raw(raw.SerializeToString(), timeout=5)
        end = time.perf_counter()
        worst = "*a" * (MAX_PATTERN // 2)  # the costliest shape, as long as allowed
        longest_start = time.perf_counter()
        matched_worst = bad.list_variables(worst)
        longest_seconds = time.perf_counter() - longest_start
        matched = bad.list_variables("aaa" + "*" * (MAX_PATTERN - 3))
        with pytest.raises(ValidationError) as one_over:
            bad.list_variables("a" * (MAX_PATTERN + 1))
    finally:
        load.stop.set()
        if worker.is_alive():
            worker.join()
        channel.close()
        bad.cleanup()
        other.cleanup()
    assert isinstance(sent.value, grpc.Call)
    assert sent.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    from_server = wire_status.error_from_rpc(sent.value, server.address)
    assert isinstance(from_server, ValidationError)
    assert [local.value.rule, from_server.rule, one_over.value.rule] == ["pattern"] * 3
    assert matched_worst == []
    assert [record["name"] for record in matched] == ["aaa"]
    assert load.errors == []
    print(
        f"a 100 KB glob refused (rule 'pattern') by the client and by the server, both in "
        f"{(end - start) * 1000:.1f} ms; the other session's max latency meanwhile "
        f"{load.max_latency_within(start, end) * 1000:.1f} ms, no errors; the longest "
        f"allowed glob ({MAX_PATTERN} chars of '*a') answered in "
        f"{longest_seconds * 1000:.1f} ms"
    )


# -- calls that never send their body ------------------------------------------------------


def _stalled_body(release: threading.Event) -> Iterator[bytes]:
    """A request stream that sends nothing until the test releases it, then ends
    (by then the call is over: no body is ever sent)."""
    release.wait()
    yield from ()


def _stalled_calls(
    channel: grpc.Channel, count: int, release: threading.Event, token: str | None
) -> list[grpc.Future]:
    """``count`` SetVariable calls that send headers and then wait for ``release``."""
    stalled = channel.stream_unary(
        SET_VARIABLE, request_serializer=None, response_deserializer=None
    )
    metadata = (("authorization", f"Bearer {token}"),) if token is not None else None
    return [stalled.future(_stalled_body(release), metadata=metadata) for _ in range(count)]


def _busy_client(address: str, rounds: int) -> int:
    """An authenticated client's work: its own session, ``rounds`` set+get pairs."""
    with BridgedState.init(address=address, token=TOKEN) as state:
        state.register_variable("x", "integer", 0)
        for value in range(1, rounds + 1):
            assert state.set_variable("x", value) == value
            assert state.get_variable("x") == value
        return 2 * rounds + 1


def test_unauthenticated_stalled_calls_are_refused_from_their_headers() -> None:
    release = threading.Event()
    with serve(token=TOKEN) as server:
        channel = grpc.insecure_channel(server.address)
        futures: list[grpc.Future] = []
        try:
            futures = _stalled_calls(channel, 32, release, token=None)
            served = _busy_client(server.address, 50)  # while the stalled calls are open
            codes: list[grpc.StatusCode] = []
            for future in futures:
                with pytest.raises(grpc.RpcError) as refused:
                    future.result(timeout=10)
                assert isinstance(refused.value, grpc.Call)
                codes.append(refused.value.code())
            # Every refusal came while its request stream was still blocked: no body.
            assert not release.is_set()
        finally:
            for future in futures:
                future.cancel()
            release.set()
            channel.close()
    assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 32
    print(f"32 stalled unauthenticated calls refused with no body sent; {served} calls served")


def test_authenticated_stalled_calls_exhaust_nothing() -> None:
    release = threading.Event()
    with serve(token=TOKEN) as server:
        channel = grpc.insecure_channel(server.address)
        futures: list[grpc.Future] = []
        try:
            futures = _stalled_calls(channel, 64, release, token=TOKEN)
            start = time.perf_counter()
            served = sum(_busy_client(server.address, 25) for _ in range(4))
            elapsed = time.perf_counter() - start
            still_waiting = sum(not future.done() for future in futures)
        finally:
            for future in futures:
                future.cancel()
            release.set()
            channel.close()
        cancelled = sum(future.cancelled() for future in futures)
        with BridgedState.init(address=server.address, token=TOKEN) as after:
            after.register_variable("alive", "boolean", True)  # the server is well after
    assert still_waiting == 64  # they were stalled, not refused, while others were served
    assert cancelled == 64
    print(
        f"64 authenticated calls stalled without a body; {served} other calls served "
        f"meanwhile in {elapsed:.3f} s; all 64 cancelled at the end"
    )


def test_a_stalled_call_does_not_hold_its_session() -> None:
    """A write stuck before its body names no session yet: the session a stalled
    client would have written stays writable by others (nothing is locked)."""
    release = threading.Event()
    with serve(token=TOKEN) as server:
        owner = BridgedState.init(address=server.address, token=TOKEN)
        channel = grpc.insecure_channel(server.address)
        futures: list[grpc.Future] = []
        try:
            owner.register_variable("x", "integer", 0)
            futures = _stalled_calls(channel, 16, release, token=TOKEN)
            versions = [owner.set_variable("x", n) for n in range(1, 11)]
        finally:
            for future in futures:
                future.cancel()
            release.set()
            channel.close()
            owner.cleanup()
    assert versions == list(range(1, 11))


def test_a_cancelled_stalled_call_leaves_the_connection_usable() -> None:
    release = threading.Event()
    with serve(token=TOKEN) as server:
        channel = grpc.insecure_channel(server.address)
        try:
            futures = _stalled_calls(channel, 1, release, token=TOKEN)
            futures[0].cancel()
            assert futures[0].cancelled()
            health = channel.unary_unary(
                "/grpc.health.v1.Health/Check",
                request_serializer=None,
                response_deserializer=None,
            )
            assert health(b"", timeout=5) is not None  # same channel, same connection
        finally:
            release.set()
            channel.close()


def test_unauthenticated_health_watches_cannot_lock_out_clients() -> None:
    """The health service is exempt from the token and its Watch is a long-lived
    stream that counts toward max_concurrent_calls: uncapped, a client without the
    token could hold every call slot and authenticated clients were then refused
    (RESOURCE_EXHAUSTED). Watches are capped at MAX_WATCHES, far below the default
    max_concurrent_calls: the ones beyond are refused RESOURCE_EXHAUSTED, an
    authenticated client keeps working while the rest are held, and a slot freed
    by a cancelled watch can be taken again."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    assert DEFAULT_LIMITS.max_concurrent_calls > MAX_WATCHES
    attempts_per_channel, channel_count = MAX_WATCHES, 3  # three times the cap in all
    request = health_pb2.HealthCheckRequest(service="")
    with serve(token=TOKEN) as server:  # the default max_concurrent_calls
        channels = [grpc.insecure_channel(server.address) for _ in range(channel_count)]
        held: list[Any] = []
        refused: list[grpc.StatusCode] = []
        try:
            for channel in channels:  # no token
                stub = health_pb2_grpc.HealthStub(channel)
                for _ in range(attempts_per_channel):
                    watch = stub.Watch(request)
                    try:
                        next(watch)  # its first status arrived: the stream is open and held
                    except grpc.RpcError as exc:
                        assert isinstance(exc, grpc.Call)
                        refused.append(exc.code())
                    else:
                        held.append(watch)
            start = time.perf_counter()
            served = _busy_client(server.address, 25)  # while every watch slot is held
            elapsed = time.perf_counter() - start
            held.pop().cancel()
            again = health_pb2_grpc.HealthStub(channels[0]).Watch(request)
            try:
                reopened = next(again).status == health_pb2.HealthCheckResponse.SERVING
            finally:
                again.cancel()
        finally:
            for watch in held:
                watch.cancel()
            for channel in channels:
                channel.close()
    assert len(held) == MAX_WATCHES - 1  # one was cancelled to free its slot
    assert refused == [grpc.StatusCode.RESOURCE_EXHAUSTED] * (
        attempts_per_channel * channel_count - MAX_WATCHES
    )
    assert reopened
    print(
        f"{attempts_per_channel * channel_count} unauthenticated health watches tried: "
        f"{MAX_WATCHES} held, {len(refused)} refused RESOURCE_EXHAUSTED; an authenticated "
        f"client made {served} calls meanwhile in {elapsed:.3f} s (max_concurrent_calls "
        f"{DEFAULT_LIMITS.max_concurrent_calls})"
    )
