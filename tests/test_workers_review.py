"""Session workers against what a reviewer tried: a call that never returns when
the supervisor stops, a server gone before the worker attached, two contexts
starting workers at once."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time

import pytest
from bridge_support import killable_server

from dspex_actors import Supervisor, workers
from dspex_actors.errors import LimitExceeded, StateError
from dspex_actors.supervision import Context
from dspex_actors.workers import session

WAIT = 60.0  # a hang guard: spawning a worker takes seconds


def where() -> int:
    session()
    return os.getpid()


def mark_then_block() -> None:
    """In the worker: say it runs (through the session), then never return."""
    session()["started"] = True
    threading.Event().wait()


def test_stopping_a_supervisor_whose_worker_is_busy_returns() -> None:
    """A call that never returns gets ``STOP_GRACE`` seconds, then its process is
    killed: ``Supervisor.stop`` returns (the hang guard below kills the worker
    itself only if it did not, to end the test)."""
    supervisor = Supervisor.start()
    ctx = supervisor.start_context()
    ctx.register_variable("started", "boolean", False)
    worker = ctx.start_worker()
    pid = worker.submit(where).result(WAIT)
    worker.submit(mark_then_block)
    deadline = time.monotonic() + WAIT
    while not ctx["started"]:  # the blocking call runs in the worker
        assert time.monotonic() < deadline, "the call never started"
        threading.Event().wait(0.05)
    stopper = threading.Thread(target=supervisor.stop)
    stopper.start()
    stopper.join(WAIT)  # a hang guard, not a timing assert: stop ends the call
    hung = stopper.is_alive()
    if hung:
        os.kill(pid, signal.SIGKILL)
        stopper.join(WAIT)
    assert not hung, "Supervisor.stop() waits for a worker's call forever"
    assert multiprocessing.active_children() == []


def test_a_worker_that_cannot_attach_says_why() -> None:
    """The worker's server went away before its process attached: the call that
    needs the session raises why (``BridgeUnavailable``, unreachable), not a bare
    ``BrokenProcessPool``, and the worker is not respawned over and over."""
    with killable_server() as (server, address):
        supervisor = Supervisor.start(bridge_address=address, bridge_timeout=1.0)
        try:
            ctx = supervisor.start_context()
            ctx.register_variable("temperature", "float", 0.5)
            worker = ctx.start_worker()
            server.kill()
            server.wait()
            with pytest.raises(StateError, match="unreachable"):
                worker.submit(where).result(WAIT)
            assert worker.restarts == 0 and worker.alive
        finally:
            supervisor.stop()
    assert multiprocessing.active_children() == []


def start_at_once(ctx: Context, barrier: threading.Barrier) -> None:
    barrier.wait()
    with contextlib.suppress(LimitExceeded):
        ctx.start_worker()


def test_two_contexts_starting_workers_at_once_keep_the_supervisor_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two contexts starting a worker at once, with room for one: the supervisor
    never runs more than ``MAX_WORKERS`` (lowered to 2 here; no process is spawned,
    a worker's process starts at its first submit)."""
    monkeypatch.setattr(workers, "MAX_WORKERS", 2)
    rounds_over = 0
    with Supervisor.start() as supervisor:
        for _ in range(10):
            first, second = supervisor.start_context(), supervisor.start_context()
            first.start_worker()
            second.ensure_bridged()
            barrier = threading.Barrier(2)
            starters = [
                threading.Thread(target=start_at_once, args=(c, barrier)) for c in (first, second)
            ]
            for starter in starters:
                starter.start()
            for starter in starters:
                starter.join(WAIT)
            running = sum(len(c.workers) for c in supervisor.contexts())
            rounds_over += running > workers.MAX_WORKERS
            first.stop()
            second.stop()
    assert rounds_over == 0, f"{rounds_over} of 10 rounds ran more than MAX_WORKERS"
