"""The Redis engine's I/O as requests, and the one reading of a connection's failures.

The engine (:mod:`~dspex_actors.redis.session`, ``operations``, ``writes``,
``pages``, the stream reading of ``events``) does no I/O of its own: each step
that talks to Redis is a generator that ``yield``\\ s a request and is sent its
reply (the h11/httpx model, "sans-IO"); nested steps are ``yield from``. A driver
runs the generator: the blocking one on redis-py
(:func:`~dspex_actors.redis.connections.drive`, for ``RedisState`` and the
SessionStore's Redis store), the asyncio one on ``redis.asyncio``
(:func:`~dspex_actors.redis.async_connections.drive_async`, for
``AsyncRedisState``). So retries, settling, the order of checks and every error
message are written once.

A driver answers :class:`Attempt` with the script's reply, or throws into the
generator what the attempt failed with: a ``ResponseError`` Redis answered,
:class:`Unanswered` (no answer; ``maybe_sent`` says whether Redis may have run
it), :class:`Unreplicated` (``?wait=N`` fell short). :func:`classify` is the one
place where redis-py's exceptions (the asyncio client raises the same classes) are
read into those, for both drivers. :class:`Pause` is a retry's backoff (a sleep,
or an ``asyncio.sleep``); :class:`Command` is one command on a stream reader's own
connection.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any, NamedTuple, TypeAlias, TypeVar

from dspex_actors.redis.scripts import Script

__all__ = [
    "Attempt",
    "Command",
    "Failure",
    "Pause",
    "Request",
    "Steps",
    "Unanswered",
    "Unreplicated",
    "answered",
    "classify",
    "pack_command",
    "replicated",
    "script_command",
]

R = TypeVar("R")


class Attempt(NamedTuple):
    """One attempt of one script: the driver sends it and answers its reply.

    ``read_timeout``: the attempt waits that long for its reply on a connection of
    its own (a long script); ``write``: a write (``?wait=N`` follows it); its
    ``request_id`` is what a cancelled caller is told to settle."""

    script: Script
    keys: Sequence[str]
    args: Sequence[Any]
    read_timeout: float | None = None
    write: bool = False
    request_id: str = ""


class Pause(NamedTuple):
    """A retry's backoff: the driver waits ``seconds``, then resumes the step."""

    seconds: float


class Command(NamedTuple):
    """One command on the stream reader's connection (``XRANGE``, ``HGET``, ...)."""

    args: tuple[Any, ...]


Request: TypeAlias = Attempt | Pause | Command
Steps: TypeAlias = Generator[Request, Any, R]
"""A step of the engine: asks for requests, answers ``R``."""


def answered(value: R) -> Steps[R]:
    """A step that needs no request: answers ``value`` at once."""
    yield from ()
    return value


class Unanswered(Exception):
    """One attempt got no answer; ``maybe_sent`` says whether Redis may have run it."""

    def __init__(self, cause: Exception, maybe_sent: bool) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.maybe_sent = maybe_sent


class Unreplicated(Exception):
    """A write ran on the primary, but fewer replicas than ``?wait=N`` asked for
    acknowledged it within the wait's timeout: a failover now could lose it."""

    def __init__(self, reply: Any, acknowledged: int, wanted: int, timeout_ms: int) -> None:
        super().__init__(
            f"the primary applied it, but {acknowledged} of the {wanted} replicas asked for "
            f"acknowledged it within {timeout_ms} ms (WAIT): a failover now could lose it"
        )
        self.reply = reply
        self.acknowledged = acknowledged


class Failure(NamedTuple):
    """What one failed attempt means: the error the engine is told, and what the
    driver does with its connection and its map of the nodes."""

    error: Exception
    keep: bool = False  # a whole reply was read: the connection is sound
    reset: bool = False  # the node's idle connections likely broke alike (a restart)
    reroute: bool = False  # the node may be gone or not serve the slot: read the map


def classify(errors: Any, exc: Exception, *, sent: bool) -> Failure:
    """How a driver reads ``exc`` (redis-py's ``redis.exceptions``, ``errors``), raised
    while connecting (``sent`` False: nothing was sent) or once the command was
    written. The error is ``exc`` itself when Redis answered it (the engine reads
    the reply's words), else :class:`Unanswered`."""
    if not sent:
        if isinstance(exc, errors.AuthenticationError | errors.AuthorizationError):
            return Failure(exc)  # credentials refused: nothing ran, retrying will not help
        if isinstance(exc, errors.ConnectionError | errors.TimeoutError | OSError):
            return Failure(Unanswered(exc, maybe_sent=False), reroute=True)
        return Failure(exc)
    if isinstance(exc, errors.BusyLoadingError):  # refused while loading its data: not run
        return Failure(Unanswered(exc, maybe_sent=False))
    if isinstance(exc, errors.ConnectionError | errors.TimeoutError | OSError):
        return Failure(Unanswered(exc, maybe_sent=True), reset=True, reroute=True)
    if isinstance(exc, errors.ResponseError):
        # A cluster's refusals of a command it did not run, for now: its slot is on
        # another node (MOVED), being moved (ASK, TRYAGAIN: a session whose slot
        # migrates waits until it has), or not served (CLUSTERDOWN).
        if isinstance(exc, errors.AskError | errors.TryAgainError | errors.ClusterDownError):
            return Failure(Unanswered(exc, maybe_sent=False), keep=True, reroute=True)
        return Failure(exc, keep=True)
    return Failure(exc)


def replicated(reply: Any, acknowledged: int, wanted: int, timeout_ms: int) -> Any:
    """A write's reply under ``?wait=N``: :class:`Unreplicated` when fewer replicas
    than ``wanted`` acknowledged it."""
    if acknowledged < wanted:
        raise Unreplicated(reply, acknowledged, wanted, timeout_ms)
    return reply


def pack_command(*items: Any) -> bytes:
    """One command in the Redis protocol. Written here, not by redis-py's general
    encoder: an import's hundreds of thousands of arguments pack in a tenth of
    the time."""
    parts = [b"*%d\r\n" % len(items)]
    append = parts.append
    for item in items:
        data = item if type(item) is bytes else str(item).encode()
        append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


def script_command(
    script: Script, keys: Sequence[str], args: Sequence[Any], *, by_sha: bool
) -> bytes:
    """One ``EVALSHA`` (``by_sha``) or ``EVAL`` of ``script``."""
    if by_sha:
        return pack_command("EVALSHA", script.sha, len(keys), *keys, *args)
    return pack_command("EVAL", script.text, len(keys), *keys, *args)
