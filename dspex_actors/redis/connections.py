"""Connections to one Redis, and one script call made within a deadline.

Plain redis-py ``Connection`` objects, shared by every handle, store and reader on
the same Redis and counted by reference (like the bridge's channels). A command is
written and read here, not through redis-py's client, because what matters is the
moment of failure: a failure to connect sent nothing, a failure once the command
was written may hide an applied write. That is what classes a failed write as not
applied or outcome unknown. redis-py's own retries are off: a write is only ever
retried by its caller, with its request id.

:func:`call_scope` lets a caller from outside (a SessionStore server relaying a
client's write) fix the request id and deadline of the scripts run in its thread.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dspex_actors.redis.scripts import Script
from dspex_actors.urls import redacted

if TYPE_CHECKING:
    from redis.connection import AbstractConnection

__all__ = [
    "CHAIN_LENGTH",
    "Connections",
    "Unanswered",
    "acquire_connections",
    "call_scope",
    "check_reachable",
    "current_scope",
    "evaluate",
    "redis_module",
    "release_connections",
    "share_connections",
]

_MAX_IDLE_CONNECTIONS = 32
_MISSING_EXTRA = (
    "RedisState needs redis-py, which comes with the extra: pip install 'dspex_actors[redis]'"
)


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


class Connections:
    """Connections to one Redis, shared by the handles and subscriptions using it.

    Counted by reference like the bridge's channels: the first :func:`acquire_connections`
    makes it, the last :func:`release_connections` closes its idle connections. Plain redis-py
    ``Connection`` objects, taken and given back around one command: a failure to
    connect is told apart from a failure once the command may have been sent, which
    is what classes a failed write (not applied, or outcome unknown). redis-py's own
    retries are off: a write is only ever retried here, with its request id.
    """

    def __init__(self, key: tuple[str, float], url: str, timeout: float) -> None:
        redis = redis_module()
        self.key = key
        options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": redis.retry.Retry(redis.backoff.NoBackoff(), 0),
            "health_check_interval": 0,
            "protocol": 2,  # the replies parsed here are RESP2's
        }
        try:  # redis-py 7+: no maintenance notifications (one command less per connect)
            from redis.maint_notifications import MaintNotificationsConfig
        except ImportError:
            pass
        else:
            options["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
        try:
            pool = redis.ConnectionPool.from_url(url, **options)
        except ValueError as exc:  # redis-py's words: ours, with a URL that works
            raise ValueError(
                f"Redis URL {redacted(url)!r}: {exc}; give one as in "
                "'redis://127.0.0.1:6379/0' (rediss:// for TLS, unix:///path/to.sock)"
            ) from None
        self.connection_class: Callable[..., AbstractConnection] = pool.connection_class
        self.connection_kwargs: dict[str, Any] = dict(pool.connection_kwargs)
        self.errors = redis.exceptions
        self.users = 0
        self._idle: list[AbstractConnection] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def new(self, **overrides: Any) -> AbstractConnection:
        """A connection of this Redis, not yet connected, owned by the caller."""
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


def check_reachable(url: str, timeout: float) -> None:
    """Connect to ``url`` and PING it: ``OSError`` saying why not (a server checks
    its store at start, not at its first call)."""
    connections = acquire_connections(url, timeout)
    try:
        connection = connections.take()
        try:
            connection.send_command("PING")
            connection.read_response()
        except BaseException:
            connection.disconnect()
            raise
        connections.give(connection)
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


class Unanswered(Exception):
    """One attempt got no answer; ``maybe_sent`` says whether Redis may have run it."""

    def __init__(self, cause: Exception, maybe_sent: bool) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.maybe_sent = maybe_sent


def _command(
    verb: str, script: str, count: int, keys: Sequence[str], args: Sequence[Any]
) -> bytes:
    """One ``EVAL``/``EVALSHA`` in the Redis protocol. Written here, not by redis-py's
    general encoder: an import's hundreds of thousands of arguments pack in a tenth
    of the time."""
    parts = [b"*%d\r\n" % (3 + len(keys) + len(args))]
    append = parts.append
    for item in (verb, script, count, *keys, *args):
        data = item if type(item) is bytes else str(item).encode()
        append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


def evaluate(
    connections: Connections,
    script: Script,
    keys: Sequence[str],
    args: Sequence[Any],
    read_timeout: float | None = None,
) -> Any:
    """One attempt of one script: its reply, a ``ResponseError`` Redis answered, or
    :class:`_Unanswered`. With ``read_timeout`` (a long script: a large import) the
    attempt has a connection of its own that waits that long for the reply."""
    errors = connections.errors
    try:
        if read_timeout is None:
            connection = connections.take()
        else:
            connection = connections.new(socket_timeout=read_timeout)
            connection.connect()
    except (errors.AuthenticationError, errors.AuthorizationError):
        raise
    except (errors.ConnectionError, errors.TimeoutError, OSError) as exc:
        raise Unanswered(exc, maybe_sent=False) from exc
    try:
        try:
            connection.send_packed_command(
                [_command("EVALSHA", script.sha, len(keys), keys, args)]
            )
            reply = connection.read_response()
        except errors.NoScriptError:  # Redis restarted or flushed its scripts: not run
            connection.send_packed_command([_command("EVAL", script.text, len(keys), keys, args)])
            reply = connection.read_response()
    except errors.BusyLoadingError as exc:  # refused while loading its data: not run
        connection.disconnect()
        raise Unanswered(exc, maybe_sent=False) from exc
    except (errors.ConnectionError, errors.TimeoutError, OSError) as exc:
        connection.disconnect()
        connections.close()  # the idle ones likely broke alike (a restart): reconnect
        raise Unanswered(exc, maybe_sent=True) from exc
    except errors.ResponseError:
        if read_timeout is None:  # a whole reply was read: the connection is sound
            connections.give(connection)
        else:
            connection.disconnect()
        raise
    except BaseException:
        connection.disconnect()
        raise
    if read_timeout is None:
        connections.give(connection)
    else:
        connection.disconnect()
    return reply


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
