"""Session workers: spawned processes attached to their context's session, restarted
under the supervisor's policy, bounded, and stopped with the context."""

from __future__ import annotations

import multiprocessing
import os
import signal
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest

from dspex_actors import Supervisor
from dspex_actors.errors import LimitExceeded, SessionClosed, StateError
from dspex_actors.methods import SessionMethods
from dspex_actors.workers import MAX_PER_SESSION, SessionWorker, session

WAIT = 60.0  # a hang guard: spawning a process that imports the package takes a second


def bump(by: float) -> float:
    """In the worker: raise the session's temperature, through its own handle."""
    state = session()
    assert isinstance(state, SessionMethods)  # every handle of this package
    state["temperature"] = state["temperature"] + by
    return float(state["temperature"])


def where() -> tuple[int, str, bool]:
    """In the worker: its pid, its handle's kind, and whether the handle owns the session."""
    state = session()
    return os.getpid(), state.kind, bool(getattr(state, "owner", False))


def die() -> None:
    os._exit(3)


def test_the_first_worker_moves_the_session_and_works_on_it() -> None:
    with Supervisor.start() as supervisor:
        ctx = supervisor.start_context()
        ctx.register_variable("temperature", "float", 0.5, constraints={"min": 0, "max": 2})
        assert ctx.backend_info()["type"] == "local"
        worker = ctx.start_worker()
        assert ctx.backend_info()["type"] == "bridged"  # the migration the card describes
        pid, kind, owner = worker.submit(where).result(WAIT)
        assert pid != os.getpid() and kind == "bridged" and not owner
        assert worker.submit(bump, 0.25).result(WAIT) == 0.75
        assert ctx["temperature"] == 0.75  # the worker's write, seen by the context
    assert not worker.alive
    assert multiprocessing.active_children() == []


def test_a_worker_that_dies_is_started_again_with_the_session_intact() -> None:
    with Supervisor.start(max_restarts=2, within_seconds=60) as supervisor:
        ctx = supervisor.start_context()
        ctx.register_variable("temperature", "float", 0.5)
        worker = ctx.start_worker()
        first, _, _ = worker.submit(where).result(WAIT)
        with pytest.raises(BrokenProcessPool):
            worker.submit(die).result(WAIT)
        second, _, _ = worker.submit(where).result(WAIT)
        assert second != first and worker.restarts == 1
        assert worker.submit(bump, 1.0).result(WAIT) == 1.5
        with pytest.raises(BrokenProcessPool):
            worker.submit(die).result(WAIT)
        assert worker.submit(bump, 0.25).result(WAIT) == 1.75
        with pytest.raises(BrokenProcessPool):
            worker.submit(die).result(WAIT)
        with pytest.raises(StateError) as refused:  # a third death within the window
            worker.submit(where)
        assert "max_restarts" in str(refused.value)
        assert not worker.alive and worker not in ctx.workers
        assert ctx["temperature"] == 1.75  # the session outlived every worker


def test_workers_are_bounded_and_stop_with_their_context() -> None:
    with Supervisor.start() as supervisor:
        ctx = supervisor.start_context()
        workers = [ctx.start_worker() for _ in range(MAX_PER_SESSION)]
        with pytest.raises(LimitExceeded) as refused:
            ctx.start_worker()
        assert refused.value.details["limit"] == "max_workers_per_session"
        workers[0].submit(where).result(WAIT)  # one of them has a process
        ctx.stop()
        assert not any(w.alive for w in workers) and ctx.workers == []
        with pytest.raises(SessionClosed):
            workers[0].submit(where)
    assert multiprocessing.active_children() == []


def test_the_token_never_reaches_a_command_line() -> None:
    token = "worker-token-7f3a"
    with Supervisor.start(token=token) as supervisor:
        ctx = supervisor.start_context()
        worker = ctx.start_worker()
        pid, kind, _ = worker.submit(where).result(WAIT)
        assert kind == "bridged"
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert token.encode() not in command_line
        environment = Path(f"/proc/{pid}/environ").read_bytes()
        assert token.encode() not in environment


def test_session_outside_a_worker_says_so() -> None:
    with pytest.raises(StateError, match="not in a session worker"):
        session()


def test_a_worker_of_a_session_kept_in_redis_attaches_there(redis_url: str) -> None:
    with Supervisor.start(store=redis_url) as supervisor:
        ctx = supervisor.start_context()
        ctx.register_variable("temperature", "float", 0.5)
        worker = ctx.start_worker()
        assert ctx.backend_info()["type"] == "redis"
        _, kind, owner = worker.submit(where).result(WAIT)
        assert kind == "redis" and not owner
        assert worker.submit(bump, 0.5).result(WAIT) == 1.0
        assert ctx["temperature"] == 1.0


def answer_after_death(worker: SessionWorker) -> int:
    """The pid that answers once ``worker``'s process was killed: the first call may
    still be handed to the dead pool (its future fails: never run); the next one
    finds the pool broken and starts a fresh process."""
    for _ in range(2):
        try:
            pid, _, _ = worker.submit(where).result(WAIT)
        except BrokenProcessPool:
            continue
        return int(pid)
    raise AssertionError("no fresh worker answered")


def temperature() -> float:
    state = session()
    assert isinstance(state, SessionMethods)
    return float(state["temperature"])


def test_a_worker_killed_with_sigkill_is_restarted_and_the_give_up_is_reported() -> None:
    restarts: list[tuple[str, BaseException | None]] = []
    give_ups: list[tuple[str, StateError]] = []
    with Supervisor.start(
        max_restarts=1,
        within_seconds=60,
        on_restart=lambda sid, error: restarts.append((sid, error)),
        on_give_up=lambda sid, failure: give_ups.append((sid, failure)),
    ) as supervisor:
        ctx = supervisor.start_context()
        ctx.register_variable("temperature", "float", 0.5)
        worker = ctx.start_worker()
        first, _, _ = worker.submit(where).result(WAIT)
        assert worker.submit(bump, 0.25).result(WAIT) == 0.75
        os.kill(first, signal.SIGKILL)
        second = answer_after_death(worker)
        assert second != first and worker.restarts == 1
        assert [(sid, type(error)) for sid, error in restarts] == [
            (ctx.session_id, BrokenProcessPool)
        ]
        assert worker.submit(temperature).result(WAIT) == 0.75  # the session intact
        assert give_ups == []
        os.kill(second, signal.SIGKILL)
        with pytest.raises(StateError, match="max_restarts"):
            answer_after_death(worker)
        assert [sid for sid, _ in give_ups] == [ctx.session_id]
        assert "max_restarts" in str(give_ups[0][1]) and len(restarts) == 1
        assert not worker.alive and worker not in ctx.workers
        assert ctx["temperature"] == 0.75
    assert multiprocessing.active_children() == []
