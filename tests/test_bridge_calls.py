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
import threading
from collections.abc import Iterator

import pytest

from dspex_actors import failpoints
from dspex_actors.bridge import BridgedState, SessionStoreServer, serve
from dspex_actors.errors import LimitExceeded, ValidationError, VersionConflict
from dspex_actors.limits import Limits

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


def test_calls_past_a_streams_limit_are_refused_not_applied() -> None:
    """Four calls may run on one stream: of six writes stalled in the store, two are
    refused at once (LimitExceeded, nothing changed) and four complete once let go."""
    limits = Limits(max_calls_per_connection=4)
    gate: concurrent.futures.Future[None] = concurrent.futures.Future()
    stalled = threading.Semaphore(0)

    async def stall() -> None:
        stalled.release()
        await asyncio.wrap_future(gate)

    with serve(limits=limits) as server:
        state = BridgedState.init(address=server.address, timeout=WAIT)
        try:
            names = [f"v{i}" for i in range(6)]
            for name in names:
                state.register_variable(name, "integer", 0)
            with (
                failpoints.enabled("store.apply", stall),
                concurrent.futures.ThreadPoolExecutor(6) as pool,
            ):
                calls = [pool.submit(state.set_variable, name, 1) for name in names]
                early = []  # the stalled four cannot finish yet: these are refused
                for call in concurrent.futures.as_completed(calls, timeout=WAIT):
                    early.append(call)
                    if len(early) == 2:
                        break
                for _ in range(4):
                    assert stalled.acquire(timeout=WAIT)
                gate.set_result(None)
                outcomes = [c.exception(WAIT) or c.result() for c in calls]
            assert all(isinstance(call.exception(), LimitExceeded) for call in early)
            assert sum(isinstance(o, LimitExceeded) for o in outcomes) == 2
            assert [o for o in outcomes if not isinstance(o, LimitExceeded)] == [1] * 4
            values = state.get_variables(names)
            assert sorted(values.values()) == [0, 0, 1, 1, 1, 1]  # the refused: unchanged
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
