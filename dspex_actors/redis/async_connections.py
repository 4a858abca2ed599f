"""Connections to one Redis (or a Sentinel's primary, or a Cluster's nodes) on
``redis.asyncio``, and the asyncio driver of the engine's steps.

The asyncio twin of :mod:`dspex_actors.redis.connections`: plain ``redis.asyncio``
connections, a command written and read here (the moment of failure classes a
write as not applied or outcome unknown), redis-py's own retries off, and every
failure read by the one shared :func:`~dspex_actors.redis.steps.classify`. What
runs is the engine's steps, unchanged (:func:`drive_async`); no thread waits for a
reply.

Connections belong to one handle (``AsyncRedisState``), not to the process: an
asyncio connection is bound to the event loop it was made on, and handles on
other loops must not share it.

Where a command goes, by the URL's form (:func:`~dspex_actors.urls.redis_target`):
one Redis; Sentinel (``redis.asyncio.sentinel``: each connection asks the
Sentinels for the primary when it connects); Cluster (``redis.asyncio.cluster``'s
slot map; ``MOVED``/``ASK``/``TRYAGAIN``/``CLUSTERDOWN`` read it again). ``?wait=N``
sends ``WAIT`` behind each write in the same packet, as the blocking driver does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

from dspex_actors.bulk import BULK_ITEMS
from dspex_actors.redis.connections import redis_module
from dspex_actors.redis.options import connection_setup, pool_of, sentinel_arguments
from dspex_actors.redis.steps import (
    Attempt,
    Pause,
    Steps,
    classify,
    pack_command,
    replicated,
    script_command,
)
from dspex_actors.urls import redacted

__all__ = [
    "BULK_ELEMENTS",
    "AsyncConnections",
    "AsyncNodeConnections",
    "Offload",
    "ask",
    "drive_async",
    "send",
]

logger = logging.getLogger(__name__)

R = TypeVar("R")

_MAX_IDLE_CONNECTIONS = 32
_REMAP_PAUSE = 0.05
"""Seconds between two readings of a cluster's slot map (many calls fail at once)."""


class AsyncNodeConnections:
    """Idle connections to one Redis node, taken and given back around one command."""

    def __init__(self, connection_class: Callable[..., Any], kwargs: dict[str, Any]) -> None:
        self.connection_class = connection_class
        self.connection_kwargs = kwargs
        self._idle: list[Any] = []
        self._closed = False

    def new(self, **overrides: Any) -> Any:
        """A connection of this node, not yet connected, owned by the caller."""
        return self.connection_class(**{**self.connection_kwargs, **overrides})

    async def take(self) -> Any:
        """An idle connection, or a new one, connected (a failure here sent nothing)."""
        if self._idle:
            return self._idle.pop()
        return await self.opened()

    async def opened(self, **overrides: Any) -> Any:
        """A new connection of its own (``overrides``: its options), connected; one
        that fails to connect is dropped (a failure here sent nothing)."""
        connection = self.new(**overrides)
        try:
            await connection.connect()
        except BaseException:
            await connection.disconnect(nowait=True)
            raise
        return connection

    async def give(self, connection: Any) -> None:
        """Back to the idle list after a complete request and reply (closed once
        the node's connections were closed: a call that was under way then)."""
        if not self._closed and len(self._idle) < _MAX_IDLE_CONNECTIONS:
            self._idle.append(connection)
        else:
            await connection.disconnect()

    async def close(self, *, reopen: bool = False) -> None:
        """Disconnect the idle connections (those in use are closed when given
        back, unless ``reopen``: a restart of the node, not the end of its use)."""
        self._closed = self._closed or not reopen
        idle, self._idle = self._idle, []
        for connection in idle:
            with contextlib.suppress(Exception):
                await connection.disconnect()


class AsyncConnections:
    """Connections to what one Redis URL names, for one asyncio handle."""

    def __init__(self, url: str, timeout: float) -> None:
        redis_module()  # without redis-py: the ImportError naming the extra
        import redis.asyncio.retry
        import redis.backoff
        import redis.exceptions

        self.url = url
        self.target, self.wait, self._options = connection_setup(
            url, timeout, redis.asyncio.retry.Retry(redis.backoff.NoBackoff(), 0)
        )
        self.clustered = self.target.kind == "cluster"
        self.errors = redis.exceptions
        self._timeout = timeout
        self._closers: list[Callable[[], Any]] = []
        self._single: AsyncNodeConnections | None = None
        self._cluster: Any = None  # redis.asyncio's RedisCluster, made at the first call
        self._nodes: dict[str, AsyncNodeConnections] = {}
        self._mapped = 0.0
        if self.target.kind == "single":
            self._single = self._one_redis()
        elif self.target.kind == "sentinel":
            self._single = self._sentinel_primary()

    def _one_redis(self) -> AsyncNodeConnections:
        import redis.asyncio

        pool = pool_of(redis.asyncio.ConnectionPool, self.url, self.target, self._options)
        return AsyncNodeConnections(pool.connection_class, dict(pool.connection_kwargs))

    def _sentinel_primary(self) -> AsyncNodeConnections:
        from redis.asyncio.sentinel import Sentinel

        target = self.target
        sentinel = Sentinel(
            list(target.nodes), **sentinel_arguments(target, self._timeout, self._options)
        )
        client = sentinel.master_for(target.service)
        self._closers.append(client.aclose)
        self._closers += [s.aclose for s in sentinel.sentinels]
        self._keep = (sentinel, client)  # the pool's connections point to it weakly
        pool = client.connection_pool
        return AsyncNodeConnections(pool.connection_class, dict(pool.connection_kwargs))

    async def _cluster_client(self) -> Any:
        """redis.asyncio's RedisCluster (its slot map), made at the first call."""
        if self._cluster is not None:
            return self._cluster
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        target = self.target
        options = {k: v for k, v in self._options.items() if k != "health_check_interval"}
        cluster = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
            username=target.username,
            password=target.password,
            require_full_coverage=False,  # a slot without its node fails alone
            **options,
        )
        try:
            await cluster.initialize()
        except BaseException:
            with contextlib.suppress(Exception):
                await cluster.aclose()
            raise
        if self._cluster is None:  # (another task may have made one meanwhile)
            self._cluster = cluster
            self._mapped = time.monotonic()
        else:
            await cluster.aclose()
        return self._cluster

    async def node(self, key: str) -> AsyncNodeConnections:
        """The connections of the node that holds ``key`` now; ``Unanswered``
        (nothing sent) when no node can be named."""
        if self._single is not None:
            return self._single
        errors = self.errors
        try:
            cluster = await self._cluster_client()
            node = cluster.nodes_manager.get_node_from_slot(self.slot(key))
        except (errors.RedisError, errors.RedisClusterException, OSError) as exc:
            raise classify(errors, exc, sent=False).error from exc
        found = self._nodes.get(node.name)
        if found is None:
            found = self._nodes[node.name] = AsyncNodeConnections(
                node.connection_class, dict(node.connection_kwargs)
            )
        return found

    def slot(self, key: str) -> int:
        """The hash slot of ``key``."""
        from redis.crc import key_slot

        return int(key_slot(key.encode()))

    async def rerouted(self) -> None:
        """A command found its node gone or not serving its slot: read the cluster's
        slot map again (at most every few tens of milliseconds)."""
        cluster = self._cluster
        if cluster is None or time.monotonic() - self._mapped < _REMAP_PAUSE:
            return
        self._mapped = time.monotonic()
        try:
            await cluster.nodes_manager.initialize()
        except Exception as exc:  # no node answers now: the next call asks again
            logger.debug("reading the slot map of %s failed: %s", redacted(self.url), exc)

    async def close(self) -> None:
        """Disconnect every idle connection, and redis.asyncio's own clients."""
        nodes = list(self._nodes.values())
        if self._single is not None:
            nodes.append(self._single)
        closers, self._closers = self._closers, []
        cluster, self._cluster = self._cluster, None
        for node in nodes:
            await node.close()
        for close in closers:
            with contextlib.suppress(Exception):
                await close()
        if cluster is not None:
            with contextlib.suppress(Exception):
                await cluster.aclose()


async def send(connection: Any, packets: list[bytes]) -> None:
    """Write ``packets`` on ``connection`` (redis.asyncio's ``send_packed_command``),
    a cancellation kept: redis-py bounds the write with ``asyncio.wait_for``, which
    before Python 3.12 returns the write's result when the task is cancelled just as
    the write completes, so the caller would go on to wait for a reply it no longer
    wants (a cancelled write then ended only at its read timeout)."""
    task = asyncio.current_task()
    cancelling = task.cancelling() if task is not None else 0
    await connection.send_packed_command(packets)
    if task is not None and task.cancelling() > cancelling:  # swallowed by wait_for
        raise asyncio.CancelledError


async def ask(connection: Any, *args: Any) -> Any:
    """One command on ``connection`` and its reply (a stream reader's, ``CLIENT``)."""
    await send(connection, [pack_command(*args)])
    return await connection.read_response()


async def _exchange(connection: Any, command: bytes, wait: bytes | None) -> Any:
    """:func:`~dspex_actors.redis.connections` ``_exchange``'s twin: the command (and
    ``wait`` behind it, in one packet), its reply and the replicas' count."""
    await send(connection, [command, wait] if wait else [command])
    failure: Exception | None = None
    try:
        reply = await connection.read_response()
    except redis_module().exceptions.ResponseError as exc:
        if wait is None:
            raise
        reply, failure = None, exc
    if wait is None:
        return reply
    acknowledged = int(await connection.read_response())
    if failure is not None:
        raise failure
    return reply, acknowledged


async def _connection(
    connections: AsyncConnections, node: AsyncNodeConnections, read_timeout: float | None
) -> Any:
    """A connection for one attempt (see the blocking twin)."""
    try:
        if read_timeout is None:
            return await node.take()
        return await node.opened(socket_timeout=read_timeout)
    except Exception as exc:
        failure = classify(connections.errors, exc, sent=False)
        if failure.reroute:
            await connections.rerouted()
        if failure.error is exc:
            raise
        raise failure.error from exc


async def evaluate_async(
    connections: AsyncConnections, attempt: Attempt, sent: list[str] | None = None
) -> Any:
    """One attempt of one script (see :func:`~dspex_actors.redis.connections.evaluate`);
    a write's request id is added to ``sent`` once its bytes may have left."""
    errors = connections.errors
    script, keys, args = attempt.script, attempt.keys, attempt.args
    read_timeout = attempt.read_timeout
    node = await connections.node(keys[0])
    connection = await _connection(connections, node, read_timeout)
    wait = connections.wait if attempt.write else None
    if sent is not None and attempt.write and attempt.request_id:
        sent.append(attempt.request_id)
    try:
        try:
            command = script_command(script, keys, args, by_sha=True)
            reply = await _exchange(connection, command, wait)
        except errors.NoScriptError:  # Redis restarted or flushed its scripts: not run
            command = script_command(script, keys, args, by_sha=False)
            reply = await _exchange(connection, command, wait)
    except Exception as exc:
        failure = classify(errors, exc, sent=True)
        if failure.keep and read_timeout is None:
            await node.give(connection)
        else:
            await connection.disconnect(nowait=True)
        if failure.reset:
            await node.close(reopen=True)  # the idle ones likely broke alike
        if failure.reroute:
            await connections.rerouted()
        if failure.error is exc:
            raise
        raise failure.error from exc
    except BaseException:  # cancelled mid-exchange: the connection's state is unknown
        await connection.disconnect(nowait=True)
        raise
    if read_timeout is None:
        await node.give(connection)
    else:
        await connection.disconnect()
    if wait is None:
        return reply
    result, acknowledged = reply
    target = connections.target
    return replicated(result, acknowledged, target.wait_replicas, target.wait_timeout_ms)


Offload = Callable[[Callable[[], Any]], Awaitable[Any]]
"""Runs a blocking function off the loop, awaited (``aio.following.in_thread``)."""

BULK_ELEMENTS = 8 * BULK_ITEMS
"""Reply elements (a row of a session's page is 8) past which a scan's decoding
is large: :data:`~dspex_actors.bulk.BULK_ITEMS` variables' worth."""


async def drive_async(
    connections: AsyncConnections,
    steps: Steps[R],
    reader: Any = None,
    *,
    sent: list[str] | None = None,
    offload: Offload | None = None,
) -> R:
    """Run an engine step (:mod:`dspex_actors.redis.steps`) on ``redis.asyncio``: each
    ``Attempt`` by :func:`evaluate_async`, each ``Pause`` by ``asyncio.sleep``, each
    ``Command`` on ``reader``; what an attempt failed with is thrown into the step.
    ``sent`` collects the request ids of writes that may have reached Redis (what a
    cancelled caller is told to settle). Cancelled, the step is closed.

    ``offload`` (a listing's, an export's): once the replies of the step add up to
    :data:`BULK_ELEMENTS`, the step goes on by ``offload`` (in a thread), so that
    decoding a large session and building its answer never hold the loop; a small
    session's is decoded on the loop, where a thread would cost more than it."""
    reply: Any = None
    failure: Exception | None = None
    received = 0
    away = False  # the step runs in the offload's thread now: not closed under it
    try:
        while True:
            if offload is not None and received >= BULK_ELEMENTS:
                away = True
                done, request = await offload(partial(_advance, steps, reply, failure))
                away = False
            else:
                done, request = _advance(steps, reply, failure)
            if done:
                result: R = request
                return result
            reply, failure = None, None
            try:
                if isinstance(request, Attempt):
                    reply = await evaluate_async(connections, request, sent)
                    if isinstance(reply, list):
                        received += len(reply)
                elif isinstance(request, Pause):
                    await asyncio.sleep(request.seconds)  # a retry's backoff
                else:
                    if reader is None:
                        raise TypeError("a stream reader's command needs its connection")
                    reply = await ask(reader, *request.args)
            except Exception as exc:
                failure = exc
    finally:
        if not away:  # (else closed when collected, once its thread let go of it)
            steps.close()


def _advance(steps: Steps[R], reply: Any, failure: Exception | None) -> tuple[bool, Any]:
    """The step's next request (False, request) or its answer (True, answer)."""
    try:
        request = steps.send(reply) if failure is None else steps.throw(failure)
    except StopIteration as done:
        return True, done.value
    return False, request
