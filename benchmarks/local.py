"""LocalState against a dict lookup and a bare Pykka ask."""

from __future__ import annotations

import threading
from typing import Any

import pykka

from benchmarks.timing import measure, table, target
from dspex_actors import LocalState
from dspex_actors.supervision import Supervisor


class EchoActor(pykka.ThreadingActor):
    """The baseline: an actor that answers each ask with its message."""

    def on_receive(self, message: Any) -> Any:
        return message


def run(rounds: int) -> dict[str, float]:
    print(f"\n== LocalState vs raw baselines ({rounds} rounds, round-robin) ==")
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

        series = measure(
            {
                "dict lookup (d.get)": (lambda: plain.get("temperature"), 2000),
                "bare pykka ask": (lambda: echo.ask(1), 1),
                "LocalState.get_variable": (lambda: state.get_variable("temperature"), 2000),
                "LocalState.get_variables (100 names)": (lambda: state.get_variables(names), 20),
                "LocalState.set_variable": (set_one, 1),
                "LocalState.update_variables (100 names)": (update_many, 1),
                "Context(local).get_variable": (lambda: ctx.get_variable("temperature"), 2000),
                "Context(local).set_variable": (ctx_set_one, 1),
            },
            rounds,
        )
    finally:
        supervisor.stop()
        state.cleanup()
        echo.stop()
    table(series, "bare pykka ask")
    p50 = {name: s.p50 for name, s in series.items()}
    get_ratio = p50["LocalState.get_variable"] / p50["dict lookup (d.get)"]
    set_ratio = p50["LocalState.set_variable"] / p50["bare pykka ask"]
    batch_ratio = p50["LocalState.update_variables (100 names)"] / p50["LocalState.set_variable"]
    target("get_variable p50 / dict lookup p50", get_ratio, 10)
    target("set_variable p50 / bare pykka ask p50", set_ratio, 1.3)
    target("update_variables(100) p50 / set_variable p50", batch_ratio, 5)
    ctx_get = p50["Context(local).get_variable"] / p50["LocalState.get_variable"]
    ctx_set = p50["Context(local).set_variable"] / p50["LocalState.set_variable"]
    target("Context get_variable p50 / LocalState get_variable p50", ctx_get, 1.2)
    target("Context set_variable p50 / LocalState set_variable p50", ctx_set, 1.2)
    print(f"  threads still running after the benchmark: {threading.active_count() - 1}")
    return {
        "get/dict": get_ratio,
        "set/ask": set_ratio,
        "update100/set": batch_ratio,
        "ctx_get/get": ctx_get,
        "ctx_set/set": ctx_set,
    }
