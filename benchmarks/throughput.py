"""Reads per second from 1, 4 and 8 client processes: BridgedState beside echo, Redis, etcd.

Eight load clients (:mod:`benchmarks.load`) start once, on the servers' cores, each
connected to every server; a run of N clients sends ``run MODE COUNT`` to the first
N (each making an equal share of the run's calls) and times from there to the last
``done``. Modes alternate within each round, and a full run makes three rounds: ops/s
is the median round's (each round's is kept: a target's check wants at least three,
and a yardstick whose rounds differ too much is not trusted, :mod:`benchmarks.trust`),
the latency percentiles are of every call the clients made (latency under load). A
quick run makes one round: a smoke run, its ops/s not trusted.

Each run also reads, from ``/proc`` where there is one, the CPU time the clients and
the server spent (user + system, every thread): divided by the calls made, it says
what one call costs each side, which is what bounds ops/s when clients and servers
share the machine's cores.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from benchmarks.affinity import launcher, suite_cores
from benchmarks.load import KEY
from benchmarks.peers import EtcdPeer, RedisPeer
from benchmarks.progress import progress
from benchmarks.results import Backend
from benchmarks.servers import child_env
from benchmarks.suite import Run, add_duration
from dspex_actors import BridgedState

SUITE = "throughput"

# mode -> (label, backend, op)
MODES: dict[str, tuple[str, Backend, str]] = {
    "grpc.echo": ("bare grpcio echo", "baseline", "echo"),
    "bridged.get": ("BridgedState.get_variable", "bridged", "get"),
    "redis.get": ("redis-py GET", "redis", "get"),
    "etcd.range": ("etcd Range", "etcd", "get"),
}
ASYNC_MODES: dict[str, tuple[str, Backend, str]] = {
    "aio.grpc.echo": ("bare grpc.aio echo", "baseline", "echo"),
    "aio.bridged.get": ("AsyncBridgedState.get_variable", "bridged", "get"),
    "aio.redis.get": ("redis.asyncio GET", "redis", "get"),
}


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time process ``pid`` (all its threads) has used; None where
    ``/proc`` cannot say (not Linux, or the process is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # the name may hold spaces
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


THREADS = 8
"""Threads per client process in the threaded runs (the issue's 8 processes x 8)."""
TASKS = 16
"""Tasks per client process in the asyncio runs (the issue's 8 processes x 16)."""


def _cpu_of(pids: list[int]) -> float | None:
    times = [cpu_seconds(pid) for pid in pids]
    return None if None in times else sum(t for t in times if t is not None)


def _per_call(before: float | None, after: float | None, calls: int) -> float | None:
    return None if before is None or after is None else (after - before) / calls


@dataclass
class Outcome:
    """One run of one mode: calls/s, each call's ns, and CPU seconds per call of the
    clients together and of the server (None where not measured); for the median of
    several rounds, each round's calls/s too."""

    rate: float
    latencies: list[float]
    client_cpu: float | None
    server_cpu: float | None
    rates: list[float] = field(default_factory=list)


class LoadClients:
    """Load client processes, started together and reused for every run."""

    def __init__(self, count: int, config: dict[str, Any], suite: str = SUITE) -> None:
        self.processes: list[subprocess.Popen[str]] = []
        argv = launcher(
            [sys.executable, "-m", "benchmarks.load", json.dumps(config)], suite_cores()
        )
        progress.stage(f"{suite}: starting {count} load client processes")
        try:
            for _ in range(count):
                self.processes.append(
                    subprocess.Popen(
                        argv,
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        text=True,
                        env=child_env(),
                    )
                )
            for p in self.processes:
                self._expect(p, "ready")
        except BaseException:
            self.close()  # the ones started, ready or not
            raise

    @staticmethod
    def _expect(p: subprocess.Popen[str], word: str) -> None:
        assert p.stdout is not None
        line = p.stdout.readline().strip()
        if line != word:
            raise RuntimeError(f"load client {p.pid} said {line!r}, not {word!r}")

    def run(
        self, mode: str, clients: int, count: int, server: int | None = None, threads: int = 1
    ) -> Outcome:
        """``count`` calls from each of ``clients`` clients (each from ``threads``
        threads at once), and what they cost the clients and the ``server`` process
        (a pid) in CPU."""
        chosen = self.processes[:clients]
        pids = [p.pid for p in chosen]
        client_before = _cpu_of(pids)
        server_before = None if server is None else cpu_seconds(server)
        started = time.perf_counter()
        for p in chosen:
            assert p.stdin is not None
            p.stdin.write(f"run {mode} {count} {threads}\n")
            p.stdin.flush()
        for p in chosen:
            self._expect(p, "done")
        elapsed = time.perf_counter() - started
        client_after = _cpu_of(pids)
        server_after = None if server is None else cpu_seconds(server)
        latencies: list[float] = []
        for p in chosen:
            assert p.stdout is not None
            latencies.extend(json.loads(p.stdout.readline()))
        calls = clients * count
        return Outcome(
            calls / elapsed,
            latencies,
            _per_call(client_before, client_after, calls),
            _per_call(server_before, server_after, calls),
        )

    def close(self) -> None:
        for p in self.processes:
            try:
                p.communicate("quit\n", timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()


def _median(figures: list[float | None]) -> float | None:
    return None if None in figures else statistics.median(f for f in figures if f is not None)


Rates = dict[tuple[str, int], Outcome]
"""(mode, clients) -> the median round's calls/s and CPU per call, every call's ns in
every round, and each round's calls/s."""


def sweep(
    clients: LoadClients,
    modes: list[str],
    counts: tuple[int, ...],
    total: int,
    rounds: int,
    suite: str = SUITE,
    servers: dict[str, int] | None = None,
    threads: int = 1,
) -> Rates:
    """Run every mode with each number of clients, ``total`` calls a run shared among
    them (each client calling from ``threads`` threads), modes alternating within
    each round so noise falls on all of them alike; ``servers`` names the pid each
    mode's server runs as, for its CPU per call."""
    outcomes: dict[tuple[str, int], list[Outcome]] = {}
    runs = rounds * len(counts) * len(modes)
    progress.stage(f"{suite}: {total:,} calls per run, run", runs)
    done = 0
    for _ in range(rounds):
        for n in counts:
            for mode in modes:
                server = (servers or {}).get(mode)
                outcome = clients.run(mode, n, total // n, server, threads)
                outcomes.setdefault((mode, n), []).append(outcome)
                done += 1
                progress.step(done)
    return {
        key: Outcome(
            statistics.median(o.rate for o in runs_of),
            [ns for o in runs_of for ns in o.latencies],
            _median([o.client_cpu for o in runs_of]),
            _median([o.server_cpu for o in runs_of]),
            [o.rate for o in runs_of],
        )
        for key, runs_of in outcomes.items()
    }


def _add_concurrent(
    run: Run,
    table: dict[str, tuple[str, Backend, str]],
    modes: list[str],
    measured: Rates,
    clients: int,
    each: int,
    what: str,
    prefix: str,
) -> None:
    """The runs of ``clients`` clients of ``each`` threads (or tasks) apiece, each
    mode beside the bare echo of the same kind, ours beside the Redis peer."""
    shape = f"{clients}x{each}"
    for mode in modes:
        label, backend, op = table[mode]
        echo = f"{prefix}grpc.echo"
        add_duration(
            run,
            SUITE,
            f"throughput.{mode}@{shape}",
            f"{label}, {each} {what} a client",
            backend,
            op,
            measured[mode, clients].latencies,
            kind="throughput",
            baseline=None if mode == echo else f"throughput.{echo}@{shape}",
            peers=() if backend != "bridged" else (f"throughput.{prefix}redis.get@{shape}",),
            rates=measured[mode, clients].rates,
        )


def run(run: Run) -> None:
    counts: tuple[int, ...] = (1, 4, 8)
    total: int = run.pick(3000, 400)  # calls per run, shared among its clients
    rounds: int = run.pick(3, 1)  # three: what a trusted ops/s rests on (trust.MIN_ROUNDS)
    servers = run.servers
    store, echo = servers.store(), servers.echo()
    redis_server, etcd_server = servers.redis(), servers.etcd()
    with ExitStack() as cleanup:
        state = BridgedState.init(address=store.address, timeout=30)
        cleanup.callback(state.cleanup)
        state.register_variable("temperature", "float", 0.7)
        config: dict[str, Any] = {
            "echo": echo.address,
            "store": store.address,
            "session": state.session_id,
            "aio": True,
        }
        if redis_server is not None:
            redis_peer = RedisPeer(redis_server.port)
            cleanup.callback(redis_peer.close)
            redis_peer.put(KEY, 0.7)
            config["redis"] = redis_server.port
        if etcd_server is not None:
            etcd_peer = EtcdPeer(etcd_server.address)
            cleanup.callback(etcd_peer.close)
            etcd_peer.put(KEY.encode(), 0.7)
            config["etcd"] = etcd_server.address
        modes = [
            m for m in MODES if m in ("grpc.echo", "bridged.get") or m.split(".")[0] in config
        ]
        pids = {"grpc.echo": echo.pid, "bridged.get": store.pid}
        if redis_server is not None:
            pids["redis.get"] = redis_server.pid
        if etcd_server is not None:
            pids["etcd.range"] = etcd_server.pid
        clients = LoadClients(max(counts), config)
        cleanup.callback(clients.close)
        measured = sweep(clients, modes, counts, total, rounds, servers=pids)
        # 8 clients of 8 threads each: calls ready together on one client's channel,
        # which its Calls stream carries coalesced (and redis-py on a pool).
        threaded = sweep(
            clients, modes, (max(counts),), total * THREADS, rounds, servers=pids, threads=THREADS
        )
        async_modes = [m for m in ASYNC_MODES if m != "aio.redis.get" or "redis" in config]
        tasked = sweep(clients, async_modes, (max(counts),), total * TASKS, rounds, threads=TASKS)
    n = max(counts)
    _add_concurrent(run, ASYNC_MODES, async_modes, tasked, n, TASKS, "tasks", "aio.")
    _add_concurrent(run, MODES, modes, threaded, n, THREADS, "threads", "")
    for n in counts:
        for mode in modes:
            label, backend, op = MODES[mode]
            peers = (
                ()
                if backend != "bridged"
                else (f"throughput.redis.get@{n}", f"throughput.etcd.range@{n}")
            )
            add_duration(
                run,
                SUITE,
                f"throughput.{mode}@{n}",
                label,
                backend,
                op,
                measured[mode, n].latencies,
                kind="throughput",
                baseline=None if mode == "grpc.echo" else f"throughput.grpc.echo@{n}",
                peers=peers,
                curve="clients",
                x=n,
                rates=measured[mode, n].rates,
            )
    _cpu_values(run, modes, measured, max(counts))
    _cpu_values(run, modes, threaded, max(counts), THREADS)


def _cpu_values(run: Run, modes: list[str], measured: Rates, n: int, threads: int = 1) -> None:
    """What one call cost the clients and the server in CPU with ``n`` clients (of
    ``threads`` threads each)."""
    shape = f"{n}x{threads}" if threads > 1 else f"{n}"
    what = f"{n} client processes" + (f" x {threads} threads" if threads > 1 else "")
    for mode in modes:
        label = MODES[mode][0]
        outcome = measured[mode, n]
        for side, seconds in (("client", outcome.client_cpu), ("server", outcome.server_cpu)):
            if seconds is not None:
                run.results.value(
                    f"throughput.{mode}@{shape}.{side}_cpu_us",
                    seconds * 1e6,
                    "us",
                    f"{label}, {what}: CPU per call, "
                    + ("the clients together" if side == "client" else "the server"),
                )
