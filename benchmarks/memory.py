"""Resident memory of many live LocalState sessions, measured in a fresh process."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import threading

from benchmarks.progress import progress
from benchmarks.servers import child_env
from benchmarks.suite import Run
from dspex_actors import LocalState


def _child(count: int, variables: int) -> None:
    """Runs in a fresh interpreter so earlier allocations do not blur the reading."""
    import psutil  # the bench extra (checked by python -m benchmarks)

    process = psutil.Process()
    gc.collect()
    before = process.memory_info().rss
    threads_before = threading.active_count()
    sessions = [LocalState.init() for _ in range(count)]
    for state in sessions:
        for i in range(variables):
            state.register_variable(f"v{i}", "float", 0.5, constraints={"min": 0, "max": 1})
    gc.collect()
    during = process.memory_info().rss
    for state in sessions:
        state.cleanup()
    alive = [t for t in threading.enumerate() if t is not threading.main_thread()]
    for thread in alive:
        thread.join(10)
    left = threading.active_count() - threads_before
    print(json.dumps({"per_session": (during - before) / count, "threads_left": left}))


def run(run: Run, variables: int = 3) -> None:
    count: int = run.pick(10_000, 1_000)
    progress.stage(f"memory: {count:,} live LocalState sessions in a fresh process")
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", str(count), str(variables)],
        check=True,
        env=child_env(),
        capture_output=True,
        text=True,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    run.results.value(
        "memory.kb_per_session",
        result["per_session"] / 1024,
        "KB",
        f"resident memory per live LocalState session ({count:,} sessions, "
        f"{variables} variables each)",
    )
    run.results.value(
        "memory.threads_left",
        result["threads_left"],
        "threads",
        f"threads left after stopping {count:,} sessions",
    )


if __name__ == "__main__":
    _child(int(sys.argv[1]), int(sys.argv[2]))
