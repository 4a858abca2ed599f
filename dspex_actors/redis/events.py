"""A session's change events as Redis keeps them: one Stream per incarnation.

The write scripts append each change to the session's stream with the session's
sequence as the entry id (``<sequence>-0``); readers ``XREAD`` from a cursor, and a
stream trimmed past a cursor means ``overflow``. A closed session's stream ends with
a ``closed`` entry. These helpers decode entries and wake a blocked reader; the
subscription (:class:`RedisSubscription`) and the server's follower read with them.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from dspex_actors.records import name_matches
from dspex_actors.redis.connections import Connections, release_connections, share_connections
from dspex_actors.streaming import Closing, Event, EventKind, Subscriber, hand_over

if TYPE_CHECKING:
    from redis.connection import AbstractConnection

__all__ = [
    "STREAM_BLOCK_MS",
    "STREAM_READ_COUNT",
    "RedisSubscription",
    "present_cursor",
    "stream_event",
    "stream_sequence",
    "unblock",
]

logger = logging.getLogger(__name__)

STREAM_BLOCK_MS = 1000
"""How long a stream reader waits in one ``XREAD``; then it checks the session lives."""
STREAM_READ_COUNT = 512
"""Entries one ``XREAD`` takes from a stream."""
DEFAULT_TIMEOUT = 5.0
_FIRST_PAUSE = 0.01
_MAX_PAUSE = 0.25


def _text(data: bytes) -> str:
    return data.decode()


def _unpack(data: bytes) -> Any:
    import msgpack

    return msgpack.unpackb(data, raw=False)


class RedisSubscription(Closing):
    """Delivery of a session's stream to one subscriber, from its own thread.

    The thread reads the stream with ``XREAD BLOCK`` on a connection of its own,
    from the subscription's cursor (so it reconnects and resumes where it was after
    a connection failure); ``close`` stops it before returning (unless called by the
    subscriber itself, from that thread: then no event follows it).
    """

    def __init__(
        self,
        connections: Connections,
        session_id: str,
        incarnation: str,
        keys: tuple[str, ...],
        pattern: str | None,
        subscriber: Subscriber,
        start: int,
    ) -> None:
        self.pattern = pattern
        self.subscriber = subscriber
        self.session_id = session_id
        self._incarnation = incarnation
        self._session_key = keys[0]
        self._events_key = keys[-1]
        self._cursor = start
        self._stopped = threading.Event()
        self._finishing = threading.Event()
        self._reader_id: int | None = None
        self._connections = share_connections(connections)  # the thread's, released at its end
        self._thread = threading.Thread(
            target=self._run, name=f"dspex-redis-events-{session_id}", daemon=True
        )
        self._thread.start()

    @property
    def last_sequence(self) -> int:
        """The sequence of the last event delivered (or skipped by the pattern)."""
        return self._cursor - 1

    @property
    def active(self) -> bool:
        return not self._stopped.is_set() and self._thread.is_alive()

    def _run(self) -> None:
        errors = self._connections.errors
        pause = _FIRST_PAUSE
        try:
            while not self._stopped.is_set():
                reader = self._connections.new(
                    socket_timeout=STREAM_BLOCK_MS / 1000
                    + self._connections.connection_kwargs.get("socket_timeout", DEFAULT_TIMEOUT)
                )
                try:
                    reader.connect()
                    reader.send_command("CLIENT", "ID")
                    self._reader_id = int(reader.read_response())
                    self._follow(reader)
                    return
                except (errors.ConnectionError, errors.TimeoutError, OSError) as exc:
                    logger.info("session %s: event stream interrupted: %s", self.session_id, exc)
                finally:
                    self._reader_id = None
                    reader.disconnect()
                self._stopped.wait(pause)  # reconnect with backoff; close() ends the wait
                pause = min(pause * 2, _MAX_PAUSE)
        except Exception:
            logger.exception("session %s: event delivery failed", self.session_id)
        finally:
            self._stopped.set()
            release_connections(self._connections)

    def _follow(self, reader: AbstractConnection) -> None:
        """Deliver from the cursor until stopped, closed, or the connection fails."""
        while not self._stopped.is_set():
            finishing = self._finishing.is_set()
            block: list[Any] = [] if finishing else ["BLOCK", STREAM_BLOCK_MS]
            reader.send_command(
                "XREAD",
                "COUNT",
                STREAM_READ_COUNT,
                *block,
                "STREAMS",
                self._events_key,
                f"{max(self._cursor - 1, 0)}-0",
            )
            reply = reader.read_response()
            if not reply:
                if self._stopped.is_set():
                    return
                if finishing or not self._live(reader):
                    hand_over(self.subscriber, Event(self.session_id, self._cursor - 1, "closed"))
                    return
                continue
            entries = reply[0][1]
            if stream_sequence(entries[0][0]) > self._cursor:  # trimmed past the cursor
                # The present is taken first: a write made after the subscriber got
                # its overflow event is always delivered.
                present = present_cursor(reader, self._events_key, self._cursor)
                missed, self._cursor = self._cursor - 1, present
                hand_over(self.subscriber, Event(self.session_id, missed, "overflow"))
                continue
            for entry_id, raw in entries:
                if self._stopped.is_set():
                    return
                sequence = stream_sequence(entry_id)
                fields = dict(zip(raw[::2], raw[1::2], strict=True))
                if fields[b"k"] == b"closed":
                    hand_over(self.subscriber, Event(self.session_id, sequence - 1, "closed"))
                    return
                if name_matches(_text(fields[b"n"]), self.pattern):
                    hand_over(self.subscriber, stream_event(self.session_id, sequence, fields))
                self._cursor = sequence + 1

    def _live(self, reader: AbstractConnection) -> bool:
        reader.send_command("HGET", self._session_key, "incarnation")
        return bool(reader.read_response() == self._incarnation.encode())

    def _wake(self) -> None:
        """Make a blocked ``XREAD`` return now."""
        unblock(self._connections, self._reader_id)

    def finish(self) -> None:
        """Deliver what the stream holds now, then ``closed``, then stop (a handle
        detaching, or an owner that could not close the session)."""
        self._finishing.set()
        self._wake()

    def close(self) -> None:
        """Stop delivery; idempotent. Returns once no event is being delivered."""
        self._stopped.set()
        if threading.current_thread() is self._thread:
            return
        while self._thread.is_alive():
            self._wake()
            self._thread.join(0.05)  # until the thread sees the flag (woken at once)

    def __repr__(self) -> str:
        state = "active" if self.active else "stopped"
        return f"<RedisSubscription {self.pattern or '*'} of {self.session_id} ({state})>"


_KINDS: dict[bytes, EventKind] = {
    b"registered": "registered",
    b"updated": "updated",
    b"deleted": "deleted",
}


def unblock(connections: Connections, reader_id: int | None) -> None:
    """Make connection ``reader_id``'s blocked ``XREAD`` return now (``CLIENT UNBLOCK``
    on another connection); a failure is left alone: the read times out by itself."""
    if reader_id is None:
        return
    errors = connections.errors
    try:
        connection = connections.take()
    except (errors.ConnectionError, errors.TimeoutError, OSError):
        return
    try:
        connection.send_command("CLIENT", "UNBLOCK", reader_id)
        connection.read_response()
    except (errors.ConnectionError, errors.TimeoutError, OSError):
        connection.disconnect()
        return
    except errors.ResponseError:
        pass
    connections.give(connection)


def stream_event(session_id: str, sequence: int, fields: dict[bytes, bytes]) -> Event:
    """The change event a session's stream entry records (not ``closed``)."""
    kind: EventKind = _KINDS[fields[b"k"]]
    value = fields.get(b"v")
    return Event(
        session_id,
        sequence,
        kind,
        _text(fields[b"i"]),
        _text(fields[b"n"]),
        None if value is None else _unpack(value),
        int(fields[b"r"]),
        _unpack(fields[b"m"]),
        float(fields[b"t"]),
    )


def present_cursor(reader: AbstractConnection, events_key: str, cursor: int) -> int:
    """Where a reader trimmed past ``cursor`` goes on: past what the stream holds (at
    its closed entry, if it ends with one, so that is delivered)."""
    reader.send_command("XREVRANGE", events_key, "+", "-", "COUNT", 1)
    last = reader.read_response()
    if not last:
        return cursor
    entry_id, raw = last[0]
    sequence = stream_sequence(entry_id)
    closed = dict(zip(raw[::2], raw[1::2], strict=True)).get(b"k") == b"closed"
    return sequence if closed else sequence + 1


def stream_sequence(entry_id: bytes) -> int:
    """The sequence of a stream entry (its id is ``<sequence>-0``)."""
    return int(entry_id.split(b"-", 1)[0])
