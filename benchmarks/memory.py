"""Resident memory of many live LocalState sessions, measured in a fresh process."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import threading

import psutil

from dspex_actors import LocalState


def _child(count: int, variables: int) -> None:
    """Runs in a fresh interpreter so earlier allocations do not blur the reading."""
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


def run(count: int, variables: int = 3) -> dict[str, float]:
    print(f"\n== memory: {count:,} live LocalState sessions, {variables} variables each ==")
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", str(count), str(variables)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    kb = result["per_session"] / 1024
    verdict = "meets" if kb <= 40 else "MISSES"
    print(f"  resident memory per live session: {kb:.1f} KB (<= 40 KB) {verdict}")
    print(f"  threads left after stopping them all: {result['threads_left']}")
    return {"kb_per_session": kb, "threads_left": result["threads_left"]}


if __name__ == "__main__":
    _child(int(sys.argv[1]), int(sys.argv[2]))
