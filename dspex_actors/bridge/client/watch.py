"""A BridgedState subscription: the server's Watch stream, kept up across outages.

One thread per subscription reads the stream and hands each event to the
subscriber (a callable, or a Pykka actor it tells), as a local subscription does.
If the stream breaks (the connection drops, the server restarts, the stream's long
deadline ends) the thread opens it again from the sequence after the last event it
delivered, so a brief outage loses and repeats nothing; past the server's kept
history the server says ``overflow`` first. A subscription starts from the
sequence the session had when ``subscribe`` was called (read in that call), so a
write made after ``subscribe`` returns is never missed. It ends after a ``closed``
event: the session closed, or cannot be found any more.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import grpc

from dspex_actors.errors import StateError
from dspex_actors.records import check_pattern
from dspex_actors.streaming import (
    Closing,
    Event,
    EventKind,
    Subscriber,
    check_subscriber,
    hand_over,
)
from dspex_actors.v1 import session_store_pb2 as pb
from dspex_actors.wire import status as wire_status
from dspex_actors.wire.events import event_of

__all__ = ["RemoteSubscription"]

logger = logging.getLogger(__name__)

WATCH_DEADLINE = 3600.0
"""Every RPC has a deadline; a Watch stream's is long, and it is reopened after it."""

_KINDS: dict[int, EventKind] = {
    pb.VariableEvent.KIND_REGISTERED: "registered",
    pb.VariableEvent.KIND_UPDATED: "updated",
    pb.VariableEvent.KIND_DELETED: "deleted",
    pb.VariableEvent.KIND_OVERFLOW: "overflow",
    pb.VariableEvent.KIND_CLOSED: "closed",
}
_RETRIED = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.INTERNAL,
    }
)
_FIRST_PAUSE = 0.01
_MAX_PAUSE = 1.0


class RemoteSubscription(Closing):
    """A subscription to a bridged session (see the module docstring)."""

    def __init__(
        self,
        open_stream: Callable[[pb.WatchRequest], Any],
        session_id: str,
        pattern: str | None,
        subscriber: Subscriber,
        start: int,
        max_bytes: int,
        on_connect: Callable[[], None] | None = None,
        on_disconnect: Callable[[], None] | None = None,
        on_end: Callable[[], None] | None = None,
    ) -> None:
        check_subscriber(subscriber)
        self.pattern = check_pattern(pattern)
        self.subscriber = subscriber
        self.session_id = session_id
        self._open = open_stream
        self._cursor: int | None = start
        self._max_bytes = max_bytes
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._stream: Any = None
        self._said_closed = False
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self._on_end = on_end  # its thread has ended: nothing of it runs any more
        self._up = threading.Event()  # the server has the watch (or it ended)
        self.reconnects = 0
        self._thread = threading.Thread(
            target=self._run, name=f"dspex-watch-{session_id}", daemon=True
        )
        self._thread.start()

    @property
    def last_sequence(self) -> int | None:
        """The sequence of the last event delivered (None before any)."""
        return None if self._cursor is None else self._cursor - 1

    @property
    def active(self) -> bool:
        return not self._stopped.is_set() and self._thread.is_alive()

    def _run(self) -> None:
        try:
            self._follow()
        finally:
            self._up.set()  # nobody waits for a watch that ended
            if self._on_end is not None:
                self._on_end()

    def _follow(self) -> None:
        pause = _FIRST_PAUSE
        while not self._stopped.is_set():
            request = pb.WatchRequest(
                session_id=self.session_id,
                patterns=[self.pattern] if self.pattern else [],
                start_sequence=self._cursor or 0,
            )
            try:
                with self._lock:
                    if self._stopped.is_set():
                        return
                    try:
                        self._stream = self._open(request)
                    except ValueError:  # the handle's channel is closed: nothing more comes
                        self._end()
                        return
                self._stream.initial_metadata()  # the server answers once it holds the watch
                if not self._stream.done():  # (a call that failed answers too: no metadata)
                    self._up.set()
                    if self._on_connect is not None:
                        self._on_connect()
                for message in self._stream:
                    pause = _FIRST_PAUSE
                    try:
                        event = self._event(message)
                    except StateError as exc:  # a value this client cannot decode
                        logger.error("watch of %s ended: %s", self.session_id, exc)
                        self._end()
                        return
                    hand_over(self.subscriber, event)
                    # After an overflow the server goes on from the present; a stream
                    # reopened before the next event says overflow again, not nothing.
                    self._cursor = event.sequence + 1
                    if event.kind == "closed":
                        self._said_closed = True
                        self._stopped.set()
                        return
            except grpc.RpcError as exc:
                if self._stopped.is_set():
                    return
                code = exc.code() if isinstance(exc, grpc.Call) else None
                if code not in _RETRIED:
                    if self._on_disconnect is not None:
                        self._on_disconnect()
                    # The session is gone (NOT_FOUND) or the server refuses: say so.
                    error = wire_status.error_from_rpc(exc, "the SessionStore")
                    logger.warning("watch of %s ended: %s", self.session_id, error)
                    self._end()
                    return
            # The stream ended or broke: open it again from where it stopped.
            if self._on_disconnect is not None:
                self._on_disconnect()
            if self._stopped.wait(pause):  # a reconnection's backoff
                return
            self.reconnects += 1
            pause = min(pause * 2, _MAX_PAUSE)

    def wait_up(self, timeout: float) -> bool:
        """Wait (up to ``timeout``) until the server holds the watch, so events of a
        session that closes right after are still delivered, up to its ``closed``;
        False if it did not within ``timeout``."""
        return self._up.wait(timeout)

    def _end(self) -> None:
        """Tell the subscriber ``closed`` and stop."""
        self._said_closed = True
        hand_over(self.subscriber, Event(self.session_id, self.last_sequence or 0, "closed"))
        self._stopped.set()

    def finish(self, timeout: float) -> None:
        """The session was closed: deliver what the server still sends, up to its
        ``closed`` (within ``timeout`` seconds), then end as :meth:`end` does."""
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        self.end()

    def end(self) -> None:
        """The handle is going away: stop, the subscriber told ``closed`` once."""
        self.close()
        if not self._said_closed:
            self._end()

    def _event(self, message: pb.VariableEvent) -> Event:
        return event_of(message, self._max_bytes)

    def close(self) -> None:
        """Stop delivery; idempotent. Returns once no event is being delivered."""
        with self._lock:
            self._stopped.set()
            stream = self._stream
        if stream is not None:
            stream.cancel()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def __repr__(self) -> str:
        state = "active" if self.active else "stopped"
        return f"<RemoteSubscription {self.pattern or '*'} of {self.session_id} ({state})>"
