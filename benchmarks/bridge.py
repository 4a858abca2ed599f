"""BridgedState against a bare grpcio unary echo, both servers in other processes."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import grpc

from benchmarks.servers import echo_server, echo_stub, session_store
from benchmarks.timing import measure, table, target
from dspex_actors.bridge import BridgedState
from dspex_actors.supervision import Supervisor


def _export(count: int) -> dict[str, Any]:
    """A session export with ``count`` float variables (built directly, fast)."""
    now = time.time()
    variables = {
        f"var_{i:032x}": {
            "id": f"var_{i:032x}",
            "name": f"x{i}",
            "type": "float",
            "value": 0.5,
            "constraints": {"min": 0.0, "max": 1.0},
            "metadata": {},
            "version": 3,
            "created_at": now,
            "last_updated_at": now,
        }
        for i in range(count)
    }
    return {
        "session_id": "bench-import",
        "variables": variables,
        "variable_index": {r["name"]: i for i, r in variables.items()},
        "metadata": {},
    }


def _throughput(mode: str, address: str, session_id: str, clients: int, count: int) -> float:
    """Calls per second of ``clients`` processes making ``count`` calls each."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks.load", mode, address, session_id, str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(clients)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        start = time.perf_counter()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "done"
        elapsed = time.perf_counter() - start
    finally:
        for p in procs:
            p.communicate(timeout=60)
    return clients * count / elapsed


def _median_import_ns(address: str, exported: dict[str, Any], runs: int = 5) -> float:
    """Median time of importing ``exported`` into a fresh session (one RPC)."""
    times = []
    for _ in range(runs):
        importer = BridgedState.init(address=address, timeout=60)
        try:
            started = time.perf_counter_ns()
            importer.import_state(exported)
            times.append(time.perf_counter_ns() - started)
        finally:
            importer.cleanup()
    return sorted(times)[len(times) // 2]


def run(rounds: int, clients: int = 8, calls_per_client: int = 2000) -> dict[str, float]:
    print(
        f"\n== BridgedState vs a bare grpcio echo, servers in other processes ({rounds} rounds) =="
    )
    store = session_store()
    echo_proc = echo_server()
    channel = grpc.insecure_channel(echo_proc.address)
    echo = echo_stub(channel)
    state = BridgedState.init(address=store.address, timeout=30)
    supervisor = Supervisor.start(bridge_address=store.address, bridge_timeout=30)
    ctx = supervisor.start_context(backend="bridged")
    names = [f"v{i}" for i in range(100)]
    try:
        state.register_variable("temperature", "float", 0.7, constraints={"min": 0, "max": 2})
        ctx.register_variable("temperature", "float", 0.7, constraints={"min": 0, "max": 2})
        for name in names:
            state.register_variable(name, "integer", 0, constraints={"min": 0})
        counter = iter(range(10**9))
        big = _export(10_000)

        def set_one() -> object:
            return state.set_variable("temperature", 1.0 if next(counter) & 1 else 0.5)

        def ctx_set_one() -> object:
            return ctx.set_variable("temperature", 1.0 if next(counter) & 1 else 0.5)

        def update_many() -> None:
            i = next(counter)
            state.update_variables({name: i for name in names})

        series = measure(
            {
                "bare grpc echo (16 bytes)": (lambda: echo(b"\x00" * 16, timeout=10), 1),
                "BridgedState.get_variable": (lambda: state.get_variable("temperature"), 1),
                "BridgedState.set_variable": (set_one, 1),
                "BridgedState.get_variables (100 names)": (lambda: state.get_variables(names), 1),
                "BridgedState.update_variables (100 names)": (update_many, 1),
                "Context(bridged).get_variable": (lambda: ctx.get_variable("temperature"), 1),
                "Context(bridged).set_variable": (ctx_set_one, 1),
            },
            rounds,
        )
        import_ns = _median_import_ns(store.address, big)
        print(f"  throughput with {clients} client processes x {calls_per_client} calls:")
        echo_rate = _throughput("echo", echo_proc.address, "", clients, calls_per_client)
        get_rate = _throughput("get", store.address, state.session_id, clients, calls_per_client)
    finally:
        supervisor.stop()
        state.cleanup()
        channel.close()
        store.stop()
        echo_proc.stop()
    table(series, "bare grpc echo (16 bytes)")
    p50 = {name: s.p50 for name, s in series.items()}
    echo50 = p50["bare grpc echo (16 bytes)"]
    get50 = p50["BridgedState.get_variable"]
    ratios = {
        "get/echo": get50 / echo50,
        "set/echo": p50["BridgedState.set_variable"] / echo50,
        "get100/get": p50["BridgedState.get_variables (100 names)"] / get50,
        "update100/get": p50["BridgedState.update_variables (100 names)"] / get50,
        "import10k/get": import_ns / get50,
        "throughput get/echo": get_rate / echo_rate,
        "ctx_get/get": p50["Context(bridged).get_variable"] / get50,
        "ctx_set/set": p50["Context(bridged).set_variable"] / p50["BridgedState.set_variable"],
    }
    print(f"  import of a 10,000-variable session (median of 5): {import_ns / 1e6:.1f} ms")
    print(f"    bare echo:               {echo_rate:10,.0f} calls/s")
    print(f"    BridgedState.get_variable {get_rate:10,.0f} calls/s")
    target("get_variable p50 / bare echo p50", ratios["get/echo"], 1.3)
    target("set_variable p50 / bare echo p50", ratios["set/echo"], 1.3)
    target("get_variables(100) p50 / get_variable p50", ratios["get100/get"], 3)
    target("update_variables(100) p50 / get_variable p50", ratios["update100/get"], 3)
    target("import 10,000 variables / get_variable p50", ratios["import10k/get"], 100)
    target("Context(bridged) get_variable / BridgedState's", ratios["ctx_get/get"], 1.2)
    target("Context(bridged) set_variable / BridgedState's", ratios["ctx_set/set"], 1.2)
    rate = ratios["throughput get/echo"]
    print(f"  throughput under {clients} clients, get_variable / echo: {rate:.2f}x")
    return ratios
