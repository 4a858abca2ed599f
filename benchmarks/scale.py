"""Scale curves, ours beside Redis's: latency as sessions grow in size and in number.

- ``variables``: get and set of one variable in a session of 10 .. 100,000 variables,
  LocalState and BridgedState; Redis holds as many variables, one hash (value,
  version) each, and its GET and Lua compare-and-set run beside ours.
- ``sessions``: the same operations on one session while 1 .. 10,000 sessions of
  three variables each are live (LocalState: one actor thread each; BridgedState:
  one server-side actor each); Redis holds three hashes per session.
- ``size``: ``import_state`` and ``export_state`` of a whole session of 10 ..
  100,000 float variables, local and bridged; beside them Redis stores the same
  records as one hash of msgpack values (one ``DEL`` + ``HSET`` transaction) and
  reads them back with ``HGETALL``, packing and unpacking in the timed part.

Switch time by session size is the migration suite's curve; throughput by client
count is the throughput suite's. Each point's figures are sampled in blocks
interleaved round-robin (:mod:`benchmarks.timing`), and each curve's baseline is the
same operation at the curve's smallest point.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from functools import partial
from typing import Any

from benchmarks.peers import RedisPeer
from benchmarks.progress import progress
from benchmarks.results import Backend
from benchmarks.suite import Op, Run, add_duration, export_of_floats, sample_ops
from dspex_actors import BridgedState, LocalState

SUITE = "scale"
PROBE = "x0"


def _flipper() -> Callable[[], float]:
    flip = iter(range(10**12))
    return lambda: 1.0 if next(flip) & 1 else 0.5


def _point_ops(
    curve: str,
    x: int,
    first: int,
    local: LocalState,
    bridged: BridgedState,
    redis_peer: RedisPeer | None,
) -> list[Op]:
    """get and set on each backend at one point of ``curve``."""

    def id_(backend: str, op: str, at: int = x) -> str:
        return f"{curve}.{backend}.{op}@{at}"

    def op(
        backend: Backend,
        name: str,
        label: str,
        fn: Callable[[], object],
        calls: int = 1,
        peer: str | None = None,
    ) -> Op:
        return Op(
            id_(backend, name),
            label,
            backend,
            name,
            fn,
            calls,
            baseline=id_(backend, name, first),
            peers=(id_("redis", peer),) if peer else (),
            curve=curve,
            x=x,
        )

    value = _flipper()
    version = bridged.set_variable(PROBE, value())

    def bridged_cas() -> object:
        nonlocal version
        version = bridged.set_variable(PROBE, value(), expected_version=version)
        return version

    ops = [
        op("local", "get", "LocalState.get_variable", lambda: local.get_variable(PROBE), 200),
        op("local", "set", "LocalState.set_variable", lambda: local.set_variable(PROBE, value())),
        op(
            "bridged",
            "get",
            "BridgedState.get_variable",
            lambda: bridged.get_variable(PROBE),
            peer="get",
        ),
        op(
            "bridged",
            "set",
            "BridgedState.set_variable (compare-and-set)",
            bridged_cas,
            peer="set",
        ),
    ]
    if redis_peer is not None:
        peer = redis_peer
        peer.put("bench:get", 0.5)
        redis_version = 0
        peer.new_variable("bench:var", 0.5)

        def redis_cas() -> object:
            nonlocal redis_version
            redis_version = peer.cas("bench:var", redis_version, value())
            return redis_version

        ops += [
            op("redis", "get", "redis-py GET", lambda: peer.get("bench:get")),
            op("redis", "set", "redis-py Lua compare-and-set", redis_cas),
        ]
    return ops


def _variables(run: Run, address: str, redis_peer: RedisPeer | None) -> None:
    sizes: tuple[int, ...] = run.pick((10, 100, 1_000, 10_000, 100_000), (10, 1_000))
    for size in sizes:
        progress.stage(f"scale: sessions of {size:,} variables, setting up")
        exported = export_of_floats(size)
        with ExitStack() as cleanup:
            local = LocalState.init()
            cleanup.callback(local.cleanup)
            local.import_state(exported)
            bridged = BridgedState.init(address=address, timeout=60)
            cleanup.callback(bridged.cleanup)
            bridged.import_state(exported)
            if redis_peer is not None:
                redis_peer.flush()
                redis_peer.fill_variables([f"var:{i}" for i in range(size)], 0.5)
            ops = _point_ops("variables", size, sizes[0], local, bridged, redis_peer)
            sample_ops(run, SUITE, f"scale: {size:,} variables", ops, run.pick(400, 50))


def _sessions(run: Run, address: str, redis_peer: RedisPeer | None) -> None:
    counts: tuple[int, ...] = run.pick((1, 10, 100, 1_000, 10_000), (1, 100))
    local_sessions: list[LocalState] = []
    bridged_sessions: list[BridgedState] = []

    def new_local() -> LocalState:
        state = LocalState.init()
        for i in range(3):
            state.register_variable(f"x{i}", "float", 0.5, constraints={"min": 0, "max": 1})
        return state

    three = export_of_floats(3)

    def new_bridged(_: int) -> BridgedState:
        return BridgedState.init(address=address, timeout=60, existing_state=three)

    if redis_peer is not None:
        redis_peer.flush()

    def stop_all() -> None:
        for state in local_sessions:
            state.cleanup()
        list(pool.map(BridgedState.cleanup, bridged_sessions))

    # The pool outlives the ExitStack, whose callback still uses it.
    with ThreadPoolExecutor(4) as pool, ExitStack() as cleanup:
        cleanup.callback(stop_all)
        for count in counts:
            missing = count - len(local_sessions)
            progress.stage(f"scale: starting LocalState sessions up to {count:,}", missing)
            for done in range(missing):
                local_sessions.append(new_local())
                progress.step(done + 1)
            # The server does the work; four callers keep it busy.
            progress.stage(f"scale: opening BridgedState sessions up to {count:,}", missing)
            for done, state in enumerate(pool.map(new_bridged, range(missing))):
                bridged_sessions.append(state)
                progress.step(done + 1)
            if redis_peer is not None:
                first = len(local_sessions) - missing
                redis_peer.fill_variables(
                    [f"s{s}:x{i}" for s in range(first, count) for i in range(3)], 0.5
                )
            ops = _point_ops(
                "sessions", count, counts[0], local_sessions[0], bridged_sessions[0], redis_peer
            )
            sample_ops(run, SUITE, f"scale: {count:,} live sessions", ops, run.pick(400, 50))


def _timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter_ns()
    fn()
    return time.perf_counter_ns() - started


def _local_round_trip(exported: dict[str, Any]) -> tuple[float, float]:
    state = LocalState.init()
    try:
        return _timed(lambda: state.import_state(exported)), _timed(state.export_state)
    finally:
        state.cleanup()


def _redis_round_trip(peer: RedisPeer, records: dict[str, dict[str, Any]]) -> tuple[float, float]:
    key = "bench:session"
    return _timed(lambda: peer.import_session(key, records)), _timed(
        lambda: peer.export_session(key)
    )


def _bridged_round_trip(address: str, exported: dict[str, Any]) -> tuple[float, float]:
    state = BridgedState.init(address=address, timeout=60)
    try:
        return _timed(lambda: state.import_state(exported)), _timed(state.export_state)
    finally:
        state.cleanup()


def _size(run: Run, address: str, redis_peer: RedisPeer | None) -> None:
    sizes: tuple[int, ...] = run.pick((10, 100, 1_000, 10_000, 100_000), (10, 1_000))
    labels: dict[tuple[Backend, str], str] = {
        ("local", "import"): "LocalState.import_state",
        ("local", "export"): "LocalState.export_state",
        ("bridged", "import"): "BridgedState.import_state",
        ("bridged", "export"): "BridgedState.export_state",
        ("redis", "import"): "redis-py DEL + HSET of msgpack records (MULTI)",
        ("redis", "export"): "redis-py HGETALL, records unpacked",
    }
    for size in sizes:
        exported = export_of_floats(size)
        records = {r["name"]: r for r in exported["variables"].values()}
        trips: dict[Backend, Callable[[], tuple[float, float]]] = {
            "local": partial(_local_round_trip, exported),
            "bridged": partial(_bridged_round_trip, address, exported),
        }
        if redis_peer is not None:
            trips["redis"] = partial(_redis_round_trip, redis_peer, records)
        times: dict[tuple[Backend, str], list[float]] = {}
        runs: int = run.pick(3 if size >= 100_000 else 5, 3)
        progress.stage(f"scale: import and export of {size:,} variables, round", runs)
        for done in range(runs):
            for backend, trip in trips.items():  # interleaved, like the round-robin
                imported, exported_ns = trip()
                times.setdefault((backend, "import"), []).append(imported)
                times.setdefault((backend, "export"), []).append(exported_ns)
            progress.step(done + 1)
        for (backend, op), samples in times.items():
            add_duration(
                run,
                SUITE,
                f"size.{backend}.{op}@{size}",
                labels[backend, op],
                backend,
                op,
                samples,
                baseline=f"size.{backend}.{op}@{sizes[0]}",
                peers=(f"size.redis.{op}@{size}",) if backend != "redis" else (),
                curve="size",
                x=size,
            )


def run(run: Run) -> None:
    store = run.servers.store()
    redis_server = run.servers.redis()
    with ExitStack() as cleanup:
        redis_peer = None
        if redis_server is not None:
            redis_peer = RedisPeer(redis_server.port)
            cleanup.callback(redis_peer.close)
            cleanup.callback(redis_peer.flush)
        _variables(run, store.address, redis_peer)
        _sessions(run, store.address, redis_peer)
        _size(run, store.address, redis_peer)
