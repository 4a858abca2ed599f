"""DSPy modules in session workers, tuned live from the main process.

A worker builds a :class:`~dspex_actors.dspy.SessionModule` on its own handle
(``workers.session()``) and a DummyLM; the main process sets ``temperature``; the
worker's next call, once its subscription delivered the write, carries the new value
in that very call's LM kwargs. On a Context that starts local and moves to the
bridge when its first worker starts, on a Supervisor whose store is Redis, and with
the session moved while a module bound to it in the main process keeps answering.
"""

from __future__ import annotations

import multiprocessing
import threading
from typing import Any

import pytest
from dspy_support import Recorder, configure

from dspex_actors import Supervisor
from dspex_actors.dspy import SessionModule
from dspex_actors.errors import ValidationError
from dspex_actors.methods import SessionMethods
from dspex_actors.supervision import Context
from dspex_actors.workers import session

WAIT = 60.0  # a hang guard: spawning a worker that imports DSPy takes seconds

_here: list[tuple[SessionModule, Recorder]] = []
"""In a worker: its program and its LM recorder, built by its first call."""


def ask(temperature_version: int, variable_id: str | None = None) -> dict[str, Any]:
    """In the worker: once the write at ``temperature_version`` is here, answer one
    question; the kwargs that call's LM carried, and what the binding refused."""
    if not _here:
        recorder = configure()
        _here.append((SessionModule(session(), "question -> answer"), recorder))
    program, recorder = _here[0]
    arrived = program.values.wait_for(
        "temperature", temperature_version, WAIT, variable_id=variable_id
    )
    assert arrived, "the write never reached the worker"
    assert program(question="What is six times seven?").answer == "42"
    return {**recorder.last, "refused": program.values.refused}


def tuned_worker_follows(ctx: Context) -> None:
    """The main process moves temperature 0.7 -> 0.2; the worker's calls follow."""
    worker = ctx.start_worker()
    record = ctx.get_record("temperature")
    assert worker.submit(ask, record.version).result(WAIT)["temperature"] == 0.7
    ctx["temperature"] = 0.2
    seen = worker.submit(ask, ctx.get_record("temperature").version).result(WAIT)
    assert seen["temperature"] == 0.2
    # A value the constraints refuse never reaches the module.
    with pytest.raises(ValidationError, match="temperature"):
        ctx["temperature"] = 5.0
    # Nor one of a variable registered again under the name with another type: the
    # binding keeps its pinned definition and its last good value.
    ctx.delete_variable("temperature")
    ctx.register_variable("temperature", "string", "very hot")
    again = ctx.get_record("temperature")
    kept = worker.submit(ask, again.version, again.id).result(WAIT)
    assert (kept["temperature"], kept["refused"]) == (0.2, 1)


def register_temperature(ctx: SessionMethods) -> None:
    ctx.register_variable("temperature", "float", 0.7, constraints={"min": 0, "max": 2})


def test_a_worker_module_uses_the_temperature_set_in_the_main_process() -> None:
    with Supervisor.start() as supervisor:
        ctx = supervisor.start_context()
        register_temperature(ctx)
        assert ctx.backend_info()["type"] == "local"
        tuned_worker_follows(ctx)
        assert ctx.backend_info()["type"] == "bridged"
    assert multiprocessing.active_children() == []


def test_a_worker_module_follows_a_session_kept_in_redis(redis_url: str) -> None:
    with Supervisor.start(store=redis_url) as supervisor:
        ctx = supervisor.start_context()
        register_temperature(ctx)
        tuned_worker_follows(ctx)
        assert ctx.backend_info()["type"] == "redis"
    assert multiprocessing.active_children() == []


def test_a_module_bound_in_the_main_process_follows_the_session_across_its_move() -> None:
    """A module of the main process answers in a loop on a local Context while the
    first worker moves the session to the bridge; after the move, a value the
    worker sets reaches the main module, and one the main process sets the worker."""
    recorder = configure()
    with Supervisor.start() as supervisor:
        ctx = supervisor.start_context()
        register_temperature(ctx)
        stop = threading.Event()
        answered: list[float] = []
        with SessionModule(ctx, "question -> answer") as program:

            def answer_in_a_loop() -> None:
                while not stop.is_set():
                    program(question="q")
                    answered.append(recorder.last["temperature"])

            caller = threading.Thread(target=answer_in_a_loop)
            caller.start()
            try:
                worker = ctx.start_worker()  # the move, while the loop runs
                assert ctx.backend_info()["type"] == "bridged"
                assert worker.submit(set_temperature, 0.3).result(WAIT) == 0.3
                record = ctx.get_record("temperature")
                assert program.values.wait_for("temperature", record.version, WAIT)
                program(question="q")
                assert recorder.last["temperature"] == 0.3
                ctx["temperature"] = 0.2
                seen = worker.submit(ask, ctx.get_record("temperature").version).result(WAIT)
                assert seen["temperature"] == 0.2
            finally:
                stop.set()
                caller.join(WAIT)
        assert answered and set(answered) <= {0.7, 0.3, 0.2}
    assert multiprocessing.active_children() == []


def set_temperature(value: float) -> float:
    """In the worker: set the session's temperature through its own handle."""
    state = session()
    assert isinstance(state, SessionMethods)
    state["temperature"] = value
    return float(state["temperature"])
