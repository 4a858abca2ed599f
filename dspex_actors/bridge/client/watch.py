"""A bridged session's events as a :class:`~dspex_actors.delivery.Source`: the
server's Watch stream, opened again from its cursor after any outage.

The stream's first message says where it starts and which incarnation of the
session it follows, so a subscription needs no other call to learn them, and a
stream opened again never crosses into a later session of the same id: the request
names the incarnation (the server answers NOT_FOUND for another), and the source
ends with ``closed`` if the first message names another anyway. If the stream breaks
(the connection drops, the server restarts, the stream's long deadline ends) the
delivery reads again after its backoff, and the source opens the stream from the
sequence after the last event it gave, so a brief outage loses and repeats nothing;
past the server's kept history the server says ``overflow`` first. A failure that
is not worth another try ends the source: before the stream was up it is raised to
whoever waits for it (:meth:`WatchSource.ready`), after, the subscriber hears
``closed``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import grpc

from dspex_actors.delivery import Ended, Interrupted
from dspex_actors.errors import BridgeUnavailable, StateError
from dspex_actors.streaming import Event
from dspex_actors.v1 import session_store_pb2 as pb
from dspex_actors.wire import status as wire_status
from dspex_actors.wire.events import event_of, progress, started

__all__ = ["WATCH_DEADLINE", "WatchSource"]

logger = logging.getLogger(__name__)

WATCH_DEADLINE = 3600.0
"""Every RPC has a deadline; a Watch stream's is long, and it is reopened after it."""

_RETRIED = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.INTERNAL,
    }
)


class WatchSource:
    """A session's Watch stream, from a cursor (see the module docstring).

    ``on_connect(start)`` hears each time the stream is up (with where it starts),
    ``on_disconnect()`` each time it broke after being up, ``on_close()`` once, when
    the source is released.
    """

    def __init__(
        self,
        open_stream: Callable[[pb.WatchRequest], Any],
        session_id: str,
        pattern: str | None,
        start: int | None,
        incarnation: str,
        max_bytes: int,
        *,
        timeout: float,
        address: str,
        on_connect: Callable[[int], None] | None = None,
        on_disconnect: Callable[[], None] | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.session_id = session_id
        self.failure: StateError | None = None
        """What ended the source before its stream was ever up (for :meth:`ready`)."""
        self._open = open_stream
        self._pattern = pattern
        self._cursor = start
        self._incarnation = incarnation
        self._max_bytes = max_bytes
        self._timeout = timeout
        self._address = address
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self._on_close = on_close
        self._lock = threading.Lock()
        self._stream: Any = None
        self._messages: Any = None
        self._connected = False  # this stream said where it starts
        self._ever_up = False
        self._stopped = False
        self._up = threading.Event()  # up once, or ended: nobody waits longer

    def ready(self) -> None:
        """Return once the server holds the watch (its first message came), so a
        write made after this returns is never missed, and the events of a session
        that closes right after are delivered up to its ``closed``. Within the
        handle's timeout; else ``BridgeUnavailable`` (the server is unreachable, or
        this process's watch connection already carries the streams it takes on
        one), or the error that ended the watch (``SessionNotFound``, say)."""
        if self._up.wait(self._timeout) and self._ever_up:
            return
        if self.failure is not None:
            raise self.failure
        raise BridgeUnavailable(
            f"SessionStore at {self._address} did not start the watch of session "
            f"{self.session_id!r} within {self._timeout}s; not subscribed (it is "
            "unreachable, or this process's watch connection already carries the "
            "streams it takes on one: rule 'max_calls_per_connection')",
            session_id=self.session_id,
        )

    def _closed(self) -> list[Event]:
        last = self._cursor - 1 if self._cursor is not None else 0
        return [Event(self.session_id, last, "closed")]

    def _end(self, error: StateError | None) -> list[Event]:
        """Nothing more comes: ``closed`` once the stream was ever up; before, the
        failure is kept for :meth:`ready` and the source ends quietly."""
        if self._ever_up:
            if error is not None:
                logger.warning("watch of %s ended: %s", self.session_id, error)
            return self._closed()
        self.failure = error
        self._up.set()
        raise Ended

    def read(self, timeout: float) -> list[Event]:
        if self._messages is None:
            with self._lock:
                if self._stopped:
                    raise Ended
                request = pb.WatchRequest(
                    session_id=self.session_id,
                    patterns=[self._pattern] if self._pattern else [],
                    start_sequence=self._cursor or 0,
                    incarnation=self._incarnation,
                    started=True,
                    progress=True,
                )
                try:
                    self._stream = self._open(request)
                except ValueError:  # the handle's channel is closed: nothing more comes
                    return self._end(None)
                self._messages = iter(self._stream)
        try:
            message = next(self._messages)
        except StopIteration:  # ended without closed: the server stops, or the deadline
            self._drop()
            raise Interrupted("the watch stream ended") from None
        except grpc.RpcError as exc:
            self._drop()
            if self._stopped:
                raise Ended from None
            code = exc.code() if isinstance(exc, grpc.Call) else None
            if code in _RETRIED:
                raise Interrupted(f"the watch stream broke ({code})") from exc
            # The session is gone (NOT_FOUND) or the server refuses: say so.
            return self._end(wire_status.error_from_rpc(exc, "the SessionStore"))
        beginning = started(message)
        if beginning is not None:
            return self._started(*beginning)
        read_to = progress(message)
        if read_to is not None:  # nothing more matched up to there
            self._cursor = max(self._cursor or 0, read_to + 1)
            return []
        try:
            event = event_of(message, self._max_bytes)
        except StateError as exc:  # a value this client cannot decode
            self._drop()
            logger.error("watch of %s ended: %s", self.session_id, exc)
            return self._closed()
        # After an overflow the server goes on from the present; a stream opened
        # again before the next event says overflow again, not nothing.
        self._cursor = event.sequence + 1
        return [event]

    def _started(self, start: int, incarnation: str) -> list[Event]:
        """The stream's first message: where it starts, and which incarnation."""
        if self._incarnation and incarnation and incarnation != self._incarnation:
            self._drop()
            return self._end(None)  # a later session of the same id: not ours
        self._incarnation = incarnation or self._incarnation
        if self._cursor is None:
            self._cursor = start
        self._connected = self._ever_up = True
        self._up.set()
        if self._on_connect is not None:
            self._on_connect(start)
        return []

    def _drop(self) -> None:
        """The stream is done: the next read opens another."""
        with self._lock:
            self._stream = self._messages = None
        if self._connected:
            self._connected = False
            if self._on_disconnect is not None:
                self._on_disconnect()

    @property
    def position(self) -> int | None:
        """Past the last event given or skipped; None while the stream is down after
        it was up (nothing can be drained from it then). A source not yet opened (a
        Context's new backend, from the switch's cut) tells its cursor: its first
        read opens the stream from there."""
        if self._ever_up and not self._connected:
            return None
        return self._cursor

    def wake(self) -> None:
        with self._lock:
            self._stopped = True
            stream = self._stream
        if stream is not None:
            stream.cancel()

    def close(self) -> None:
        self._up.set()  # nobody waits for a watch that ended
        if self._on_close is not None:
            self._on_close()
