"""A load client process: ``python -m benchmarks.load CONFIG_JSON``.

CONFIG names the targets: ``{"echo": ADDRESS, "store": ADDRESS, "session": ID,
"redis": PORT, "etcd": ADDRESS, "redis_url": URL, "redis_session": ID, "writes":
BOOL}`` (any may be null or absent). The client connects to each, warms each up,
prints ``ready``, then obeys lines on stdin:

- ``run MODE COUNT [THREADS]``: make COUNT calls of MODE (shared by THREADS threads
  calling at once, 1 by default; for the asyncio modes ``aio.grpc.echo``,
  ``aio.bridged.get`` and ``aio.redis.get``, given ``"aio": true``, THREADS tasks
  awaiting at once on the client's one loop) (``grpc.echo``, ``bridged.get``,
  ``redis.get``, ``etcd.range``, ``redis_state.get``; with ``writes``, also the
  compare-and-sets ``bridged.set``, ``redis_state.set`` and ``redis.cas``) back to
  back, print ``done``, then one JSON line with each call's latency in ns;
- ``quit``: close everything and exit.

The parent starts clients once per run (through :mod:`benchmarks.affinity`, on the
servers' cores), times each run from its ``run`` lines to the last ``done``, and
uses the first 1, 4 or 8 clients for the 1-, 4- and 8-client runs. Reads are of
one shared variable (``temperature``, Redis's :data:`KEY`); each client's writes go to
a variable of its own, created at connect, so they measure throughput, not conflicts.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable

import grpc
import grpc.aio

from benchmarks.peers import EtcdPeer, RedisPeer
from benchmarks.servers import ECHO_METHOD, echo_stub
from benchmarks.suite import versioned_set
from dspex_actors import BridgedState, RedisState, StateProvider
from dspex_actors.aio import AsyncBridgedState

Call = Callable[[], object]

KEY = "bench:get"
"""The key the Redis and etcd clients read (the throughput suite writes it first)."""


def _own_variable(state: StateProvider, name: str) -> Call:
    """Register ``name`` (this client's alone) and return its compare-and-set."""
    state.register_variable(name, "float", 0.5)
    return versioned_set(lambda v, n: state.set_variable(name, v, expected_version=n), 0)


AsyncCall = Callable[[], Awaitable[object]]


class _Aio:
    """The asyncio clients of a load process, on one loop of its own (``"aio": true``)."""

    def __init__(self, config: dict[str, object]) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)  # grpc.aio binds to the current loop
        self.calls: dict[str, AsyncCall] = {}
        self._closers: list[Callable[[], Awaitable[object]]] = []
        self.loop.run_until_complete(self._connect(config))

    async def _connect(self, config: dict[str, object]) -> None:
        if isinstance(echo := config.get("echo"), str):
            channel = grpc.aio.insecure_channel(echo)
            stub = channel.unary_unary(
                ECHO_METHOD, request_serializer=None, response_deserializer=None
            )
            self.calls["aio.grpc.echo"] = lambda: stub(b"\x00" * 16, timeout=10)
            self._closers.append(lambda: channel.close(None))
        if isinstance(store := config.get("store"), str):
            state = await AsyncBridgedState.init(
                session_id=str(config["session"]), address=store, timeout=10, create=False
            )
            self.calls["aio.bridged.get"] = lambda: state.get_variable("temperature")
            self._closers.append(state.aclose)
        if isinstance(port := config.get("redis"), int):
            import redis.asyncio

            client = redis.asyncio.Redis(host="127.0.0.1", port=port)
            self.calls["aio.redis.get"] = lambda: client.get(KEY)
            self._closers.append(client.aclose)

    def run(self, mode: str, count: int, tasks: int) -> list[int]:
        """``count`` awaits of ``mode`` shared by ``tasks`` tasks at once: each one's ns."""
        call = self.calls[mode]
        clock = time.perf_counter_ns

        async def task(n: int) -> list[int]:
            taken = []
            for _ in range(n):
                started = clock()
                await call()
                taken.append(clock() - started)
            return taken

        async def all_of() -> list[list[int]]:
            return await asyncio.gather(*(task(count // tasks) for _ in range(tasks)))

        return [ns for taken in self.loop.run_until_complete(all_of()) for ns in taken]

    def close(self) -> None:
        for close in self._closers:
            self.loop.run_until_complete(close())
        self.loop.close()


def _connect(config: dict[str, object]) -> tuple[dict[str, Call], list[Callable[[], None]]]:
    calls: dict[str, Call] = {}
    closers: list[Callable[[], None]] = []
    writes = config.get("writes") is True
    own = f"w{os.getpid()}"
    if isinstance(echo := config.get("echo"), str):
        channel = grpc.insecure_channel(echo)
        stub = echo_stub(channel)
        calls["grpc.echo"] = lambda: stub(b"\x00" * 16, timeout=10)
        closers.append(channel.close)
    if isinstance(store := config.get("store"), str):
        state = BridgedState.init(session_id=str(config["session"]), address=store, timeout=10)
        calls["bridged.get"] = lambda: state.get_variable("temperature")
        closers.append(state.cleanup)
        if writes:
            calls["bridged.set"] = _own_variable(state, own)
    if isinstance(url := config.get("redis_url"), str):
        redis_state = RedisState.init(
            session_id=str(config["redis_session"]), url=url, create=False, timeout=10
        )
        calls["redis_state.get"] = lambda: redis_state.get_variable("temperature")
        closers.append(redis_state.cleanup)
        if writes:
            calls["redis_state.set"] = _own_variable(redis_state, own)
    if isinstance(port := config.get("redis"), int):
        redis_peer = RedisPeer(port)
        calls["redis.get"] = lambda: redis_peer.get(KEY)
        closers.append(redis_peer.close)
        if writes:
            variable = f"bench:{own}"
            redis_peer.new_variable(variable, 0.5)
            calls["redis.cas"] = versioned_set(lambda v, n: redis_peer.cas(variable, n, v), 0)
    if isinstance(etcd := config.get("etcd"), str):
        etcd_peer = EtcdPeer(etcd)
        key = KEY.encode()
        calls["etcd.range"] = lambda: etcd_peer.get(key)
        closers.append(etcd_peer.close)
    return calls, closers


def _calls(call: Call, count: int) -> list[int]:
    """``count`` calls back to back: each one's ns."""
    latencies = []
    clock = time.perf_counter_ns
    for _ in range(count):
        started = clock()
        call()
        latencies.append(clock() - started)
    return latencies


def _in_threads(call: Call, count: int, threads: int) -> list[int]:
    """``count`` calls shared by ``threads`` threads calling at once (what a threaded
    server does with one client): each call's ns."""
    start = threading.Barrier(threads)
    results: list[list[int]] = [[] for _ in range(threads)]

    def work(index: int) -> None:
        start.wait()
        results[index] = _calls(call, count // threads)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return [ns for taken in results for ns in taken]


def main(config: dict[str, object]) -> None:
    calls, closers = _connect(config)
    for call in calls.values():
        for _ in range(50):
            call()
    aio = _Aio(config) if config.get("aio") is True else None
    if aio is not None:
        closers.append(aio.close)
        for mode in aio.calls:
            aio.run(mode, 50, 1)
    print("ready", flush=True)
    for line in sys.stdin:
        words = line.split()
        if words[:1] != ["run"]:
            break
        mode, count = words[1], int(words[2])
        threads = int(words[3]) if len(words) > 3 else 1
        if aio is not None and mode in aio.calls:  # threads: tasks on the loop
            latencies = aio.run(mode, count, threads)
        elif threads == 1:
            latencies = _calls(calls[mode], count)
        else:
            latencies = _in_threads(calls[mode], count, threads)
        print("done", flush=True)
        print(json.dumps(latencies), flush=True)
    for close in closers:
        close()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
