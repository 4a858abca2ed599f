"""Connections to one Redis (or a Sentinel's primary, or a Cluster's nodes), and one
script call made within a deadline.

Plain redis-py ``Connection`` objects, shared by every handle, store and reader on
the same Redis URL and counted by reference (like the bridge's channels). A command
is written and read here, not through redis-py's client, because what matters is
the moment of failure: a failure to connect sent nothing, a failure once the command
was written may hide an applied write. That is what classes a failed write as not
applied or outcome unknown. redis-py's own retries are off: a write is only ever
retried by its caller, with its request id.

Where a command goes (:meth:`Connections.node`), by the URL's form
(:func:`~dspex_actors.urls.redis_target`):

- one Redis: its connections;
- Sentinel: redis-py's ``Sentinel.master_for`` connections, each of which asks the
  Sentinels for the primary when it connects: after a failover, connections to the
  old primary break (Sentinel kills its clients when it demotes it), and new ones
  reach the promoted replica;
- Cluster: redis-py's ``RedisCluster`` keeps the map of slots to nodes; each node's
  connections are kept here. A session's keys share one hash tag, so one slot, so
  every script runs on one node. ``MOVED``, ``ASK``, ``TRYAGAIN`` and
  ``CLUSTERDOWN`` mean the script did not run: the map is read again and the call
  retried, as after a lost connection (a failover moves the slots).

``?wait=N`` in the URL sends Redis ``WAIT N timeout`` after each write, on the same
connection and in the same packet: the write is acknowledged only once N replicas
hold it; if fewer did within the timeout, :class:`Unreplicated` carries the reply.

:func:`call_scope` lets a caller from outside (a SessionStore server relaying a
client's write) fix the request id and deadline of the scripts run in its thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from dspex_actors.redis.options import connection_setup, pool_of, sentinel_arguments
from dspex_actors.redis.scripts import Script
from dspex_actors.redis.steps import (
    Attempt,
    Pause,
    Steps,
    Unanswered,
    Unreplicated,
    classify,
    replicated,
    script_command,
)
from dspex_actors.urls import redacted

if TYPE_CHECKING:
    from redis.connection import AbstractConnection

__all__ = [
    "CHAIN_LENGTH",
    "Connections",
    "NodeConnections",
    "Unanswered",
    "Unreplicated",
    "acquire_connections",
    "call_scope",
    "check_reachable",
    "current_scope",
    "drive",
    "evaluate",
    "redis_module",
    "release_connections",
    "share_connections",
]

logger = logging.getLogger(__name__)

R = TypeVar("R")

_MAX_IDLE_CONNECTIONS = 32
_MISSING_EXTRA = (
    "RedisState needs redis-py, which comes with the extra: pip install 'dspex_actors[redis]'"
)
_REMAP_PAUSE = 0.05
"""Seconds between two readings of a cluster's slot map (many calls fail at once)."""


def redis_module() -> Any:
    """redis-py, or the ImportError that names the extra bringing it."""
    try:
        import redis
        import redis.backoff
        import redis.exceptions
        import redis.retry
    except ImportError as exc:
        raise ImportError(_MISSING_EXTRA) from exc
    return redis


class NodeConnections:
    """Idle connections to one Redis node, taken and given back around one command.

    A failure to connect is told apart from a failure once the command may have
    been sent, which is what classes a failed write (not applied, or outcome
    unknown). Forked children start with none (the sockets are the parent's).
    """

    def __init__(
        self, connection_class: Callable[..., AbstractConnection], kwargs: dict[str, Any]
    ) -> None:
        self.connection_class = connection_class
        self.connection_kwargs = kwargs
        self._idle: list[AbstractConnection] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def new(self, **overrides: Any) -> AbstractConnection:
        """A connection of this node, not yet connected, owned by the caller."""
        return self.connection_class(**{**self.connection_kwargs, **overrides})

    def take(self) -> AbstractConnection:
        """An idle connection, or a new one, connected (a failure here sent nothing)."""
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the sockets are the parent's
                self._idle = []
                self._pid = os.getpid()
            connection = self._idle.pop() if self._idle else None
        if connection is None:
            connection = self.new()
            connection.connect()
        return connection

    def give(self, connection: AbstractConnection) -> None:
        """Back to the idle list after a complete request and reply."""
        with self._lock:
            if self._pid == os.getpid() and len(self._idle) < _MAX_IDLE_CONNECTIONS:
                self._idle.append(connection)
                return
        connection.disconnect()

    def close(self) -> None:
        """Disconnect the idle connections (those in use are given back later)."""
        with self._lock:
            idle, self._idle = self._idle, []
            mine = self._pid == os.getpid()
        if mine:
            for connection in idle:
                connection.disconnect()


class Connections:
    """Connections to what one Redis URL names, shared by the handles and readers using it.

    Counted by reference like the bridge's channels: the first
    :func:`acquire_connections` makes it, the last :func:`release_connections`
    closes it. :meth:`node` is where a key's commands go (see the module docstring).
    """

    def __init__(self, key: tuple[str, float], url: str, timeout: float) -> None:
        redis = redis_module()
        self.key = key
        self.url = url
        self.target, self.wait, self._options = connection_setup(
            url, timeout, redis.retry.Retry(redis.backoff.NoBackoff(), 0)
        )
        self.clustered = self.target.kind == "cluster"
        self.errors = redis.exceptions
        self.users = 0
        self._timeout = timeout
        self._lock = threading.Lock()
        self._closers: list[Callable[[], None]] = []
        self._single: NodeConnections | None = None
        self._cluster: Any = None  # redis-py's RedisCluster, made at the first call
        self._nodes: dict[str, NodeConnections] = {}
        self._mapped = 0.0  # when the cluster's slot map was last read
        if self.target.kind == "single":
            self._single = self._one_redis()
        elif self.target.kind == "sentinel":
            self._single = self._sentinel_primary()

    def _one_redis(self) -> NodeConnections:
        pool = pool_of(redis_module().ConnectionPool, self.url, self.target, self._options)
        return NodeConnections(pool.connection_class, dict(pool.connection_kwargs))

    def _sentinel_primary(self) -> NodeConnections:
        from redis.sentinel import Sentinel

        target = self.target
        sentinel = Sentinel(
            list(target.nodes), **sentinel_arguments(target, self._timeout, self._options)
        )
        client = sentinel.master_for(target.service)
        self._closers += [client.close, sentinel.close]  # its pool: what connections ask
        pool = client.connection_pool
        return NodeConnections(pool.connection_class, dict(pool.connection_kwargs))

    def _cluster_client(self) -> Any:
        """redis-py's RedisCluster (its slot map), made at the first call: it reads
        the map from the nodes, which may not answer yet."""
        with self._lock:
            if self._cluster is not None:
                return self._cluster
        cluster = _kept_map(self.key)
        if cluster is None:
            from redis.cluster import ClusterNode, RedisCluster

            target = self.target
            options = {k: v for k, v in self._options.items() if k != "health_check_interval"}
            cluster = RedisCluster(
                startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
                username=target.username,
                password=target.password,
                require_full_coverage=False,  # a slot without its node fails alone
                **options,
            )
        with self._lock:
            if self._cluster is None:
                self._cluster = cluster
                self._mapped = time.monotonic()
                return cluster
        _keep_map(self.key, cluster)
        return self._cluster

    def node(self, key: str) -> NodeConnections:
        """The connections of the node that holds ``key`` (its hash slot) now;
        :class:`Unanswered` (nothing sent) when no node can be named."""
        if self._single is not None:
            return self._single
        errors = self.errors
        try:
            cluster = self._cluster_client()
            node = cluster.nodes_manager.get_node_from_slot(self.slot(key))
        except (errors.RedisError, errors.RedisClusterException, OSError) as exc:
            raise Unanswered(exc, maybe_sent=False) from exc
        with self._lock:
            found = self._nodes.get(node.name)
            if found is None:
                pool = node.redis_connection.connection_pool
                found = self._nodes[node.name] = NodeConnections(
                    pool.connection_class, dict(pool.connection_kwargs)
                )
            return found

    def slot(self, key: str) -> int:
        """The hash slot of ``key``."""
        from redis.crc import key_slot

        return int(key_slot(key.encode()))

    def group(self, key: str) -> Hashable:
        """Which keys one command may read together with ``key``: all of them on one
        Redis, those of its slot in a cluster (else Redis answers ``CROSSSLOT``)."""
        return self.slot(key) if self.clustered else None

    def rerouted(self) -> None:
        """A command found its node gone or not serving its slot: read the cluster's
        slot map again (at most every few tens of milliseconds); nothing for one Redis
        or Sentinel, whose connections find the primary when they connect."""
        if not self.clustered:
            return
        with self._lock:
            cluster = self._cluster
            if cluster is None or time.monotonic() - self._mapped < _REMAP_PAUSE:
                return
            self._mapped = time.monotonic()
        try:
            cluster.nodes_manager.initialize()
        except Exception as exc:  # no node answers now: the next call asks again
            logger.debug("reading the slot map of %s failed: %s", redacted(self.url), exc)

    def close(self) -> None:
        """Disconnect every idle connection, and redis-py's own clients."""
        with self._lock:
            nodes = list(self._nodes.values())
            closers, self._closers = self._closers, []
            cluster, self._cluster = self._cluster, None
        if self._single is not None:
            nodes.append(self._single)
        for node in nodes:
            node.close()
        for close in closers:
            with contextlib.suppress(Exception):
                close()
        if cluster is not None:
            _keep_map(self.key, cluster)


_KEPT_MAPS = 16
"""Cluster slot maps kept after their last user (per URL and timeout), so that a
process opening and closing handles on one cluster reads its layout once (about
10 ms: ``CLUSTER SLOTS`` and ``COMMAND``), not per handle. A map that went stale
is read again at the first ``MOVED``."""
_kept_lock = threading.Lock()
_kept: OrderedDict[tuple[str, float], Any] = OrderedDict()


def _kept_map(key: tuple[str, float]) -> Any:
    """A RedisCluster kept for ``key`` (taken: one user at a time), or None."""
    with _kept_lock:
        return _kept.pop(key, None)


def _keep_map(key: tuple[str, float], cluster: Any) -> None:
    """Keep ``cluster``'s map, its connections closed; the oldest past
    :data:`_KEPT_MAPS` (and one kept for ``key`` already) are closed instead."""
    with contextlib.suppress(Exception):
        cluster.disconnect_connection_pools()
    spares = []
    with _kept_lock:
        old = _kept.pop(key, None)
        if old is not None:
            spares.append(old)
        _kept[key] = cluster
        while len(_kept) > _KEPT_MAPS:
            spares.append(_kept.popitem(last=False)[1])
    for spare in spares:
        with contextlib.suppress(Exception):
            spare.close()


def check_reachable(url: str, timeout: float) -> None:
    """Connect to ``url`` and PING it: ``OSError`` saying why not (a server checks
    its store at start, not at its first call)."""
    connections = acquire_connections(url, timeout)
    try:
        node = connections.node("dspex")
        connection = node.take()
        try:
            connection.send_command("PING")
            connection.read_response()
        except BaseException:
            connection.disconnect()
            raise
        node.give(connection)
    except Unanswered as exc:
        raise OSError(f"cannot reach the Redis store {redacted(url)}: {exc}") from None
    except connections.errors.RedisError as exc:
        raise OSError(f"cannot reach the Redis store {redacted(url)}: {exc}") from None
    finally:
        release_connections(connections)


_registry_lock = threading.Lock()
_registry: dict[tuple[str, float], Connections] = {}


def acquire_connections(url: str, timeout: float) -> Connections:
    """The shared connections to ``url`` (with ``timeout``), one more user counted."""
    key = (url, timeout)
    with _registry_lock:
        connections = _registry.get(key)
        if connections is None:
            connections = _registry[key] = Connections(key, url, timeout)
        connections.users += 1
        return connections


def share_connections(connections: Connections) -> Connections:
    """One more user of connections already acquired (a reader thread's share)."""
    with _registry_lock:
        connections.users += 1
    return connections


def release_connections(connections: Connections) -> None:
    """One user less; the last one closes the idle connections."""
    with _registry_lock:
        connections.users -= 1
        if connections.users > 0:
            return
        if _registry.get(connections.key) is connections:
            del _registry[connections.key]
    connections.close()


def _exchange(connection: AbstractConnection, command: bytes, wait: bytes | None) -> Any:
    """Send ``command`` (and ``wait`` behind it, in the same packet) and read the
    replies: the command's, and with ``wait`` how many replicas acknowledged it.
    An error reply to the command is raised once both replies are read, so the
    connection stays usable."""
    connection.send_packed_command([command, wait] if wait else [command])
    failure: Exception | None = None
    try:
        reply = connection.read_response()
    except redis_module().exceptions.ResponseError as exc:  # an error Redis answered
        if wait is None:
            raise
        reply, failure = None, exc
    if wait is None:
        return reply
    acknowledged = int(connection.read_response())
    if failure is not None:
        raise failure
    return reply, acknowledged


def _connection(
    connections: Connections, node: NodeConnections, read_timeout: float | None
) -> AbstractConnection:
    """A connection for one attempt: an idle one, or (``read_timeout``) a new one
    of its own; :class:`Unanswered` (nothing sent) when none can be made."""
    try:
        if read_timeout is None:
            return node.take()
        connection = node.new(socket_timeout=read_timeout)
        connection.connect()
        return connection
    except Exception as exc:
        failure = classify(connections.errors, exc, sent=False)
        if failure.reroute:
            connections.rerouted()
        if failure.error is exc:
            raise
        raise failure.error from exc


def evaluate(
    connections: Connections,
    script: Script,
    keys: Sequence[str],
    args: Sequence[Any],
    read_timeout: float | None = None,
    *,
    write: bool = False,
) -> Any:
    """One attempt of one script: its reply, a ``ResponseError`` Redis answered, or
    :class:`Unanswered` (:func:`~dspex_actors.redis.steps.classify` reads the
    failure); a ``write`` under ``?wait=N`` raises :class:`Unreplicated` when fewer
    replicas acknowledged it. With ``read_timeout`` (a long script: a large
    import) the attempt has a connection of its own that waits that long."""
    errors = connections.errors
    node = connections.node(keys[0])
    connection = _connection(connections, node, read_timeout)
    wait = connections.wait if write else None
    try:
        try:
            reply = _exchange(connection, script_command(script, keys, args, by_sha=True), wait)
        except errors.NoScriptError:  # Redis restarted or flushed its scripts: not run
            reply = _exchange(connection, script_command(script, keys, args, by_sha=False), wait)
    except Exception as exc:
        failure = classify(errors, exc, sent=True)
        if failure.keep and read_timeout is None:
            node.give(connection)
        else:
            connection.disconnect()
        if failure.reset:
            node.close()  # the idle ones likely broke alike (a restart): reconnect
        if failure.reroute:
            connections.rerouted()
        if failure.error is exc:
            raise
        raise failure.error from exc
    except BaseException:
        connection.disconnect()
        raise
    if read_timeout is None:
        node.give(connection)
    else:
        connection.disconnect()
    if wait is None:
        return reply
    result, acknowledged = reply
    target = connections.target
    return replicated(result, acknowledged, target.wait_replicas, target.wait_timeout_ms)


def drive(
    connections: Connections | None, steps: Steps[R], reader: AbstractConnection | None = None
) -> R:
    """Run an engine step (:mod:`dspex_actors.redis.steps`) on redis-py, blocking:
    each :class:`Attempt` by :func:`evaluate`, each ``Pause`` by sleeping, each
    ``Command`` on ``reader``; what an attempt failed with is thrown into the step."""
    reply: Any = None
    failure: Exception | None = None
    while True:
        try:
            request = steps.send(reply) if failure is None else steps.throw(failure)
        except StopIteration as done:
            result: R = done.value
            return result
        reply, failure = None, None
        try:
            if isinstance(request, Attempt):
                if connections is None:
                    raise TypeError("a script's attempt needs the connections to Redis")
                reply = evaluate(
                    connections,
                    request.script,
                    request.keys,
                    request.args,
                    request.read_timeout,
                    write=request.write,
                )
            elif isinstance(request, Pause):
                time.sleep(request.seconds)  # a retry's backoff, bounded by its deadline
            else:
                if reader is None:
                    raise TypeError("a stream reader's command needs the reader's connection")
                reader.send_command(*request.args)
                reply = reader.read_response()
        except Exception as exc:
            failure = exc


@dataclass(slots=True)
class _CallScope:
    """What a caller from outside (a SessionStore server) fixes for one call."""

    request_id: str | None
    deadline: float | None  # monotonic seconds
    retain: int  # seconds Redis remembers each reply
    attempts: int = 0
    expires_ms: int = 0  # the deadline as an instant, Unix ms (0: none)


CHAIN_LENGTH = 16
"""The most scripts one relayed write sends (each re-planned after a change it met)."""

_SCOPE: ContextVar[_CallScope | None] = ContextVar("dspex_redis_call", default=None)


@contextlib.contextmanager
def call_scope(request_id: str | None, deadline: float | None, retain: int) -> Iterator[None]:
    """Run the calls made in this block (in this thread) with the caller's request id
    and deadline.

    A SessionStore server relays a client's write with the client's request id, so
    a retry reaching any server sharing the Redis is answered with the first reply.
    One call may send several scripts (a write planned on a cached definition that
    turned out stale is planned again): the n-th sends ``<request id>.<n>``, at most
    :data:`CHAIN_LENGTH` of them (so Settle knows every id one write may use), so a
    retry replays the same chain and applies at most one of them. ``retain``: how
    long (seconds) Redis remembers each reply.
    """
    expires_ms = 0
    if deadline is not None:  # as an instant, for Redis to hold a late script to
        expires_ms = int((time.time() + deadline - time.monotonic()) * 1000)
    token = _SCOPE.set(_CallScope(request_id, deadline, retain, expires_ms=expires_ms))
    try:
        yield
    finally:
        _SCOPE.reset(token)


def current_scope() -> _CallScope | None:
    """The scope :func:`call_scope` set for this thread's calls (None: none)."""
    return _SCOPE.get()
