"""AsyncRedisState: a session in Redis for asyncio code, on ``redis.asyncio``.

The asyncio twin of :class:`~dspex_actors.redis.state.RedisState`, on the same
engine: every operation runs the very steps RedisState runs
(:mod:`dspex_actors.redis.operations`, ``writes``, ``pages``: generators that ask
for requests, :mod:`dspex_actors.redis.steps`), driven here by
:func:`~dspex_actors.redis.async_connections.drive_async` instead of the blocking
driver. So the checks, the order in which they are made, the errors and their
messages, the retries with one request id, the settling of a write that got no
answer, ``?wait=N`` and the Sentinel and Cluster URLs are RedisState's; no thread
waits for a reply, and the loop never waits on a socket.

Outcomes: a write is applied once, clearly not applied (``BridgeUnavailable``), or
``OutcomeUnknown`` with its ``request_id``; ``await state.settle(request_id, age)``
tells which (the error's own blocking ``settle()`` is not offered on a loop and
raises ``NotSupported``). A task cancelled during a write gets ``CancelledError``
as asyncio expects, with a note: not applied (nothing of it was sent), or the
request id to settle (its script may have reached Redis).

Events are the session's Redis Stream as an async iterator: ``XREAD BLOCK`` on a
connection of the stream's own, from a cursor (:class:`~dspex_actors.redis.events.
StreamCursor`, shared with RedisState's subscriptions, decides what each read
means), resumed after a break with the same ``overflow`` and ``closed`` rules. A
cancelled read drops its connection (a blocked ``XREAD`` ends with its client).
An owner's :meth:`aclose` closes the session (every reader everywhere ends with
``closed``); a detaching handle ends its own streams with ``closed`` after what
they hold (``CLIENT UNBLOCK`` wakes a blocked read, as RedisState's does). Either
way a stream open then still gives what came before its ``closed``, read after
the close: the handle's connections are let go of when its last stream ends.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar, Self, TypeVar

from dspex_actors.aio.following import OPENED, PROGRESSED, EventStream, in_thread
from dspex_actors.aio.methods import AsyncRemoteSessionMethods
from dspex_actors.backoff import Backoff
from dspex_actors.errors import SessionClosed, SessionNotFound, StateError
from dspex_actors.limits import DEFAULT_LIMITS, Limits
from dspex_actors.messages import Operation
from dspex_actors.records import check_pattern
from dspex_actors.redis import operations, scripts
from dspex_actors.redis.async_connections import AsyncConnections, ask, drive_async
from dspex_actors.redis.events import STREAM_BLOCK_MS, UNBLOCK_AGAIN, StreamCursor
from dspex_actors.redis.session import DEFAULT_TIMEOUT, SessionEngine
from dspex_actors.redis.state import DEFAULT_TTL, DEFAULT_URL, URL_ENV, RedisState
from dspex_actors.redis.steps import Steps, Unanswered
from dspex_actors.session import new_session_id
from dspex_actors.streaming import DEFAULT_HISTORY, Event

__all__ = ["AsyncRedisSession", "AsyncRedisState"]

logger = logging.getLogger(__name__)

R = TypeVar("R")


class AsyncRedisSession(SessionEngine):
    """The Redis engine on ``redis.asyncio``: its steps awaited on the handle's own
    connections (:class:`~dspex_actors.redis.async_connections.AsyncConnections`)."""

    def __init__(self, *, connections: AsyncConnections, **engine: Any) -> None:
        super().__init__(**engine)
        self.connections = connections

    @classmethod
    async def open(
        cls,
        *,
        session_id: str | None,
        url: str,
        ttl: float | None,
        timeout: float,
        create: bool,
        limits: Limits,
        event_history: int,
        pending: bool = False,
    ) -> AsyncRedisSession:
        """Open ``session_id`` as :meth:`RedisSession.open
        <dspex_actors.redis.session.RedisSession.open>` does, awaited."""
        cls.check_options(session_id, ttl, timeout, event_history, limits)
        if not _PREPARED.is_set():  # a first import, a first version read: off the loop
            await in_thread(_prepare)
        session = cls(
            connections=AsyncConnections(url, timeout),
            url=url,
            session_id=session_id or new_session_id(),
            timeout=timeout,
            limits=limits,
            event_history=event_history,
        )
        try:
            await session.drive(session.opening(create, ttl, pending, None, None, None))
        except BaseException:
            await session.release()
            raise
        return session

    async def drive(
        self, steps: Steps[R], sent: list[str] | None = None, *, scans: bool = False
    ) -> R:
        """Run one of the engine's steps, awaited (``sent``: see ``drive_async``;
        ``scans``: a listing's or an export's, whose decoding of a large session
        goes on in a thread)."""
        offload = in_thread if scans else None
        return await drive_async(self.connections, steps, sent=sent, offload=offload)

    async def release(self, *, streams: bool = False) -> None:
        """Let go of the connections (unless ``streams``: the handle's event streams
        still read, and the last of them lets go); later calls raise
        ``SessionClosed``; idempotent."""
        if self._closing() and not streams:
            await self.connections.close()


_PREPARED = threading.Event()
"""Set once :func:`_prepare` ran in this process."""


def _prepare() -> None:
    """What a first connection of the process would do on the loop, done in a thread:
    import redis.asyncio's modules, and read redis-py's version from its package
    metadata (files on disk, parsed: about 3 ms; each connection tells Redis it,
    from a process-wide cache)."""
    import redis.asyncio.cluster
    import redis.asyncio.sentinel
    import redis.utils

    version = getattr(redis.utils, "get_lib_version", None)
    if version is not None:
        version()
    _PREPARED.set()


class _Reading:
    """One open event stream's reader connection, as :meth:`AsyncRedisState.aclose`
    needs to see it (to wake it) and the stream to use it."""

    def __init__(self) -> None:
        self.connection: Any = None
        self.client_id: int | None = None
        self.reading = False  # an XREAD BLOCK may be blocked now
        self.finishing = False  # give what the stream holds, then closed


class AsyncRedisState(AsyncRemoteSessionMethods):
    """A session held in Redis, for asyncio code (see the module docstring).

    The handle that created the session owns it (``owner``): its :meth:`aclose`
    deletes the session everywhere; one that attached only detaches.
    """

    kind: ClassVar[str] = "redis"

    def __init__(self, session: AsyncRedisSession, /) -> None:
        """Internal: open one with ``await AsyncRedisState.init(...)``."""
        self.session_id = session.session_id
        self.owner = session.created
        self._session = session
        self._closed = False
        self._readings: set[_Reading] = set()

    @classmethod
    async def init(
        cls,
        *,
        session_id: str | None = None,
        existing_state: Mapping[str, Any] | None = None,
        url: str | None = None,
        ttl: float | None = DEFAULT_TTL,
        timeout: float = DEFAULT_TIMEOUT,
        create: bool = True,
        limits: Limits = DEFAULT_LIMITS,
        event_history: int = DEFAULT_HISTORY,
        pending: bool = False,
        **backend_opts: Any,
    ) -> Self:
        """Open ``session_id`` as ``RedisState.init`` does (the same arguments, the
        same errors), awaited."""
        if backend_opts:
            raise TypeError(f"AsyncRedisState.init got unknown options: {', '.join(backend_opts)}")
        session = await AsyncRedisSession.open(
            session_id=session_id,
            url=url or os.environ.get(URL_ENV) or DEFAULT_URL,
            ttl=ttl,
            timeout=timeout,
            create=create,
            limits=limits,
            event_history=event_history,
            pending=pending,
        )
        handle = cls(session)
        if existing_state is not None:
            try:
                await handle.import_state(existing_state)
            except BaseException:
                await handle.aclose()
                raise
        return handle

    @property
    def url(self) -> str:
        return self._session.url

    @property
    def where(self) -> str:
        """The Redis URL for messages: no password."""
        return self._session.where

    @property
    def incarnation(self) -> str:
        return self._session.incarnation

    @property
    def ttl_seconds(self) -> float | None:
        """Seconds the session lives after its last use (None: no expiry)."""
        return self._session.ttl_seconds

    def _closed_error(self) -> SessionClosed:
        return SessionClosed(f"session {self.session_id!r}: this handle is cleaned up")

    async def run(self, operation: Operation[R]) -> R:
        """Run one operation as RedisState does, awaited (see the module docstring
        for what a cancelled write's note says)."""
        if self._closed:
            raise self._closed_error()
        session = self._session
        sent: list[str] = []
        try:
            steps = operations.steps(session, operation)
            return await session.drive(steps, sent, scans=operation.scans)
        except asyncio.CancelledError as cancelled:
            if operation.write:
                what = f"{type(operation).__name__} in session {self.session_id!r}"
                cancelled.add_note(
                    f"{what} may have been applied: settle(request_id={sent[-1]!r}, age) "
                    "tells, as for OutcomeUnknown"
                    if sent
                    else f"{what} was not applied (cancelled before it was sent)"
                )
            raise

    async def replies(self, request_id: str) -> list[list[Any]]:
        """The remembered replies of a relayed write's scripts (``call_scope``)."""
        return await self._session.drive(self._session.replies(request_id))

    async def history_start(self) -> int:
        """The oldest event sequence the session's stream still holds."""
        return await self._session.drive(self._session.history_start())

    # -- events -----------------------------------------------------------------------

    def events(self, pattern: str | None = None, start: int | None = None) -> EventStream:
        if self._closed:
            raise self._closed_error()
        position: list[int | None] = [None]
        follow = self._follow(check_pattern(pattern), start, position)
        return EventStream(follow, lambda: position[0])

    async def _follow(
        self, pattern: str | None, start: int | None, position: list[int | None]
    ) -> AsyncIterator[Event]:
        """The session's stream from ``start`` (None: its next sequence, read now):
        reconnected after a break (with backoff), ended by ``closed``."""
        session = self._session
        if session.closed:  # made before the handle closed, first read after
            raise self._closed_error()
        if start is None:
            start = int((await session.drive(session.read(scripts.INFO, "0")))[0])
        stream = StreamCursor(self.session_id, self.incarnation, session.keys, pattern, start)
        position[0] = start
        reading = _Reading()
        self._readings.add(reading)
        errors = session.errors
        backoff = Backoff()
        try:
            yield OPENED
            while True:
                try:
                    events = await self._read(stream, reading)
                except (errors.ConnectionError, errors.TimeoutError, OSError, Unanswered) as exc:
                    failure: Exception = exc
                except errors.ResponseError as exc:  # a failover's UNBLOCKED, a MOVED
                    failure = exc
                else:
                    backoff.reset()
                    for event in events:
                        position[0] = max(stream.cursor, event.sequence + 1)
                        yield event
                        if event.kind == "closed":
                            return
                    if position[0] != stream.cursor:  # moved past skipped events
                        position[0] = stream.cursor
                        yield PROGRESSED
                    continue
                await _drop(reading)
                if reading.finishing or session.closed:
                    yield Event(self.session_id, stream.cursor - 1, "closed")
                    return
                logger.info("events of %s: reading again after %s", self.session_id, failure)
                await session.connections.rerouted()
                await asyncio.sleep(backoff.next())  # bounded backoff before reconnecting
        finally:
            self._readings.discard(reading)
            await _drop(reading)
            if session.closed and not self._readings:  # the handle closed: the last one
                await session.connections.close()

    async def _read(self, stream: StreamCursor, reading: _Reading) -> list[Event]:
        """One read of the stream: after a (re)connection, what its history says;
        else one ``XREAD`` (blocking a period unless finishing) and its events."""
        session = self._session
        connections = session.connections
        reader = reading.connection
        if reader is None:
            node = await connections.node(stream.events_key)
            reader = node.new(socket_timeout=STREAM_BLOCK_MS / 1000 + session.timeout)
            reading.connection = reader
            await reader.connect()
            reading.client_id = int(await ask(reader, "CLIENT", "ID"))
            gap = await drive_async(connections, stream.resumed(), reader)
            if gap:
                return gap
        finishing = reading.finishing
        command = stream.read_command(block=not finishing)
        reading.reading = True
        try:
            reply = await ask(reader, *command.args)
        finally:
            reading.reading = False
        if not reply:
            return await drive_async(connections, stream.quiet(finishing), reader)
        return await drive_async(connections, stream.took(reply[0][1]), reader)

    async def _finish(self, reading: _Reading) -> None:
        """Make a detaching handle's stream give what it holds, then ``closed``: a
        read blocked now is woken (``CLIENT UNBLOCK``, asked again while the read
        has not begun to block, for at most a block period)."""
        reading.finishing = True
        deadline = time.monotonic() + STREAM_BLOCK_MS / 1000
        while reading.reading and reading.client_id is not None:
            unblocked = await self._unblock(reading.client_id)
            if unblocked is not False or time.monotonic() >= deadline:
                return
            await asyncio.sleep(UNBLOCK_AGAIN)  # the XREAD is still on its way to Redis

    async def _unblock(self, client_id: int) -> bool | None:
        """``CLIENT UNBLOCK`` of a reader: whether it was blocked (None: Redis could
        not be asked; the read then ends by itself within its block period)."""
        connections = self._session.connections
        errors = self._session.errors
        try:
            node = await connections.node(self._session.keys[-1])
            connection = await node.take()
        except (errors.RedisError, OSError, Unanswered):
            return None
        try:
            unblocked = await ask(connection, "CLIENT", "UNBLOCK", client_id)
        except (errors.ConnectionError, errors.TimeoutError, OSError):
            await connection.disconnect(nowait=True)
            return None
        except errors.ResponseError:
            unblocked = None
        await node.give(connection)
        return None if unblocked is None else bool(unblocked)

    # -- lifecycle --------------------------------------------------------------------

    @classmethod
    def requires_bridge(cls) -> bool:
        return False

    @classmethod
    def capabilities(cls) -> dict[str, bool]:
        """RedisState's: the same engine, proven by the same kit."""
        return RedisState.capabilities()

    async def aclose(self) -> None:
        """Delete the session if this handle owns it, else detach; idempotent.

        Streams end with ``closed``: the owner's close appends it for every reader
        everywhere; a detaching handle (or an owner whose close failed) ends its
        own after what they hold. Their connections stay until the last of them
        ends. A Redis that cannot be reached is logged, not raised (the session
        then expires with its TTL)."""
        if self._closed:
            return
        self._closed = True
        session = self._session
        try:
            closed = False
            if self.owner and session.keys:
                try:
                    await session.drive(session.close())
                    closed = True
                except SessionNotFound:
                    pass  # expired (or closed) already
                except StateError as exc:
                    logger.warning("closing session %s failed: %s", self.session_id, exc)
            if not closed:
                for reading in list(self._readings):
                    await self._finish(reading)
        finally:
            await session.release(streams=bool(self._readings))

    def __repr__(self) -> str:
        role = "owner" if self.owner else "attached"
        state = "closed" if self._closed else role
        return f"<AsyncRedisState {self.session_id} at {self.where} ({state})>"


async def _drop(reading: _Reading) -> None:
    """Drop a stream's reader connection (a blocked ``XREAD`` ends with its client)."""
    connection, reading.connection, reading.client_id = reading.connection, None, None
    if connection is not None:
        await connection.disconnect(nowait=True)
