"""A load client process: ``python -m benchmarks.load CONFIG_JSON``.

CONFIG names the targets: ``{"echo": ADDRESS, "store": ADDRESS, "session": ID,
"redis": PORT, "etcd": ADDRESS}`` (any may be null). The client connects to each,
warms each up, prints ``ready``, then obeys lines on stdin:

- ``run MODE COUNT``: make COUNT calls of MODE (``grpc.echo``, ``bridged.get``,
  ``redis.get``, ``etcd.range``) back to back, print ``done``, then one JSON line
  with each call's latency in ns;
- ``quit``: close everything and exit.

The parent starts clients once per run (through :mod:`benchmarks.affinity`, on the
servers' cores), times each run from its ``run`` lines to the last ``done``, and
uses the first 1, 4 or 8 clients for the 1-, 4- and 8-client runs.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable

import grpc

from benchmarks.peers import EtcdPeer, RedisPeer
from benchmarks.servers import echo_stub
from dspex_actors import BridgedState

Call = Callable[[], object]

KEY = "bench:get"
"""The key the Redis and etcd clients read (the throughput suite writes it first)."""


def _connect(config: dict[str, object]) -> tuple[dict[str, Call], list[Callable[[], None]]]:
    calls: dict[str, Call] = {}
    closers: list[Callable[[], None]] = []
    if isinstance(echo := config.get("echo"), str):
        channel = grpc.insecure_channel(echo)
        stub = echo_stub(channel)
        calls["grpc.echo"] = lambda: stub(b"\x00" * 16, timeout=10)
        closers.append(channel.close)
    if isinstance(store := config.get("store"), str):
        state = BridgedState.init(session_id=str(config["session"]), address=store, timeout=10)
        calls["bridged.get"] = lambda: state.get_variable("temperature")
        closers.append(state.cleanup)
    if isinstance(port := config.get("redis"), int):
        redis_peer = RedisPeer(port)
        calls["redis.get"] = lambda: redis_peer.get(KEY)
        closers.append(redis_peer.close)
    if isinstance(etcd := config.get("etcd"), str):
        etcd_peer = EtcdPeer(etcd)
        key = KEY.encode()
        calls["etcd.range"] = lambda: etcd_peer.get(key)
        closers.append(etcd_peer.close)
    return calls, closers


def main(config: dict[str, object]) -> None:
    calls, closers = _connect(config)
    for call in calls.values():
        for _ in range(50):
            call()
    print("ready", flush=True)
    for line in sys.stdin:
        words = line.split()
        if words[:1] != ["run"]:
            break
        call, count = calls[words[1]], int(words[2])
        latencies = []
        clock = time.perf_counter_ns
        for _ in range(count):
            started = clock()
            call()
            latencies.append(clock() - started)
        print("done", flush=True)
        print(json.dumps(latencies), flush=True)
    for close in closers:
        close()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
