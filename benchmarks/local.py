"""LocalState and a local Context beside a dict lookup and a bare Pykka ask."""

from __future__ import annotations

import threading
from typing import Any

import pykka

from benchmarks.suite import Op, Run, sample_ops
from dspex_actors import LocalState, Supervisor

SUITE = "local"


class EchoActor(pykka.ThreadingActor):
    """The baseline: an actor that answers each ask with its message."""

    def on_receive(self, message: Any) -> Any:
        return message


def run(run: Run) -> None:
    samples: int = run.pick(3000, 500)
    echo = EchoActor.start()
    state = LocalState.init()
    supervisor = Supervisor.start()
    ctx = supervisor.start_context()
    names = [f"v{i}" for i in range(100)]
    try:
        for s in (state, ctx):
            s.register_variable("temperature", "float", 0.7, constraints={"min": 0, "max": 2})
            for name in names:
                s.register_variable(name, "integer", 0, constraints={"min": 0})
        plain = {"temperature": 0.7}
        counter = iter(range(10**9))

        def set_one() -> object:
            return state.set_variable("temperature", 1.0 if next(counter) & 1 else 0.5)

        def ctx_set_one() -> object:
            return ctx.set_variable("temperature", 1.0 if next(counter) & 1 else 0.5)

        def update_many() -> None:
            i = next(counter)
            state.update_variables({name: i for name in names})

        ask = "pykka.ask"
        ops = [
            Op(
                "dict.get",
                "dict lookup (d.get)",
                "baseline",
                "get",
                lambda: plain.get("temperature"),
                2000,
            ),
            Op(ask, "bare Pykka ask", "baseline", "ask", lambda: echo.ask(1)),
            Op(
                "local.get",
                "LocalState.get_variable",
                "local",
                "get",
                lambda: state.get_variable("temperature"),
                2000,
                baseline="dict.get",
            ),
            Op(
                "local.get100",
                "LocalState.get_variables (100 names)",
                "local",
                "get100",
                lambda: state.get_variables(names),
                20,
                baseline=ask,
            ),
            Op("local.set", "LocalState.set_variable", "local", "set", set_one, baseline=ask),
            Op(
                "local.update100",
                "LocalState.update_variables (100 names)",
                "local",
                "update100",
                update_many,
                baseline="local.set",
            ),
            Op(
                "context.local.get",
                "Context (local).get_variable",
                "context",
                "get",
                lambda: ctx.get_variable("temperature"),
                2000,
                baseline="local.get",
            ),
            Op(
                "context.local.set",
                "Context (local).set_variable",
                "context",
                "set",
                ctx_set_one,
                baseline="local.set",
            ),
        ]
        sample_ops(run, SUITE, "local", ops, samples)
    finally:
        supervisor.stop()
        state.cleanup()
        echo.stop()
    run.results.value(
        "local.threads_left",
        threading.active_count() - 1,
        "threads",
        "threads still running after the local suite",
    )
