"""BridgedState beside a bare grpcio echo, Redis and etcd, every server in its own process.

All operations — ours, the baseline's and the peers' — are sampled in blocks
interleaved round-robin (:mod:`benchmarks.timing`), so machine noise falls on all of
them alike and no op pays for the one before it. A bridged set is a compare-and-set
(``expected_version`` = the version the last set returned), the work Redis's Lua CAS
and etcd's Txn do beside it. redis-py's ``GET`` is also sampled in a fresh process of
its own, in the same rounds (``redis.alone.get``, :mod:`benchmarks.alone`): the
cross-check that the in-suite ``GET`` every Redis ratio divides by is what a
redis-py user gets.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import grpc

from benchmarks.peers import EtcdPeer, RedisAlone, RedisPeer, alone_op, redis_ops
from benchmarks.servers import StreamEcho, echo_stub
from benchmarks.suite import (
    Op,
    Run,
    add_duration,
    alternating,
    export_of_floats,
    sample_ops,
    versioned_set,
)
from benchmarks.timing import time_runs
from dspex_actors import BridgedState, Context, Supervisor

SUITE = "bridge"
ECHO = "grpc.echo"
STREAM_ECHO = "grpc.stream.echo"
ALONE = "redis.alone.get"


def _etcd_ops(peer: EtcdPeer) -> list[Op]:
    key, var = b"bench:get", b"bench:var"
    peer.put(key, 0.7)
    revision = peer.put(var, 0.7)
    value = alternating()
    return [
        Op(
            "etcd.range",
            "etcd Range (grpcio)",
            "etcd",
            "get",
            lambda: peer.get(key),
            baseline=ECHO,
        ),
        Op(
            "etcd.put",
            "etcd Put (grpcio)",
            "etcd",
            "put",
            lambda: peer.put(key, value()),
            baseline=ECHO,
        ),
        Op(
            "etcd.txn",
            "etcd Txn compare-and-set (grpcio)",
            "etcd",
            "set",
            versioned_set(lambda v, n: peer.cas(var, n, v), revision),
            baseline=ECHO,
        ),
    ]


def _redis(cleanup: ExitStack, port: int) -> tuple[RedisPeer, list[Op]]:
    """redis-py's ops beside ours, and its GET alone in a fresh process, sampled beside
    the suite's own: what a redis-py user measures (the cross-check)."""
    peer = RedisPeer(port)
    cleanup.callback(peer.close)
    peer.flush()
    ops = redis_ops(peer, "redis", ECHO, alone=ALONE)  # writes the key the GETs read
    alone = cleanup.enter_context(RedisAlone(port))
    return peer, [*ops, alone_op(alone, ALONE, beside="redis.get")]


def _import_once(address: str, exported: dict[str, Any]) -> float:
    importer = BridgedState.init(address=address, timeout=60)
    try:
        started = time.perf_counter_ns()
        importer.import_state(exported)
        return time.perf_counter_ns() - started
    finally:
        importer.cleanup()


def _redis_import_once(peer: RedisPeer, records: dict[str, dict[str, Any]]) -> float:
    started = time.perf_counter_ns()
    peer.import_session("bench:session", records)
    return time.perf_counter_ns() - started


def _handles(cleanup: ExitStack, address: str) -> tuple[BridgedState, BridgedState, BridgedState]:
    """A session's handle; another on it sending unary RPCs only (``stream=False``),
    what the Calls stream saves measured beside it; and one with coalescing off
    (``coalesce=False``), what coalescing costs a lone call."""
    state = BridgedState.init(address=address, timeout=30)
    cleanup.callback(state.cleanup)
    others = []
    for stream, coalesce in ((False, True), (True, False)):
        other = BridgedState.init(
            address=address,
            session_id=state.session_id,
            create=False,
            timeout=30,
            stream=stream,
            coalesce=coalesce,
        )
        cleanup.callback(other.cleanup)
        others.append(other)
    return state, others[0], others[1]


def run(run: Run) -> None:
    samples: int = run.pick(3000, 500)
    servers = run.servers
    store, echo_server = servers.store(), servers.echo()
    redis_server, etcd_server = servers.redis(), servers.etcd()
    with ExitStack() as cleanup:
        channel = grpc.insecure_channel(echo_server.address)
        cleanup.callback(channel.close)
        echo = echo_stub(channel)
        stream_echo = StreamEcho(channel)
        cleanup.callback(stream_echo.close)
        state, unary, single = _handles(cleanup, store.address)
        supervisor = Supervisor.start(bridge_address=store.address, bridge_timeout=30)
        cleanup.callback(supervisor.stop)
        ctx = supervisor.start_context(backend="bridged")
        names = [f"v{i}" for i in range(100)]
        state.register_variable("temperature", "float", 0.7, constraints={"min": 0, "max": 2})
        ctx.register_variable("temperature", "float", 0.7, constraints={"min": 0, "max": 2})
        state.register_variable("unary", "float", 0.7, constraints={"min": 0, "max": 2})
        for name in names:
            state.register_variable(name, "integer", 0, constraints={"min": 0})
        counter = iter(range(10**9))

        def update_many() -> None:
            i = next(counter)
            state.update_variables({name: i for name in names})

        def set_with(
            target: BridgedState | Context, name: str = "temperature"
        ) -> Callable[[], object]:
            def setter(value: float, version: int) -> int:
                new: int = target.set_variable(name, value, expected_version=version)
                return new

            return versioned_set(setter, 0)

        get_peers, set_peers = ("redis.get", "etcd.range"), ("redis.cas", "etcd.txn")
        ops = [
            Op(
                ECHO,
                "bare grpcio echo (16 bytes)",
                "baseline",
                "echo",
                lambda: echo(b"\x00" * 16, timeout=10),
            ),
            Op(
                STREAM_ECHO,
                "bare grpcio stream echo (16 bytes, one open stream)",
                "baseline",
                "echo",
                lambda: stream_echo(b"\x00" * 16),
                baseline=ECHO,
            ),
            Op(
                "bridged.get",
                "BridgedState.get_variable",
                "bridged",
                "get",
                lambda: state.get_variable("temperature"),
                baseline=ECHO,
                peers=get_peers,
            ),
            Op(
                "bridged.set",
                "BridgedState.set_variable (compare-and-set)",
                "bridged",
                "set",
                set_with(state),
                baseline=ECHO,
                peers=set_peers,
            ),
            Op(
                "bridged.uncoalesced.get",
                "BridgedState.get_variable, coalescing off (coalesce=False)",
                "bridged",
                "get",
                lambda: single.get_variable("temperature"),
                baseline="bridged.get",
            ),
            Op(
                "bridged.unary.get",
                "BridgedState.get_variable, unary RPC (stream=False)",
                "bridged",
                "get",
                lambda: unary.get_variable("unary"),
                baseline=ECHO,
                peers=("bridged.get",),
            ),
            Op(
                "bridged.unary.set",
                "BridgedState.set_variable (compare-and-set), unary RPC (stream=False)",
                "bridged",
                "set",
                set_with(unary, "unary"),
                baseline=ECHO,
                peers=("bridged.set",),
            ),
            Op(
                "bridged.get100",
                "BridgedState.get_variables (100 names)",
                "bridged",
                "get100",
                lambda: state.get_variables(names),
                baseline="bridged.get",
            ),
            Op(
                "bridged.update100",
                "BridgedState.update_variables (100 names)",
                "bridged",
                "update100",
                update_many,
                baseline="bridged.get",
            ),
            Op(
                "context.bridged.get",
                "Context (bridged).get_variable",
                "context",
                "get",
                lambda: ctx.get_variable("temperature"),
                baseline="bridged.get",
            ),
            Op(
                "context.bridged.set",
                "Context (bridged).set_variable (compare-and-set)",
                "context",
                "set",
                set_with(ctx),
                baseline="bridged.set",
            ),
        ]
        redis_peer = etcd_peer = None
        if redis_server is not None:
            redis_peer, redis = _redis(cleanup, redis_server.port)
            ops += redis
        if etcd_server is not None:
            etcd_peer = EtcdPeer(etcd_server.address)
            cleanup.callback(etcd_peer.close)
            ops += _etcd_ops(etcd_peer)
        sample_ops(run, SUITE, "bridge", ops, samples)

        big = export_of_floats(10_000, "bench-import")
        runs: int = run.pick(7, 5)
        times = time_runs(
            "bridge: importing 10,000 variables", lambda: _import_once(store.address, big), runs
        )
        add_duration(
            run,
            SUITE,
            "bridged.import10k",
            "BridgedState.import_state, 10,000 variables (one RPC)",
            "bridged",
            "import",
            times,
            baseline="bridged.get",
            peers=("redis.import10k",),
        )
        if redis_peer is not None:
            records = {r["name"]: r for r in big["variables"].values()}
            times = time_runs(
                "bridge: redis import of 10,000 records",
                lambda: _redis_import_once(redis_peer, records),
                runs,
            )
            add_duration(
                run,
                SUITE,
                "redis.import10k",
                "redis-py HSET of 10,000 msgpack records (one MULTI)",
                "redis",
                "import",
                times,
                baseline="redis.get",
            )
            redis_peer.flush()
