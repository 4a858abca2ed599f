"""Local -> bridged migration time, and how long a writer waits during the switch."""

from __future__ import annotations

import threading
import time

from benchmarks.servers import session_store
from benchmarks.timing import measure, target
from dspex_actors.bridge import BridgedState
from dspex_actors.supervision import Supervisor


def _migrate(supervisor: Supervisor, size: int) -> tuple[float, float, int]:
    """Switch a ``size``-variable session while a writer keeps writing.

    Returns (switch ms as recorded by the context, longest writer call ms, writes).
    """
    ctx = supervisor.start_context()
    try:
        for i in range(size):
            ctx.register_variable(f"x{i}", "float", 0.5, constraints={"min": 0, "max": 1})
        ctx.register_variable("w", "integer", 0)
        stop = threading.Event()
        progress = threading.Condition()
        waits: list[float] = []

        def writer() -> None:
            k = 0
            while not stop.is_set():
                k += 1
                started = time.perf_counter()
                ctx.set_variable("w", k)
                with progress:
                    waits.append(time.perf_counter() - started)
                    progress.notify_all()

        thread = threading.Thread(target=writer)
        thread.start()
        with progress:
            progress.wait_for(lambda: len(waits) >= 5, timeout=30)
        ctx.ensure_bridged()
        # Let the writer make a few calls on the new backend, then stop it.
        with progress:
            seen = len(waits)
            progress.wait_for(lambda: len(waits) >= seen + 5, timeout=30)
        stop.set()
        thread.join(30)
        assert ctx.get_variable("w") == len(waits)  # every acknowledged write, once
        return ctx.backend_info()["last_switch_ms"], max(waits) * 1000, len(waits)
    finally:
        ctx.stop()


def run(rounds: int, sizes: tuple[int, ...] = (10, 1_000, 10_000)) -> dict[str, float]:
    print("\n== migration local -> bridged (SessionStore in another process) ==")
    store = session_store()
    probe = BridgedState.init(address=store.address, timeout=30)
    try:
        probe.register_variable("temperature", "float", 0.7)
        get_ns = measure({"get": (lambda: probe.get_variable("temperature"), 5)}, rounds)[
            "get"
        ].p50
        print(f"  bridged get_variable p50 in this run: {get_ns / 1000:.1f} us")
        results = {}
        with Supervisor.start(bridge_address=store.address, bridge_timeout=60) as supervisor:
            for size in sizes:
                switch_ms, wait_ms, writes = _migrate(supervisor, size)
                ratio = switch_ms * 1e6 / get_ns
                results[size] = ratio
                print(
                    f"  {size:>6,} variables: switch {switch_ms:8.1f} ms = {ratio:7.1f}x get; "
                    f"longest writer wait {wait_ms:7.1f} ms ({writes} writes, none lost)"
                )
    finally:
        probe.cleanup()
        store.stop()
    if 1_000 in results:
        target("1,000-variable switch / bridged get_variable p50", results[1_000], 50)
    return {f"switch{size}/get": ratio for size, ratio in results.items()}
