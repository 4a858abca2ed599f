"""Where a session lives: RedisState and BridgedState on each store, beside raw Redis.

Issue 11's stores, measured in one run against one ``redis-server`` (the run's):

- **Latency**, in blocks interleaved round-robin (:mod:`benchmarks.timing`):
  ``get_variable``, ``set_variable`` (a compare-and-set: ``expected_version`` = the
  version the last set returned) and ``update_variables`` of 100 variables, on
  ``RedisState`` (the session in Redis, no server between) and on ``BridgedState``
  against a SessionStore serving each store — ``memory``, ``sqlite`` (a file in the
  server's temporary directory, removed with it) and ``redis`` (the run's Redis) —
  beside redis-py's ``GET``, ``SET``, Lua compare-and-set and a Lua batch writing 100
  variables (value and version + 1 each) on the same Redis. Each of ours is judged
  against the Redis op doing its work (get: ``GET``; set: the CAS; update100: the
  batch); bridged ops also against the memory store's, and the Redis store's against
  ``RedisState``'s, so what the server hop and each store add shows. redis-py's
  ``GET`` is also sampled alone in a fresh process, each block beside a block of the
  suite's (``stores.redis.alone.get``, :mod:`benchmarks.alone`): the cross-check that
  the ``GET`` these ratios divide by is what a redis-py user gets.
- **Throughput**, 8 load client processes (:mod:`benchmarks.load`, as the throughput
  suite starts them): get and compare-and-set ops/s of ``RedisState`` and of
  ``BridgedState`` on the Redis store, beside redis-py's ``GET`` and Lua CAS, modes
  alternating. Reads share one variable; each client writes a variable of its own.

The three SessionStores are this suite's own, fresh, started as the run's SessionStore
is (:mod:`benchmarks.servers`: own process, the servers' core) and stopped at its end.
Ids: ``store.KIND.OP`` for ours, ``stores.redis.OP`` for the Redis peer (the bridge
suite's ``redis.*`` are sampled beside the bridge's ops, not these), and
``stores.throughput.KIND.OP@8``. Without Redis (no ``redis-server`` or redis-py, or
``--no-peers``) the suite is skipped with the reason: every figure is a ratio to it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from benchmarks.load import KEY
from benchmarks.peers import RedisAlone, RedisPeer, alone_op, redis_ops
from benchmarks.results import Backend
from benchmarks.suite import Op, Run, add_duration, sample_ops, versioned_set
from benchmarks.throughput import LoadClients, sweep
from dspex_actors import BridgedState, RedisState, StateProvider

SUITE = "stores"
PEER = "stores.redis"
ALONE = f"{PEER}.alone.get"
CLIENTS = 8
NAMES = [f"v{i}" for i in range(100)]
BESIDE = {"memory": (), "sqlite": ("bridged_memory",), "redis": ("bridged_memory", "redis_state")}
"""Each store's bridged ops are also set beside these stores' (``store.KIND.OP``)."""

# load client mode -> (id's KIND.OP, label, backend, op, the Redis peer's mode)
MODES: dict[str, tuple[str, str, Backend, str, str | None]] = {
    "redis_state.get": (
        "redis_state.get",
        "RedisState.get_variable",
        "redis_state",
        "get",
        "redis.get",
    ),
    "redis_state.set": (
        "redis_state.set",
        "RedisState.set_variable (compare-and-set)",
        "redis_state",
        "set",
        "redis.cas",
    ),
    "bridged.get": (
        "bridged_redis.get",
        "BridgedState.get_variable (redis store)",
        "bridged",
        "get",
        "redis.get",
    ),
    "bridged.set": (
        "bridged_redis.set",
        "BridgedState.set_variable (compare-and-set, redis store)",
        "bridged",
        "set",
        "redis.cas",
    ),
    "redis.get": ("redis.get", "redis-py GET", "redis", "get", None),
    "redis.cas": ("redis.cas", "redis-py Lua compare-and-set (EVALSHA)", "redis", "set", None),
}


def _prepare(state: StateProvider) -> StateProvider:
    """The bridge suite's variables: ``temperature`` and 100 integers ``v0``..``v99``."""
    state.register_variable("temperature", "float", 0.7, constraints={"min": 0, "max": 2})
    for name in NAMES:
        state.register_variable(name, "integer", 0, constraints={"min": 0})
    return state


def _store_ops(
    kind: str, backend: Backend, state: StateProvider, store: str | None, beside: tuple[str, ...]
) -> list[Op]:
    """``store.KIND.get``, ``.set`` and ``.update100`` of one handle (on ``store``, if
    bridged), judged against the Redis peer doing that work and the stores ``beside``."""
    counter = iter(range(10**9))

    def update_many() -> None:
        state.update_variables(dict.fromkeys(NAMES, next(counter)))

    def setter(value: float, version: int) -> int:
        return state.set_variable("temperature", value, expected_version=version)

    def op(name: str, method: str, detail: str | None, fn: Callable[[], object], peer: str) -> Op:
        details = [d for d in (detail, store and f"{store} store") if d]
        return Op(
            f"store.{kind}.{name}",
            f"{type(state).__name__}.{method}" + (f" ({', '.join(details)})" if details else ""),
            backend,
            name,
            fn,
            baseline=f"{PEER}.{peer}",
            peers=tuple(f"store.{other}.{name}" for other in beside),
        )

    return [
        op("get", "get_variable", None, lambda: state.get_variable("temperature"), "get"),
        op("set", "set_variable", "compare-and-set", versioned_set(setter, 0), "cas"),
        op("update100", "update_variables", "100 names", update_many, "update100"),
    ]


def _peer_ops(peer: RedisPeer) -> list[Op]:
    """redis-py's GET, SET and CAS, and the 100-variable Lua batch."""
    keys = [f"bench:{name}" for name in NAMES]
    peer.fill_variables(keys, 0)
    counter = iter(range(10**9))
    batch = Op(
        f"{PEER}.update100",
        "redis-py Lua batch write of 100 variables (EVALSHA)",
        "redis",
        "update100",
        lambda: peer.write_many(keys, [next(counter)] * len(keys)),
    )
    return [*redis_ops(peer, PEER, None, alone=ALONE), batch]


def _throughput(run: Run, config: dict[str, Any]) -> None:
    """8 load clients on RedisState's and the Redis store's sessions, beside redis-py."""
    clients = LoadClients(CLIENTS, config, SUITE)
    try:
        total, rounds = run.pick(4000, 480), run.pick(2, 1)
        measured = sweep(clients, list(MODES), (CLIENTS,), total, rounds, SUITE)
    finally:
        clients.close()
    for mode, (kind, label, backend, op, peer) in MODES.items():
        outcome = measured[mode, CLIENTS]
        beside = f"stores.throughput.redis_state.{op}@{CLIENTS}"
        add_duration(
            run,
            SUITE,
            f"stores.throughput.{kind}@{CLIENTS}",
            f"{label}, {CLIENTS} client processes",
            backend,
            op,
            outcome.latencies,
            kind="throughput",
            baseline=f"stores.throughput.{peer}@{CLIENTS}" if peer else None,
            peers=(beside,) if backend == "bridged" else (),
            rates=outcome.rates,
        )


def run(run: Run) -> None:
    redis_server = run.servers.redis()
    if redis_server is None:
        run.results.skip(SUITE, f"needs Redis: {run.servers.unavailable['redis']}")
        return
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    # A relative sqlite: file lands in the server's temporary directory, removed with it.
    specs = {"memory": "memory", "sqlite": "sqlite:sessions.db", "redis": url}
    try:
        with ExitStack() as cleanup:
            peer = RedisPeer(redis_server.port)
            cleanup.callback(peer.close)
            cleanup.callback(peer.flush)  # last: whatever the sessions and clients left
            direct = RedisState.init(url=url, timeout=30)
            cleanup.callback(direct.cleanup)
            ops = _peer_ops(peer)
            alone = cleanup.enter_context(RedisAlone(redis_server.port))
            ops.append(alone_op(alone, ALONE, beside=f"{PEER}.get"))
            ops += _store_ops("redis_state", "redis_state", _prepare(direct), None, ())
            bridged: dict[str, tuple[str, BridgedState]] = {}
            for store, spec in specs.items():
                address = run.servers.store(f"store.{store}", spec).address
                state = BridgedState.init(address=address, timeout=30)
                cleanup.callback(state.cleanup)
                bridged[store] = address, state
                ops += _store_ops(
                    f"bridged_{store}", "bridged", _prepare(state), store, BESIDE[store]
                )
            sample_ops(run, SUITE, SUITE, ops, run.pick(3000, 500))
            peer.put(KEY, 0.7)
            address, state = bridged["redis"]
            config = {"redis": redis_server.port, "store": address, "session": state.session_id}
            config |= {"redis_url": url, "redis_session": direct.session_id, "writes": True}
            _throughput(run, config)
    finally:
        for store in specs:
            run.servers.stop(f"store.{store}")
