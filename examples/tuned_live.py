"""Tuned live: an optimizer moves a session's temperature while two worker
processes answer questions with a DSPy module bound to it.

Each worker builds its module once; a subscription keeps its settings current, so
the optimizer's next move reaches every worker's next call with no round trip per
call. DSPy's DummyLM stands in for a model (no network, no key); a real program
configures ``dspy.LM("openai/gpt-4o-mini")`` instead.

Run: python examples/tuned_live.py   (the [dspy] extra)
"""

import dspy
from dspy.utils.dummies import DummyLM

from dspex_actors import Supervisor
from dspex_actors.dspy import SessionModule
from dspex_actors.workers import session

program = None  # in each worker: its module, built by its first question


def answer(question, version):
    """In a worker: answer once the optimizer's move (``version``) has arrived."""
    global program
    if program is None:
        dspy.configure(lm=DummyLM({"": {"answer": "42"}}))
        program = SessionModule(session(), "question -> answer")
    assert program.values.wait_for("temperature", version, timeout=10)
    return program(question=question).answer, program.settings["temperature"]


if __name__ == "__main__":  # workers are spawned: they import this file, not run it
    with Supervisor.start() as supervisor:
        ctx = supervisor.start_context()
        ctx.register_variable("temperature", "float", 0.7, constraints={"min": 0.0, "max": 2.0})
        workers = [ctx.start_worker() for _ in range(2)]  # the first moves it to the bridge
        for temperature in (0.7, 0.4, 0.1):  # the optimizer's moves
            ctx["temperature"] = temperature
            version = ctx.variable("temperature").version
            replies = [w.submit(answer, "What is 6 x 7?", version).result() for w in workers]
            print(f"temperature {temperature}: workers answered {replies}")
        print("backend:", ctx.backend_info()["type"])
