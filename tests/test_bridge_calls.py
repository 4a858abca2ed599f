"""The Calls stream: many calls on one long-lived stream, answered as their unary RPCs.

A real server on loopback throughout. Streamed and unary handles on one session see
the same values and the same errors (class and attributes); the handles of a channel
share one stream, from many threads, and a server's limit on calls per stream
refuses the excess as not applied while the rest complete; a stream the server
breaks is replaced and its calls retried once (request ids). The compliance kit,
the exactly-once tests and the history checker run on the stream too: it is
``BridgedState``'s default.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import signal
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from bridge_support import killable_server
from google.rpc.status_pb2 import Status

from dspex_actors import failpoints
from dspex_actors.bridge import BridgedState, SessionStoreServer, serve
from dspex_actors.bridge.client.calls import CALLS_METHOD
from dspex_actors.bridge.server.replies import Replies
from dspex_actors.errors import LimitExceeded, ValidationError, VersionConflict
from dspex_actors.limits import Limits
from dspex_actors.v1 import session_store_pb2 as pb
from dspex_actors.wire import codec

WAIT = 30.0


@pytest.fixture
def server() -> Iterator[SessionStoreServer]:
    with serve() as running:
        yield running


def _calls_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "dspex-calls"]


def test_streamed_and_unary_handles_agree_on_values_and_errors(
    server: SessionStoreServer,
) -> None:
    streamed = BridgedState.init(address=server.address)
    unary = BridgedState.init(
        address=server.address, session_id=streamed.session_id, create=False, stream=False
    )
    try:
        streamed.register_variable("t", "float", 0.5, constraints={"min": 0, "max": 2})
        assert unary.get_variable("t") == 0.5
        assert unary.set_variable("t", 1.0) == 1
        assert streamed.get_record("t").version == 1
        errors = []
        for handle in (streamed, unary):
            with pytest.raises(ValidationError) as invalid:
                handle.set_variable("t", 3.0)
            with pytest.raises(VersionConflict) as conflict:
                handle.set_variable("t", 1.5, expected_version=0)
            errors.append(
                (
                    str(invalid.value),
                    invalid.value.details,
                    conflict.value.expected,
                    conflict.value.actual,
                )
            )
        assert errors[0] == errors[1]
        assert len(_calls_threads()) == 1  # the streamed handle's; the unary one has none
    finally:
        unary.cleanup()
        streamed.cleanup()
    assert _calls_threads() == []  # closed with the channel's last handle


def test_threads_share_one_stream_and_each_gets_its_own_answer(
    server: SessionStoreServer,
) -> None:
    owner = BridgedState.init(address=server.address)
    handles = [
        BridgedState.init(address=server.address, session_id=owner.session_id, create=False)
        for _ in range(3)
    ]
    names = [f"n{i}" for i in range(8)]
    for name in names:
        owner.register_variable(name, "integer", 0)
    start = threading.Barrier(len(names))

    def bump(n: int) -> list[int]:
        handle = (owner, *handles)[n % 4]
        start.wait(WAIT)
        return [handle.set_variable(names[n], i) for i in range(1, 41)]

    try:
        with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
            versions = list(pool.map(bump, range(len(names))))
        assert versions == [list(range(1, 41))] * len(names)
        assert [owner.get_variable(name) for name in names] == [40] * len(names)
        assert len(_calls_threads()) == 1  # four handles, one channel, one stream
    finally:
        for handle in handles:
            handle.cleanup()
        owner.cleanup()


def _stalling_apply() -> tuple[concurrent.futures.Future[None], threading.Semaphore, Any]:
    """A gate, a count of writes that reached the store, and a store.apply action
    holding each write there until the gate opens."""
    gate: concurrent.futures.Future[None] = concurrent.futures.Future()
    stalled = threading.Semaphore(0)

    async def stall() -> None:
        stalled.release()
        await asyncio.wrap_future(gate)

    return gate, stalled, stall


def test_calls_past_a_streams_limit_are_refused_not_applied() -> None:
    """Four calls may run on one stream: six writes sent on a raw stream while the
    store holds them, two are refused at once (LimitExceeded, nothing changed) and
    four complete once let go."""
    gate, stalled, stall = _stalling_apply()
    with serve(limits=Limits(max_calls_per_connection=4)) as server:
        state = BridgedState.init(address=server.address, timeout=WAIT)
        names = [f"v{i}" for i in range(6)]
        for name in names:
            state.register_variable(name, "integer", 0)
        requests = [
            pb.CallRequest(
                call=n,
                timeout_seconds=WAIT,
                set_variable=pb.SetVariableRequest(
                    session_id=state.session_id,
                    identifier=name,
                    value=codec.pack(1),
                    request_id=f"raw-{n}",
                ),
            )
            for n, name in enumerate(names)
        ]
        outbox: queue.Queue[pb.CallRequest | None] = queue.Queue()
        for request in requests:
            outbox.put(request)
        try:
            with (
                failpoints.enabled("store.apply", stall),
                grpc.insecure_channel(server.address) as channel,
            ):
                replies = channel.stream_stream(
                    CALLS_METHOD,
                    request_serializer=pb.CallRequest.SerializeToString,
                    response_deserializer=pb.CallReply.FromString,
                )(iter(outbox.get, None), timeout=WAIT)
                answers = []
                for reply in replies:  # the two refusals come while four are held
                    answers.append(reply)
                    if len(answers) == 2:
                        break
                for _ in range(4):
                    assert stalled.acquire(timeout=WAIT)
                gate.set_result(None)
                for reply in replies:
                    answers.append(reply)
                    if len(answers) == 6:
                        break
                outbox.put(None)
                replies.cancel()
            refused = [Status.FromString(a.error) for a in answers[:2]]
            assert [s.code for s in refused] == [grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]] * 2
            assert [a.set_variable.version for a in answers[2:]] == [1] * 4
            values = state.get_variables(names)
            assert sorted(values.values()) == [0, 0, 1, 1, 1, 1]  # the refused: unchanged
        finally:
            state.cleanup()


def test_more_calls_than_a_stream_runs_go_unary_and_all_complete() -> None:
    """The server says how many calls a stream runs; a handle sends the excess as
    unary RPCs, so a burst larger than that queues instead of being refused."""
    gate, stalled, stall = _stalling_apply()
    with serve(limits=Limits(max_calls_per_connection=8)) as server:
        state = BridgedState.init(address=server.address, timeout=WAIT)
        names = [f"v{i}" for i in range(12)]
        try:
            for name in names:
                state.register_variable(name, "integer", 0)
            with (
                failpoints.enabled("store.apply", stall),
                concurrent.futures.ThreadPoolExecutor(len(names)) as pool,
            ):
                calls = [pool.submit(state.set_variable, name, 1) for name in names]
                for _ in range(7):  # 7 on the stream at once, and unary calls beside it
                    assert stalled.acquire(timeout=WAIT)
                gate.set_result(None)
                assert [call.result(WAIT) for call in calls] == [1] * len(names)
            assert state.get_variables(names) == dict.fromkeys(names, 1)
        finally:
            state.cleanup()


def test_a_graceful_stop_ends_idle_streams_instead_of_waiting_out_the_grace() -> None:
    server = serve()
    state = BridgedState.init(address=server.address)
    try:
        state.register_variable("n", "integer", 0)  # the stream is open, now idle
        stopping = threading.Thread(target=server.stop, kwargs={"grace": 600.0})
        stopping.start()
        assert server.wait_for_termination(WAIT)  # far sooner than the grace
        stopping.join(WAIT)
    finally:
        state.cleanup()
        server.stop()


def test_an_answer_too_large_for_the_client_fails_that_call_not_the_stream(
    server: SessionStoreServer,
) -> None:
    """The client says how large a reply it takes; a larger answer is that call's
    LimitExceeded, and the stream (and the calls sharing it) go on."""
    state = BridgedState.init(address=server.address, max_message_bytes=1 << 20)
    try:
        for name in ("a", "b"):
            state.register_variable(name, "string", "x" * 700_000)
        state.register_variable("n", "integer", 0)
        with pytest.raises(LimitExceeded):
            state.get_variables(["a", "b"])
        assert state.set_variable("n", 1) == 1
        assert len(state.get_variable("a")) == 700_000
        assert len(_calls_threads()) == 1  # the same stream throughout
    finally:
        state.cleanup()


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "unary"])
def test_a_servers_not_applied_answer_is_sent_again_within_the_deadline(
    server: SessionStoreServer, stream: bool
) -> None:
    """The server's ``BridgeUnavailable`` ("not started, not applied": its actor
    restarting, the server draining) is worth another attempt, on the stream as in a
    unary call: the write lands once, within the deadline."""
    from dspex_actors.errors import BridgeUnavailable

    with BridgedState.init(address=server.address, stream=stream) as state:
        state.register_variable("x", "integer", 0)
        refusal = BridgeUnavailable("its actor is restarting; not applied")
        with failpoints.enabled("store.apply", failpoints.fail(refusal, times=1)):
            assert state.set_variable("x", 1) == 1
        assert state.get_record("x").version == 1


# --- calls coalesced in one message -------------------------------------------------


def _raw_calls(address: str, batch: bool) -> Any:
    """A raw Calls stream (the client's metadata says whether it reads coalesced
    answers) and its outbox."""
    outbox: queue.Queue[pb.CallRequest | None] = queue.Queue()
    channel = grpc.insecure_channel(address)
    metadata = ((codec.CALLS_BATCH_KEY, "1"),) if batch else ()
    replies = channel.stream_stream(
        CALLS_METHOD,
        request_serializer=pb.CallRequest.SerializeToString,
        response_deserializer=pb.CallReply.FromString,
    )(iter(outbox.get, None), timeout=WAIT, metadata=metadata)
    return channel, outbox, replies


def _gets(session_id: str, names: list[str], first: int) -> pb.CallRequest:
    """One message: a get of each name, numbered from ``first``, coalesced."""
    calls = [
        pb.CallRequest(
            call=first + n,
            timeout_seconds=WAIT,
            get_variable=pb.GetVariableRequest(session_id=session_id, identifier=name),
        )
        for n, name in enumerate(names)
    ]
    calls[0].more.extend(calls[1:])
    return calls[0]


@pytest.mark.parametrize("batch", [True, False])
def test_calls_coalesced_in_one_message_are_each_answered(
    server: SessionStoreServer, batch: bool
) -> None:
    """Eight gets in one message: each is answered with its own number and value
    (one of them an error of its own); coalesced back only to a client that said it
    reads answers so — all eight in one message, the first answer's writer letting
    the others, ready in the same turn, join it — one answer a message to one that
    did not."""
    with BridgedState.init(address=server.address) as state:
        names = [f"v{i}" for i in range(7)]
        for i, name in enumerate(names):
            state.register_variable(name, "integer", i)
        channel, outbox, replies = _raw_calls(server.address, batch)
        with channel:
            assert dict(replies.initial_metadata()).get(codec.CALLS_BATCH_KEY) == "1"
            outbox.put(_gets(state.session_id, [*names, "absent"], 1))
            answers: dict[int, pb.CallReply] = {}
            messages = 0
            for message in replies:
                messages += 1
                assert batch or not message.more
                for reply in (message, *message.more):
                    answers[reply.call] = reply
                if len(answers) == 8:
                    break
            outbox.put(None)
            replies.cancel()
    assert sorted(answers) == list(range(1, 9))
    for n in range(1, 8):
        assert codec.unpack(answers[n].get_variable.value, max_bytes=1024) == n - 1
    status = Status.FromString(answers[8].error)
    assert status.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert messages == (1 if batch else 8)


def test_a_call_nested_deeper_than_one_message_ends_the_stream(
    server: SessionStoreServer,
) -> None:
    with BridgedState.init(address=server.address) as state:
        state.register_variable("v", "integer", 1)
        inner = _gets(state.session_id, ["v", "v"], 2)
        outer = _gets(state.session_id, ["v"], 1)
        outer.more.append(inner)  # a coalesced call carrying calls of its own
        channel, outbox, replies = _raw_calls(server.address, True)
        with channel:
            outbox.put(outer)
            with pytest.raises(grpc.RpcError) as ended:
                for _ in replies:
                    pass
            outbox.put(None)
    assert ended.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("coalesce", [True, False], ids=["coalesced", "coalesce=False"])
def test_calls_ready_together_go_in_one_message(coalesce: bool) -> None:
    """Eight threads call while the server cannot answer (its process is stopped):
    their requests wait in the stream's outbox for the server's headers, then go in
    one message, and each thread gets its own answer; with ``coalesce=False`` each
    goes in a message of its own (and the stream does not ask for answers so)."""
    with killable_server() as (process, address):
        # A channel of its own (another message limit): its Calls stream opens at
        # the first call, after the server is stopped.
        names = [f"v{i}" for i in range(8)]
        with BridgedState.init(address=address, stream=False) as owner:
            for i, name in enumerate(names):
                owner.register_variable(name, "integer", i)
            session_id = owner.session_id
            owner.owner = False  # the session stays for the handle below
        state = BridgedState.init(
            address=address,
            session_id=session_id,
            max_message_bytes=3 << 20,
            timeout=WAIT,
            create=False,
            coalesce=coalesce,
        )
        try:
            stream = state._calls
            assert stream is not None and stream.coalesced == 0
            asked = (codec.CALLS_BATCH_KEY, "1") in stream._metadata
            assert asked is coalesce
            process.send_signal(signal.SIGSTOP)
            try:
                with concurrent.futures.ThreadPoolExecutor(8) as pool:
                    futures = [pool.submit(state.get_variable, name) for name in names]
                    waiting = stream.waiting_calls
                    while waiting() < 8:  # all eight wait for the stream, unsent
                        assert not any(f.done() for f in futures), [f.result() for f in futures]
                        threading.Event().wait(0.01)
                    process.send_signal(signal.SIGCONT)
                    assert [f.result(WAIT) for f in futures] == list(range(8))
            finally:
                process.send_signal(signal.SIGCONT)
            assert stream.coalesced == (8 if coalesce else 0)
        finally:
            state.cleanup()


class _HeldWrites:
    """A stream's write side whose each write waits until released: what a client
    that reads slowly does to the server."""

    def __init__(self) -> None:
        self.written: list[pb.CallReply] = []
        self.release = asyncio.Event()

    async def write(self, message: pb.CallReply) -> None:
        await self.release.wait()
        self.written.append(message)


def test_answers_ready_while_one_is_written_go_together_in_the_next_message() -> None:
    """The first answer's write is held; three more become ready meanwhile: they go
    in one message after it (to a client that reads them so), in the order they
    became ready; to one that does not, one a message."""

    async def scenario(coalesce: bool) -> list[pb.CallReply]:
        held = _HeldWrites()
        replies = Replies(held, coalesce, max_reply=1 << 20)  # type: ignore[arg-type]
        first = asyncio.create_task(replies.send(pb.CallReply(call=1)))
        await asyncio.sleep(0)  # the first write is under way (and held)
        for call in (2, 3, 4):
            await replies.send(pb.CallReply(call=call))  # left to the writer
        held.release.set()
        await first
        return held.written

    together = asyncio.run(scenario(True))
    assert [[m.call, *(r.call for r in m.more)] for m in together] == [[1], [2, 3, 4]]
    apart = asyncio.run(scenario(False))
    assert [[m.call, *(r.call for r in m.more)] for m in apart] == [[1], [2], [3], [4]]
