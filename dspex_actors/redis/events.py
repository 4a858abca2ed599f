"""A session's change events as Redis keeps them: one Stream per incarnation.

The write scripts append each change to the session's stream with the session's
sequence as the entry id (``<sequence>-0``); readers ``XREAD`` from a cursor, and a
stream trimmed past a cursor means ``overflow``. A closed session's stream ends with
a ``closed`` entry. These helpers decode entries and wake a blocked reader; the
source (:class:`StreamSource`) and the server's follower read with them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dspex_actors.delivery import Interrupted
from dspex_actors.records import name_matches
from dspex_actors.redis import scripts
from dspex_actors.redis.connections import (
    Connections,
    NodeConnections,
    drive,
    release_connections,
    share_connections,
)
from dspex_actors.redis.steps import Attempt, Command, Steps, Unanswered
from dspex_actors.streaming import Event, EventKind

if TYPE_CHECKING:
    from redis.connection import AbstractConnection

__all__ = [
    "STREAM_BLOCK_MS",
    "STREAM_READ_COUNT",
    "StreamCursor",
    "StreamSource",
    "check_history",
    "connect_reader",
    "entry_mark",
    "history",
    "present",
    "present_cursor",
    "skipped",
    "skipped_numbers",
    "stream_event",
    "stream_sequence",
    "unblock",
    "unblock_read",
]

logger = logging.getLogger(__name__)

STREAM_BLOCK_MS = 1000
"""How long a stream reader waits in one ``XREAD``; then it checks the session lives."""
UNBLOCK_AGAIN = 0.002
"""Seconds before a ``CLIENT UNBLOCK`` that found its reader not yet blocked is sent
again (while the read has not returned)."""
STREAM_READ_COUNT = 512
"""Entries one ``XREAD`` takes from a stream."""
DEFAULT_TIMEOUT = 5.0


def _text(data: bytes) -> str:
    return data.decode()


def _unpack(data: bytes) -> Any:
    import msgpack

    return msgpack.unpackb(data, raw=False)


class StreamCursor:
    """Where a reader of one session's stream is, and how what it reads becomes
    events: shared by the blocking source (:class:`StreamSource`) and the asyncio
    one (``AsyncRedisState.events``), with no I/O of its own (its steps ask for the
    reader's commands: :mod:`dspex_actors.redis.steps`)."""

    def __init__(
        self,
        session_id: str,
        incarnation: str,
        keys: tuple[str, ...],
        pattern: str | None,
        start: int,
    ) -> None:
        self.session_id = session_id
        self.pattern = pattern
        self.incarnation = incarnation
        self.keys = keys
        self.session_key = keys[0]
        self.events_key = keys[-1]
        self.cursor = start
        self.mark: bytes | None = None  # what the entry before the cursor was (resume)

    def read_command(self, block: bool) -> Command:
        """The next ``XREAD``, from the cursor (``block``: waiting a block period)."""
        waits: tuple[Any, ...] = ("BLOCK", STREAM_BLOCK_MS) if block else ()
        start = f"{max(self.cursor - 1, 0)}-0"
        return Command(
            ("XREAD", "COUNT", STREAM_READ_COUNT, *waits, "STREAMS", self.events_key, start)
        )

    def resumed(self) -> Steps[list[Event]]:
        """After (re)connecting: ``overflow`` if the stream lost what was read (a
        failover) and the cursor where reading goes on (:func:`history`)."""
        missed = self.cursor - 1
        verdict, self.cursor, self.mark = yield from history(
            self.keys, self.incarnation, self.cursor, self.mark
        )
        if verdict == "lost":
            return [Event(self.session_id, missed, "overflow")]
        return []

    def quiet(self, finishing: bool) -> Steps[list[Event]]:
        """A read that waited its whole block period for nothing (or found nothing
        more when ``finishing``): ``closed`` once the incarnation is gone."""
        if finishing:
            return [Event(self.session_id, self.cursor - 1, "closed")]
        held = yield Command(("HGET", self.session_key, "incarnation"))
        if held == self.incarnation.encode():
            return []
        return [Event(self.session_id, self.cursor - 1, "closed")]

    def took(self, entries: Any) -> Steps[list[Event]]:
        """The events of what one read took, from the cursor on (those whose names
        match the pattern, each decoded once)."""
        events: list[Event] = []
        first = stream_sequence(entries[0][0])
        if first > self.cursor:
            missed = self.cursor - 1
            events.append(Event(self.session_id, missed, "overflow"))
            self.mark = None
            if not (yield from skipped(self.events_key, self.cursor)):
                # Trimmed past the cursor. The present is taken first: a write made
                # after the subscriber got its overflow event is always delivered.
                self.cursor = yield from present(self.events_key, self.cursor)
                return events
            self.cursor = first  # numbers skipped after a failover: told, then read on
        for entry_id, raw in entries:
            sequence = stream_sequence(entry_id)
            fields = dict(zip(raw[::2], raw[1::2], strict=True))
            if fields[b"k"] == b"closed":
                events.append(Event(self.session_id, sequence - 1, "closed"))
                break
            if name_matches(_text(fields[b"n"]), self.pattern):
                events.append(stream_event(self.session_id, sequence, fields))
            self.cursor = sequence + 1
            self.mark = entry_mark(fields)
        return events


class StreamSource:
    """A session's Redis Stream read from a cursor: a RedisState subscription's
    source (:class:`~dspex_actors.delivery.Source`).

    It reads with ``XREAD BLOCK`` on a connection of its own, from its cursor, so a
    read after a connection failure resumes where it was; past the stream's history
    it gives ``overflow`` and goes on from the present. It gives ``closed`` at the
    stream's closed entry, or once the session's incarnation is gone (checked each
    time a read waited a whole block period for nothing). What it reads becomes
    events by its :class:`StreamCursor`.
    """

    def __init__(
        self,
        connections: Connections,
        session_id: str,
        incarnation: str,
        keys: tuple[str, ...],
        pattern: str | None,
        start: int,
    ) -> None:
        self.session_id = session_id
        self._stream = StreamCursor(session_id, incarnation, keys, pattern, start)
        self._finishing = threading.Event()
        self._stopped = False
        self._reading = False  # an XREAD may be blocked now (wake() must unblock it)
        self._lock = threading.Lock()
        self._read_over = threading.Condition(self._lock)  # notified when an XREAD returns
        self._reader: AbstractConnection | None = None
        self._reader_id: int | None = None
        self._node: NodeConnections | None = None  # the reader's (CLIENT UNBLOCK goes there)
        self._connections = share_connections(connections)  # released by close()

    def read(self, timeout: float) -> list[Event]:
        errors = self._connections.errors
        stream = self._stream
        try:
            reader = self._reader
            if reader is None:
                reader = self._connect()
                gap = drive(self._connections, stream.resumed(), reader)
                if gap:
                    return gap
            with self._lock:  # a wake() before the read is known: no blocking then
                if self._stopped:
                    return []
                self._reading = True
            finishing = self._finishing.is_set()
            command = stream.read_command(block=not finishing)
            reader.send_command(*command.args)
            reply = reader.read_response()
            with self._lock:
                self._reading = False
                self._read_over.notify_all()
            if not reply:
                if self._stopped:
                    return []
                return drive(self._connections, stream.quiet(finishing), reader)
            return drive(self._connections, stream.took(reply[0][1]), reader)
        except (errors.ConnectionError, errors.TimeoutError, OSError, Unanswered) as exc:
            self._disconnect()
            self._connections.rerouted()
            raise Interrupted(f"session {self.session_id}: stream interrupted: {exc}") from exc
        except errors.ResponseError as exc:  # a failover's UNBLOCKED, a cluster's MOVED
            self._disconnect()
            self._connections.rerouted()
            raise Interrupted(f"session {self.session_id}: stream refused: {exc}") from exc

    def _connect(self) -> AbstractConnection:
        reader, self._node = connect_reader(self._connections, self._stream.events_key, None)
        self._reader = reader
        reader.send_command("CLIENT", "ID")
        self._reader_id = int(reader.read_response())
        return reader

    def _disconnect(self) -> None:
        reader, self._reader, self._reader_id = self._reader, None, None
        if reader is not None:
            reader.disconnect()

    def ready(self) -> None:
        """The cursor was fixed when the source was made: nothing to wait for."""

    @property
    def position(self) -> int:
        return self._stream.cursor

    def finish(self) -> None:
        """Give what the stream holds now, then ``closed`` (a handle detaching, or an
        owner that could not close the session)."""
        self._finishing.set()
        self._unblock()

    def wake(self) -> None:
        with self._lock:
            self._stopped = True
        self._unblock()

    def _unblock(self) -> None:
        """Make an XREAD that blocks now return (one not begun yet sees the flags)."""
        unblock_read(self._node, self._reader_id, lambda: self._reading, self._read_over)

    def close(self) -> None:
        self._disconnect()
        release_connections(self._connections)


_KINDS: dict[bytes, EventKind] = {
    b"registered": "registered",
    b"updated": "updated",
    b"deleted": "deleted",
}


def connect_reader(
    connections: Connections, key: str, name: str | None
) -> tuple[AbstractConnection, NodeConnections]:
    """A new connection, connected, to the node holding ``key`` (for a blocking
    read: its socket waits a block period longer than a call's), and that node;
    :class:`Unanswered` or redis-py's error when it cannot be made."""
    node = connections.node(key)
    options: dict[str, Any] = {
        "socket_timeout": STREAM_BLOCK_MS / 1000
        + node.connection_kwargs.get("socket_timeout", DEFAULT_TIMEOUT)
    }
    if name is not None:
        options["client_name"] = name
    reader = node.new(**options)
    try:
        reader.connect()
    except BaseException:
        reader.disconnect()
        raise
    return reader, node


def unblock_read(
    node: NodeConnections | None,
    reader_id: int | None,
    reading: Callable[[], bool],
    read_over: threading.Condition,
) -> None:
    """Make connection ``reader_id``'s read return now, if ``reading()`` (checked under
    ``read_over``, which is notified when the read returns).

    The XREAD may still be on its way to Redis when ``CLIENT UNBLOCK`` arrives on the
    other connection, which then unblocks nothing: it is asked again until the read
    returned (within one block period, after which the read returns anyway)."""
    deadline = time.monotonic() + STREAM_BLOCK_MS / 1000
    while True:
        with read_over:
            if not reading() or time.monotonic() >= deadline:
                return
        if unblock(node, reader_id) is not False:
            return  # unblocked, or Redis cannot be asked: the read times out by itself
        with read_over:
            read_over.wait_for(lambda: not reading(), UNBLOCK_AGAIN)


def unblock(node: NodeConnections | None, reader_id: int | None) -> bool | None:
    """Make connection ``reader_id``'s blocked ``XREAD`` return now (``CLIENT UNBLOCK``
    on another connection to its ``node``): whether it was blocked; None when Redis
    could not be asked (left alone: the read times out by itself)."""
    if reader_id is None or node is None:
        return None
    import redis.exceptions as errors

    try:
        connection = node.take()
    except (errors.ConnectionError, errors.TimeoutError, OSError):
        return None
    try:
        connection.send_command("CLIENT", "UNBLOCK", reader_id)
        unblocked = connection.read_response()
    except (errors.ConnectionError, errors.TimeoutError, OSError):
        connection.disconnect()
        return None
    except errors.ResponseError:
        unblocked = None
    node.give(connection)
    return None if unblocked is None else bool(unblocked)


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


def skipped(events_key: str, cursor: int) -> Steps[bool]:
    """Whether a stream whose next entry lies past ``cursor`` skipped numbers there
    (:data:`~dspex_actors.redis.scripts.RESUME` moved the numbering on after a
    failover lost events: entries before the cursor remain) rather than being
    trimmed past it."""
    oldest = yield Command(("XRANGE", events_key, "-", "+", "COUNT", 1))
    return bool(oldest) and stream_sequence(oldest[0][0]) < cursor


def skipped_numbers(reader: AbstractConnection, events_key: str, cursor: int) -> bool:
    """:func:`skipped`, asked on ``reader`` now."""
    return drive(None, skipped(events_key, cursor), reader)


def present(events_key: str, cursor: int) -> Steps[int]:
    """Where a reader trimmed past ``cursor`` goes on: past what the stream holds (at
    its closed entry, if it ends with one, so that is delivered)."""
    last = yield Command(("XREVRANGE", events_key, "+", "-", "COUNT", 1))
    if not last:
        return cursor
    entry_id, raw = last[0]
    sequence = stream_sequence(entry_id)
    closed = dict(zip(raw[::2], raw[1::2], strict=True)).get(b"k") == b"closed"
    return sequence if closed else sequence + 1


def present_cursor(reader: AbstractConnection, events_key: str, cursor: int) -> int:
    """:func:`present`, asked on ``reader`` now."""
    return drive(None, present(events_key, cursor), reader)


def entry_mark(fields: dict[bytes, bytes]) -> bytes:
    """What tells one stream entry from another given the same sequence (after a
    failover): its kind, variable id, version and timestamp, as the RESUME script
    joins them."""
    return b"|".join(fields.get(key, b"") for key in (b"k", b"i", b"r", b"t"))


def history(
    keys: tuple[str, ...],
    incarnation: str,
    cursor: int,
    mark: bytes | None,
    *,
    feeds_log: bool = False,
) -> Steps[tuple[str, int, bytes | None]]:
    """Whether a stream read up to ``cursor`` (``mark``: its entry before the cursor,
    when known) still holds what was read, asked after each (re)connection: a
    failover can lose the last events, and give their sequences to new ones.

    ``same`` (go on), ``lost`` (tell ``overflow``, then go on from the cursor
    given; the session numbers no new event below it), or ``gone`` (the session:
    reading tells ``closed``); with the cursor and mark to go on with. A reader
    that ``feeds_log`` (a server's follower) is given a cursor past its own, so
    that its log tells every reader of it ``overflow`` too (the session's
    numbering skips one for it when there is no newer event). One attempt:
    ``Unanswered`` or redis-py's error when Redis cannot say.
    """
    sent = b"" if mark is None else mark
    reply = yield Attempt(
        scripts.RESUME, keys, [incarnation, cursor, sent, "1" if feeds_log else "0"]
    )
    verdict = _text(reply[0])
    if verdict == "same":
        return verdict, cursor, reply[1] or None
    if verdict == "lost":
        return verdict, int(reply[1]), None
    return verdict, cursor, mark


def check_history(
    connections: Connections,
    keys: tuple[str, ...],
    incarnation: str,
    cursor: int,
    mark: bytes | None,
    *,
    feeds_log: bool = False,
) -> tuple[str, int, bytes | None]:
    """:func:`history`, asked now."""
    return drive(connections, history(keys, incarnation, cursor, mark, feeds_log=feeds_log))


def stream_sequence(entry_id: bytes) -> int:
    """The sequence of a stream entry (its id is ``<sequence>-0``)."""
    return int(entry_id.split(b"-", 1)[0])
