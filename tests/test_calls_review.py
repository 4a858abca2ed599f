"""What a reviewer tried against the Calls streams: the sync stream's bare-lock waiters,
SimpleQueue outbox and GIL yields; the server's one-turn wait before a first answer;
the asyncio stream's timer in place of timeout+shield.

Real servers throughout (in this process, or a child the test SIGSTOPs), the
server's own failpoints to hold its writes; nothing of ours is mocked.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import os
import queue
import signal
import threading
import time
import types
from collections.abc import Iterator
from typing import Any

import grpc
import grpc.aio
import pytest
from bridge_support import killable_server

from dspex_actors import failpoints
from dspex_actors.aio import AsyncBridgedState
from dspex_actors.bridge import BridgedState, SessionStoreServer, serve
from dspex_actors.bridge.client import calls as calls_module
from dspex_actors.bridge.client.calls import CallStream, Unanswered
from dspex_actors.errors import BridgeUnavailable, StateError
from dspex_actors.testing.aio import shared_loop
from dspex_actors.v1 import session_store_pb2 as pb
from dspex_actors.wire import codec

WAIT = 30.0  # a hang guard


@pytest.fixture
def server() -> Iterator[SessionStoreServer]:
    with serve() as running:
        yield running


def _get(session_id: str, name: str) -> pb.GetVariableRequest:
    return pb.GetVariableRequest(session_id=session_id, identifier=name)


def _set(session_id: str, name: str, value: Any, request_id: str) -> pb.SetVariableRequest:
    return pb.SetVariableRequest(
        session_id=session_id, identifier=name, value=codec.pack(value), request_id=request_id
    )


def _until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)  # polling a real condition, with a deadline


# -- the sync stream: deadlines ----------------------------------------------------------------


def test_zero_negative_and_infinite_deadlines_on_the_sync_stream(
    server: SessionStoreServer,
) -> None:
    """0 and negative: not sent (maybe_sent=False), the stream stays usable; inf:
    answered (clipped to TIMEOUT_MAX, no OverflowError)."""
    owner = BridgedState.init(address=server.address)
    channel = grpc.insecure_channel(server.address)
    stream = CallStream(channel, None, 4 << 20, server.address)
    try:
        owner.register_variable("x", "integer", 1)
        assert stream.call("get_variable", _get(owner.session_id, "x"), WAIT)  # stream up
        for timeout in (0.0, -1.0, -math.inf):
            with pytest.raises(Unanswered) as unanswered:
                stream.call("set_variable", _set(owner.session_id, "x", 9, f"r{timeout}"), timeout)
            assert unanswered.value.maybe_sent is False
        _until(lambda: stream.waiting_calls() == 0, "a call given up on stayed waiting")
        assert owner.get_variable("x") == 1  # none of them was applied
        reply = stream.call("get_variable", _get(owner.session_id, "x"), math.inf)
        assert codec.unpack(reply.value, max_bytes=1 << 20) == 1
    finally:
        stream.close()
        channel.close()
        owner.cleanup()


def test_a_nan_deadline_is_refused_before_anything_is_sent(server: SessionStoreServer) -> None:
    owner = BridgedState.init(address=server.address)
    channel = grpc.insecure_channel(server.address)
    stream = CallStream(channel, None, 4 << 20, server.address)
    try:
        owner.register_variable("x", "integer", 1)
        assert stream.call("get_variable", _get(owner.session_id, "x"), WAIT)  # stream up
        with pytest.raises(ValueError):
            stream.call("set_variable", _set(owner.session_id, "x", 9, "nan"), math.nan)
        _until(lambda: stream.waiting_calls() == 0, "the NaN call stayed waiting")
        assert owner.get_variable("x") == 1, "the refused call's write was applied"
    finally:
        stream.close()
        channel.close()
        owner.cleanup()


@pytest.mark.parametrize("stream", [True, False])
def test_an_infinite_handle_timeout_is_refused_at_init_or_works(
    server: SessionStoreServer, stream: bool
) -> None:
    owner = BridgedState.init(address=server.address)
    try:
        owner.register_variable("x", "integer", 1)
        try:
            handle = BridgedState.init(
                address=server.address,
                session_id=owner.session_id,
                create=False,
                timeout=math.inf,
                stream=stream,
            )
        except (ValueError, StateError):
            return  # refused with a specific error: fine
        with handle:
            assert handle.get_variable("x") == 1
    finally:
        owner.cleanup()


# -- the sync stream: a frozen server, many threads, short deadlines -----------------------------


def test_many_threads_with_short_deadlines_across_a_sigstopped_server() -> None:
    """8 threads call on one stream while the server is frozen (SIGSTOP): each call
    ends within its deadline (Unanswered or BridgeUnavailable), none hangs, the
    reader thread survives (a lock released twice would raise in it: pytest's
    thread-exception hook turns that into an error); after SIGCONT every thread's
    calls are answered again on the same channel."""
    with killable_server() as (process, address):
        owner = BridgedState.init(address=address, timeout=0.3)
        handles = [
            BridgedState.init(
                address=address, session_id=owner.session_id, create=False, timeout=0.3
            )
            for _ in range(8)
        ]
        try:
            owner.register_variable("x", "integer", 0)
            frozen = threading.Event()
            thawed = threading.Event()
            outcomes: list[str] = []

            def work(handle: BridgedState) -> None:
                for n in range(60):
                    if n == 20:
                        assert frozen.wait(WAIT)
                    if n == 40:
                        assert thawed.wait(WAIT)
                        _until_answered(handle)
                    try:
                        handle.get_variable("x")
                        outcomes.append("ok")
                    except (BridgeUnavailable, StateError) as exc:
                        outcomes.append(type(exc).__name__)

            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                futures = [pool.submit(work, h) for h in handles]
                os.kill(process.pid, signal.SIGSTOP)
                try:
                    frozen.set()
                finally:
                    # let the frozen phase run: each thread makes 20 calls at 0.3 s
                    deadline = time.monotonic() + WAIT
                    while sum(o != "ok" for o in outcomes) < 8 and time.monotonic() < deadline:
                        time.sleep(0.01)  # polling a real condition, with a deadline
                    os.kill(process.pid, signal.SIGCONT)
                    thawed.set()
                for future in futures:
                    future.result(timeout=WAIT * 4)
            assert outcomes.count("ok") >= 8 * 20  # everything after the thaw answered
            assert any(o != "ok" for o in outcomes)
            assert handles[0].get_variable("x") == 0
        finally:
            for handle in handles:
                handle.close()
            owner.close()


def _until_answered(handle: BridgedState) -> None:
    deadline = time.monotonic() + WAIT
    while True:
        try:
            handle.get_variable("x")
            return
        except (BridgeUnavailable, StateError):
            assert time.monotonic() < deadline, "the server never answered after SIGCONT"


# -- the sync stream: the writer's yields ------------------------------------------------------


def test_a_lone_call_never_yields_and_a_burst_yields_at_most_four_times(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(calls_module, "time", types.SimpleNamespace(sleep=sleeps.append))
    outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
    lone: dict[int, Any] = {1: object()}
    calls_module._let_callers_queue(outbox, lone)
    assert sleeps == []
    # 8 waiting, none queued, each yield lets one more in: at most 4 yields
    waiting: dict[int, Any] = {n: object() for n in range(8)}

    def one_more(_: float) -> None:
        sleeps.append(0)
        outbox.put(object())

    monkeypatch.setattr(calls_module, "time", types.SimpleNamespace(sleep=one_more))
    calls_module._let_callers_queue(outbox, waiting)
    assert len(sleeps) == 4


# -- the server's wait before a first answer --------------------------------------------------


def test_answers_held_at_the_server_all_come_back_once_released(
    server: SessionStoreServer,
) -> None:
    """16 writes from 16 threads on one coalesced stream are held in the store, then
    released together: every one answered, none lost or doubled, each value read
    back; the stream's later lone calls are answered at once."""
    owner = BridgedState.init(address=server.address)
    handles = [
        BridgedState.init(address=server.address, session_id=owner.session_id, create=False)
        for _ in range(16)
    ]
    held = threading.Semaphore(0)
    gate = threading.Event()

    def stall() -> None:
        held.release()
        assert gate.wait(WAIT)

    try:
        for n in range(16):
            owner.register_variable(f"v{n}", "integer", 0)
        with (
            concurrent.futures.ThreadPoolExecutor(16) as pool,
            failpoints.enabled("store.apply", stall),
        ):
            futures = [pool.submit(h.set_variable, f"v{n}", n + 1) for n, h in enumerate(handles)]
            assert held.acquire(timeout=WAIT)  # at least one is held in the store
            gate.set()
            versions = [f.result(timeout=WAIT) for f in futures]
        assert versions == [1] * 16
        assert owner.get_variables([f"v{n}" for n in range(16)]) == {
            f"v{n}": n + 1 for n in range(16)
        }
    finally:
        gate.set()
        for handle in handles:
            handle.close()
        owner.cleanup()


# -- the asyncio stream: cancellations and timers ---------------------------------------------


def test_async_callers_cancelled_and_timed_out_while_the_server_holds_them(
    server: SessionStoreServer, aio_poller: None, caplog: pytest.LogCaptureFixture
) -> None:
    """24 tasks write on one asyncio stream while the store holds every write; a
    third are cancelled, a third time out (0.2 s), a third wait: no "exception was
    never retrieved", no timer left, the stream answers after, and what each caller
    was told matches what the server applied (a cancelled or timed-out write is
    settled as applied or not by its handle, never lost silently)."""
    gate = threading.Event()
    held = threading.Semaphore(0)

    async def stall() -> None:  # on the server's loop
        held.release()
        await asyncio.to_thread(gate.wait, WAIT)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        async with await AsyncBridgedState.init(address=server.address) as owner:
            for n in range(24):
                await owner.register_variable(f"v{n}", "integer", 0)
            async with await AsyncBridgedState.init(
                address=server.address, session_id=owner.session_id, create=False, timeout=0.3
            ) as quick:
                scheduled_before = len(loop._scheduled)  # type: ignore[attr-defined]
                try:
                    with failpoints.enabled("store.apply", stall):
                        tasks = [asyncio.create_task(_write(owner, quick, n)) for n in range(24)]
                        deadline = loop.time() + WAIT
                        while not held.acquire(blocking=False):  # a real condition, polled
                            assert loop.time() < deadline, "no write reached the store"
                            await asyncio.sleep(0.01)
                        for n, task in enumerate(tasks):
                            if n % 3 == 0:
                                task.cancel()
                        # the quick handle's calls end on their own deadline (and settle)
                        await asyncio.wait([t for n, t in enumerate(tasks) if n % 3 == 1])
                        gate.set()
                        results = await asyncio.gather(*tasks, return_exceptions=True)
                finally:
                    gate.set()
                for n, result in enumerate(results):
                    if n % 3 == 0:
                        assert isinstance(result, asyncio.CancelledError), (n, result)
                    elif n % 3 == 1:
                        assert isinstance(result, StateError), (n, result)
                    else:
                        assert result == 1, (n, result)
                assert await owner.get_variable("v2") == 3
                assert await quick.get_variable("v2") == 3
                # every call's timer was cancelled with its call
                assert len(loop._scheduled) <= scheduled_before + 2  # type: ignore[attr-defined]

    shared_loop().run(scenario())
    never = [r for r in caplog.records if "never retrieved" in r.getMessage()]
    assert never == []


async def _write(owner: AsyncBridgedState, quick: AsyncBridgedState, n: int) -> Any:
    if n % 3 == 1:  # times out: the store holds it past the handle's 0.3 s
        return await quick.set_variable(f"v{n}", n + 1)
    return await owner.set_variable(f"v{n}", n + 1)
