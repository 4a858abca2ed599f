"""``python -m dspex_actors demo``: a session's life from local to shared, in one screen."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

from dspex_actors.errors import StateError
from dspex_actors.supervision import Supervisor

_WORKER = """
import sys
from dspex_actors.bridge import BridgedState

session_id, address = sys.argv[1], sys.argv[2]
with BridgedState.init(session_id=session_id, address=address) as worker:
    before = worker.get_variable("temperature")
    version = worker.set_variable("temperature", 1.3, {"tuned_by": "worker"})
    print(f"temperature {before} -> 1.3 (version {version})")
"""


def run(out: Callable[[str], object] = print) -> None:
    """Walk through sessions, variables, a validation error, the switch and sharing."""
    with Supervisor.start() as supervisor:
        ctx = supervisor.start_context()
        out(f"session {ctx.session_id} started on {ctx.backend_info()['type']} state")
        ctx.register_variable("temperature", "float", 0.7, constraints={"min": 0.0, "max": 2.0})
        ctx.register_variable("max_tokens", "integer", 256, constraints={"min": 1})
        ctx.register_variable(
            "style", "choice", "concise", constraints={"choices": ["concise", "detailed"]}
        )
        ctx.register_variable("query_embedding", "embedding", [0.1, 0.2, 0.3])
        for record in ctx.list_variables():
            out(f"  {record['name']:<16} {record['type']:<10} = {record['value']!r}")

        try:
            ctx.set_variable("temperature", 3.5)
        except StateError as exc:
            out(f"rejected: {type(exc).__name__}: {exc}")
        out(f"temperature is still {ctx.get_variable('temperature')}")

        out("registering a DSPy program, which needs the bridge...")
        ctx.register_program("qa", {"type": "dspy", "signature": "question -> answer"})
        info = ctx.backend_info()
        out(
            f"switched {info['history'][0]['from']} -> {info['type']} in "
            f"{info['last_switch_ms']:.1f} ms; bridge at {supervisor.bridge_address}"
        )

        out("a second process attaches to the session by id:")
        worker = subprocess.run(
            [sys.executable, "-c", _WORKER, ctx.session_id, str(supervisor.bridge_address)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if worker.returncode != 0:
            raise RuntimeError(f"the worker process failed:\n{worker.stderr}")
        out(f"  worker: {worker.stdout.strip()}")
        out(
            f"the original handle sees temperature = {ctx.get_variable('temperature')} "
            f"(version {ctx.list_variables()[0]['version']})"
        )
    out("supervisor stopped: sessions closed, embedded bridge shut down")
