"""The Calls stream's hold: calls ready while a message of reads waits for its answer
wait for it too, then leave together in one message.

A message of reads (gets, has, a batch get) arms the hold until its first answer
comes, or at most twice the answers' usual time (and never over ``_HOLD_MOST``); a
message with a write arms nothing, and a lone call never waits: nothing is in
flight when it is sent. The end of a stream releases whatever is held.
"""

from __future__ import annotations

import concurrent.futures
import signal
import threading

import pytest
from bridge_support import killable_server

from dspex_actors.bridge import BridgedState
from dspex_actors.bridge.client import calls
from dspex_actors.v1 import session_store_pb2 as pb

WAIT = 30.0


def _get(call: int) -> pb.CallRequest:
    return pb.CallRequest(call=call, get_variable=pb.GetVariableRequest(identifier="v"))


def _set(call: int) -> pb.CallRequest:
    return pb.CallRequest(call=call, set_variable=pb.SetVariableRequest(identifier="v"))


def test_a_message_of_reads_arms_the_hold_and_its_answer_releases_it() -> None:
    hold = calls._Hold()
    assert not hold.sent_at  # nothing in flight: a call goes at once
    hold.wait()  # (returns: nothing to wait for)
    hold.sent([_get(1), _get(2)])
    assert hold.sent_at
    hold.came()
    assert not hold.sent_at
    assert hold.round_trip < calls._HOLD_FIRST  # the answer's time, into the average


def test_a_waiting_writer_is_woken_by_the_answer() -> None:
    """The writer waits (the hold's limit raised far past the test's); the reader's
    answer, from another thread, wakes it."""
    hold = calls._Hold()
    hold.round_trip = 3600.0
    hold.sent([_get(1)])
    writer = threading.Thread(target=hold.wait)
    writer.start()
    while not hold.waiting:  # it waits on the answer now
        threading.Event().wait(0.001)
    hold.came()
    writer.join(WAIT)
    assert not writer.is_alive()


def test_a_message_with_a_write_arms_nothing() -> None:
    """A write may wait for its session's actor: nothing waits behind it."""
    hold = calls._Hold()
    hold.sent([_get(1), _set(2)])
    assert not hold.sent_at
    hold.sent([_set(3)])
    assert not hold.sent_at
    hold.came()  # an answer with no message of reads waiting: the average is kept
    assert hold.round_trip == calls._HOLD_FIRST


@pytest.mark.parametrize("coalesce", [True, False], ids=["coalesced", "coalesce=False"])
def test_calls_ready_while_a_get_waits_for_its_answer_go_together_after_it(
    coalesce: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's process is stopped with one get on the wire; seven more threads
    call meanwhile. Held behind it (the hold's limits raised, so the test does not
    race them), the seven leave in one message once its answer comes; with
    ``coalesce=False`` nothing is held or coalesced. Each thread gets its own value."""
    monkeypatch.setattr(calls, "_HOLD_FIRST", 3600.0)
    monkeypatch.setattr(calls, "_HOLD_MOST", 3600.0)
    with killable_server() as (process, address):
        state = BridgedState.init(address=address, timeout=WAIT, coalesce=coalesce)
        try:
            names = [f"v{i}" for i in range(8)]
            for i, name in enumerate(names):
                state.register_variable(name, "integer", i)
            stream = state._calls
            assert stream is not None
            before = stream.coalesced
            process.send_signal(signal.SIGSTOP)
            try:
                with concurrent.futures.ThreadPoolExecutor(8) as pool:
                    first = pool.submit(state.get_variable, names[0])
                    while not any(w.sent for w in list(stream._waiting.values())):
                        threading.Event().wait(0.01)  # the first get is on the wire
                    rest = [pool.submit(state.get_variable, name) for name in names[1:]]
                    while stream.waiting_calls() < 8:
                        threading.Event().wait(0.01)
                    process.send_signal(signal.SIGCONT)
                    assert first.result(WAIT) == 0
                    assert [f.result(WAIT) for f in rest] == list(range(1, 8))
            finally:
                process.send_signal(signal.SIGCONT)
            assert stream.coalesced - before == (7 if coalesce else 0)
        finally:
            state.cleanup()
