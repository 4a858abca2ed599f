"""Local -> bridged migration time by session size, and how long a writer waits meanwhile."""

from __future__ import annotations

import threading
import time

from benchmarks.progress import progress
from benchmarks.suite import Op, Run, add_duration, export_of_floats, sample_ops
from dspex_actors import BridgedState, Supervisor

SUITE = "migration"
PROBE = "migration.bridged.get"


def _migrate(supervisor: Supervisor, size: int) -> tuple[float, float, int]:
    """Switch a ``size``-variable session while a writer keeps writing.

    Returns (switch ns as recorded by the context, longest writer call ms, writes).
    """
    ctx = supervisor.start_context()
    try:
        # size - 1 floats and the writer's variable: ``size`` in all, within the limit.
        ctx.import_state(export_of_floats(size - 1, ctx.session_id))
        ctx.register_variable("w", "integer", 0)
        stop = threading.Event()
        progress_made = threading.Condition()
        waits: list[float] = []

        def writer() -> None:
            k = 0
            while not stop.is_set():
                k += 1
                started = time.perf_counter()
                ctx.set_variable("w", k)
                with progress_made:
                    waits.append(time.perf_counter() - started)
                    progress_made.notify_all()

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            with progress_made:
                progress_made.wait_for(lambda: len(waits) >= 5, timeout=30)
            ctx.ensure_bridged()
            # Let the writer make a few calls on the new backend, then stop it.
            with progress_made:
                seen = len(waits)
                progress_made.wait_for(lambda: len(waits) >= seen + 5, timeout=30)
        finally:
            stop.set()
            thread.join(30)
        assert ctx.get_variable("w") == len(waits)  # every acknowledged write, once
        switch_ms: float = ctx.backend_info()["last_switch_ms"]
        return switch_ms * 1e6, max(waits) * 1000, len(waits)
    finally:
        ctx.stop()


def run(run: Run) -> None:
    sizes: tuple[int, ...] = run.pick((10, 100, 1_000, 10_000, 100_000), (10, 1_000))
    store = run.servers.store()
    probe = BridgedState.init(address=store.address, timeout=30)
    try:
        probe.register_variable("temperature", "float", 0.7)
        get = Op(
            PROBE,
            "BridgedState.get_variable (beside the switches)",
            "bridged",
            "get",
            lambda: probe.get_variable("temperature"),
        )
        sample_ops(run, SUITE, "migration", [get], run.pick(500, 100))
        with Supervisor.start(bridge_address=store.address, bridge_timeout=60) as supervisor:
            for size in sizes:
                # The median of three switches, one of the largest (it alone takes seconds).
                repeats = 1 if size >= 100_000 else 3
                progress.stage(f"migration: switching a {size:,}-variable session", repeats)
                switches, waits_ms, writes = [], [], 0
                for done in range(repeats):
                    switch_ns, wait_ms, made = _migrate(supervisor, size)
                    switches.append(switch_ns)
                    waits_ms.append(wait_ms)
                    writes += made
                    progress.step(done + 1)
                add_duration(
                    run,
                    SUITE,
                    f"switch@{size}",
                    "switch local -> bridged (Context.ensure_bridged)",
                    "context",
                    "switch",
                    switches,
                    baseline=PROBE,
                    curve="switch",
                    x=size,
                )
                run.results.value(
                    f"migration.writer_wait_ms@{size}",
                    max(waits_ms),
                    "ms",
                    f"longest writer wait during {repeats} switch(es) of {size:,} variables "
                    f"({writes} writes, none lost)",
                )
    finally:
        probe.cleanup()
