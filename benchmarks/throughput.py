"""Reads per second from 1, 4 and 8 client processes: BridgedState beside echo, Redis, etcd.

Eight load clients (:mod:`benchmarks.load`) start once, on the servers' cores, each
connected to every server; a run of N clients sends ``run MODE COUNT`` to the first
N (each making an equal share of the run's calls) and times from there to the last
``done``. Modes alternate within each round, and a full run makes two rounds: ops/s
is the median round's, the latency percentiles are of every call the clients made
(latency under load).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
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

    def run(self, mode: str, clients: int, count: int) -> tuple[float, list[float]]:
        """``count`` calls from each of ``clients`` clients: (calls/s, every call's ns)."""
        chosen = self.processes[:clients]
        started = time.perf_counter()
        for p in chosen:
            assert p.stdin is not None
            p.stdin.write(f"run {mode} {count}\n")
            p.stdin.flush()
        for p in chosen:
            self._expect(p, "done")
        elapsed = time.perf_counter() - started
        latencies: list[float] = []
        for p in chosen:
            assert p.stdout is not None
            latencies.extend(json.loads(p.stdout.readline()))
        return clients * count / elapsed, latencies

    def close(self) -> None:
        for p in self.processes:
            try:
                p.communicate("quit\n", timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()


Rates = dict[tuple[str, int], tuple[float, list[float]]]
"""(mode, clients) -> (the median round's calls/s, every call's ns in every round)."""


def sweep(
    clients: LoadClients,
    modes: list[str],
    counts: tuple[int, ...],
    total: int,
    rounds: int,
    suite: str = SUITE,
) -> Rates:
    """Run every mode with each number of clients, ``total`` calls a run shared among
    them, modes alternating within each round so noise falls on all of them alike."""
    rates: dict[tuple[str, int], list[float]] = {}
    latencies: dict[tuple[str, int], list[float]] = {}
    runs = rounds * len(counts) * len(modes)
    progress.stage(f"{suite}: {total:,} calls per run, run", runs)
    done = 0
    for _ in range(rounds):
        for n in counts:
            for mode in modes:
                rate, samples = clients.run(mode, n, total // n)
                rates.setdefault((mode, n), []).append(rate)
                latencies.setdefault((mode, n), []).extend(samples)
                done += 1
                progress.step(done)
    return {key: (statistics.median(rates[key]), latencies[key]) for key in rates}


def run(run: Run) -> None:
    counts: tuple[int, ...] = (1, 4, 8)
    total: int = run.pick(3000, 400)  # calls per run, shared among its clients
    rounds: int = run.pick(2, 1)
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
        clients = LoadClients(max(counts), config)
        cleanup.callback(clients.close)
        measured = sweep(clients, modes, counts, total, rounds)
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
                measured[mode, n][1],
                kind="throughput",
                baseline=None if mode == "grpc.echo" else f"throughput.grpc.echo@{n}",
                peers=peers,
                curve="clients",
                x=n,
                rate=measured[mode, n][0],
            )
