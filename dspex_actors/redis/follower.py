"""One thread and one Redis connection following every session a server watches.

A server on the Redis store feeds each watched session's
:class:`~dspex_actors.streaming.EventLog` from that session's Redis Stream. A reader
per session would cost a thread and a connection each, so a server watching a
thousand sessions would hold a thousand of both. :class:`StreamFollower` follows
them all with one ``XREAD BLOCK`` over every followed stream, on one connection, from
one thread, which runs only while something is followed:

- each followed stream has its own cursor; a stream followed twice (a watcher
  resuming from further back) is read once, from the earlier cursor;
- an entry past a cursor means Redis trimmed what was not read yet: that follower
  gets ``overflow`` and goes on from the present (as :class:`~dspex_actors.
  redis.events.StreamSource` does);
- a ``closed`` entry, or a session whose incarnation is gone (expired, or closed
  and reopened), is told as ``closed``, and that follower is done; the incarnation
  of every followed session is checked once per block period, idle or not;
- a lost connection is reopened by the one backoff policy of
  :mod:`dspex_actors.delivery`, whose :class:`~dspex_actors.delivery.Delivery` runs
  the reader, and each stream read on from its cursor.

Delivery runs in the reader's thread and must not block (an EventLog append).
:meth:`StreamFollower.unfollow` returns once no event reaches that follower.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dspex_actors.delivery import Delivery, Ended, Interrupted
from dspex_actors.redis.connections import acquire_connections, release_connections
from dspex_actors.redis.events import (
    STREAM_BLOCK_MS,
    STREAM_READ_COUNT,
    present_cursor,
    stream_event,
    stream_sequence,
    unblock_read,
)
from dspex_actors.redis.scripts import session_keys
from dspex_actors.streaming import Event

if TYPE_CHECKING:
    from redis.connection import AbstractConnection

__all__ = ["READER_NAME", "Followed", "StreamFollower"]

logger = logging.getLogger(__name__)

READER_NAME = "dspex-redis-events"
"""The reader's thread name and its connection's Redis client name (``CLIENT LIST``)."""


@dataclass(eq=False)
class Followed:
    """One incarnation's stream, delivered from ``cursor`` (the next sequence) on."""

    session_id: str
    incarnation: str
    cursor: int
    deliver: Callable[[Event, int], None]  # an event, and the cursor after it
    active: bool = True

    def __post_init__(self) -> None:
        keys = session_keys(self.session_id, self.incarnation)
        self.session_key, self.events_key = keys[0], keys[-1]


class StreamFollower:
    """Follows many sessions' streams on one connection (see the module docstring)."""

    def __init__(self, url: str, timeout: float) -> None:
        self._timeout = timeout
        self._changed = threading.Condition()  # guards what is followed and the reader
        self._delivering = threading.Lock()  # held while one event is handed on
        self._followed: set[Followed] = set()
        self._reader: Delivery[_Item] | None = None
        self._woken = False
        self._closed = False
        self._connections = acquire_connections(url, timeout)

    @property
    def following(self) -> int:
        """How many streams are followed now."""
        with self._changed:
            return len(self._followed)

    def follow(
        self,
        session_id: str,
        incarnation: str,
        cursor: int,
        deliver: Callable[[Event, int], None],
    ) -> Followed:
        """Deliver that incarnation's events from ``cursor`` to ``deliver``, each with
        the cursor after it (after ``overflow``: where delivery goes on)."""
        followed = Followed(session_id, incarnation, cursor, deliver)
        with self._changed:
            if self._closed:
                raise RuntimeError("the stream follower is closed")
            self._followed.add(followed)
            self._woken = True
            reader = self._reader
            if reader is None:
                source = _Streams(self)
                reader = self._reader = Delivery(source, self._hand, name=READER_NAME)
        reader.source.wake()  # a blocked read returns, and the next one includes it
        return followed

    def unfollow(self, followed: Followed) -> None:
        """Stop delivering to ``followed``; returns once no event reaches it (and,
        when it was the last, once the reader's thread has ended)."""
        with self._changed:
            followed.active = False
            self._followed.discard(followed)
            reader = self._reader
        if reader is None or reader.is_current_thread():
            return
        with self._delivering:
            pass  # an event being handed to it is delivered; none follows
        self._wait_idle(reader)

    def close(self) -> None:
        """Stop following everything and end the reader; idempotent."""
        with self._changed:
            if self._closed:
                return
            self._closed = True
            for followed in self._followed:
                followed.active = False
            self._followed.clear()
            reader = self._reader
        if reader is not None and not reader.is_current_thread():
            reader.stop()
        release_connections(self._connections)

    def _wait_idle(self, reader: Delivery[_Item]) -> None:
        """Once nothing is followed, wait for the reader to end (unless something is
        followed again meanwhile: then it reads on)."""
        with self._changed:
            if self._followed:
                return
        reader.source.wake()
        with self._changed:
            self._changed.wait_for(lambda: self._reader is not reader or bool(self._followed))
            ended = self._reader is not reader
        if ended:
            reader.join(None)

    def _hand(self, item: _Item) -> bool:
        """Deliver one event with the cursor after it, unless its follower is gone; a
        callback's failure is logged and stays its own (the other sessions read on)."""
        followed, event, cursor = item
        with self._delivering:
            if not followed.active:
                return True
            if event.kind == "closed":
                with self._changed:
                    followed.active = False
                    self._followed.discard(followed)
            try:
                followed.deliver(event, cursor)
            except Exception:
                logger.exception("session %s: delivering %s failed", followed.session_id, event)
        return True


_Item = tuple[Followed, Event, int]
"""One event for one follower, with its cursor after it."""


class _Streams:
    """What the follower's reader reads: every followed stream, with one ``XREAD`` on
    one connection (a :class:`~dspex_actors.delivery.Source` of events for many)."""

    def __init__(self, follower: StreamFollower) -> None:
        self._follower = follower
        self._connection: AbstractConnection | None = None
        self._reader_id: int | None = None
        self._reading = False  # an XREAD may be blocked now (wake() must unblock it)
        self._checked = time.monotonic()

    def read(self, timeout: float) -> list[_Item]:
        follower = self._follower
        with follower._changed:
            if follower._closed or not follower._followed:
                follower._reader = None  # decided under the lock: a follow starts anew
                follower._changed.notify_all()
                raise Ended
            follower._woken = False
            streams: dict[str, list[Followed]] = {}
            for followed in follower._followed:
                streams.setdefault(followed.events_key, []).append(followed)
        errors = follower._connections.errors
        try:
            reader = self._connection or self._connect()
            keys = list(streams)
            starts = [f"{max(min(f.cursor for f in streams[k]) - 1, 0)}-0" for k in keys]
            with follower._changed:
                if follower._woken:
                    return []  # followed meanwhile: take it in before blocking
                self._reading = True
            try:
                reader.send_command(
                    "XREAD",
                    *("COUNT", STREAM_READ_COUNT, "BLOCK", STREAM_BLOCK_MS),
                    *("STREAMS", *keys, *starts),
                )
                reply = reader.read_response() or []
            finally:
                with follower._changed:
                    self._reading = False
                    follower._changed.notify_all()
            items: list[_Item] = []
            for key, entries in reply:
                for followed in streams[key.decode()]:
                    if followed.active:
                        items += self._items(reader, followed, entries)
            if time.monotonic() - self._checked >= STREAM_BLOCK_MS / 1000:
                items += self._gone(reader, [f for fs in streams.values() for f in fs])
                self._checked = time.monotonic()
            return items
        except (errors.ConnectionError, errors.TimeoutError, OSError) as exc:
            self._disconnect()
            raise Interrupted(f"Redis event streams interrupted: {exc}") from exc

    def _connect(self) -> AbstractConnection:
        connections = self._follower._connections
        connection = connections.new(
            socket_timeout=STREAM_BLOCK_MS / 1000
            + connections.connection_kwargs.get("socket_timeout", self._follower._timeout),
            client_name=READER_NAME,
        )
        self._connection = connection
        connection.connect()
        connection.send_command("CLIENT", "ID")
        self._reader_id = int(connection.read_response())
        return connection

    def _disconnect(self) -> None:
        connection, self._connection, self._reader_id = self._connection, None, None
        if connection is not None:
            connection.disconnect()

    def _items(self, reader: AbstractConnection, followed: Followed, entries: Any) -> list[_Item]:
        """``followed``'s events of the reader's batch, from its cursor on."""
        if stream_sequence(entries[0][0]) > followed.cursor:  # trimmed past the cursor
            # The present is taken first: a write made after the overflow was told
            # is always delivered.
            missed = followed.cursor - 1
            followed.cursor = present_cursor(reader, followed.events_key, followed.cursor)
            return [(followed, Event(followed.session_id, missed, "overflow"), followed.cursor)]
        items: list[_Item] = []
        for entry_id, raw in entries:
            sequence = stream_sequence(entry_id)
            if sequence < followed.cursor:
                continue  # read for a follower further back
            fields = dict(zip(raw[::2], raw[1::2], strict=True))
            if fields.get(b"k") == b"closed":
                items.append((followed, Event(followed.session_id, sequence - 1, "closed"), 0))
                return items
            try:
                event = stream_event(followed.session_id, sequence, fields)
            except Exception:  # not an entry this version writes: skipped, and said
                logger.exception(
                    "session %s: stream entry %s unreadable; its watchers get overflow",
                    followed.session_id,
                    entry_id,
                )
                event = Event(followed.session_id, followed.cursor - 1, "overflow")
            followed.cursor = sequence + 1
            items.append((followed, event, followed.cursor))
        return items

    def _gone(self, reader: AbstractConnection, followed: list[Followed]) -> list[_Item]:
        """``closed`` for each follower whose incarnation is no longer the session's
        (it expired, or was closed and opened again, without a closed entry read)."""
        active = [f for f in followed if f.active]
        if not active:
            return []
        reader.send_packed_command(
            reader.pack_commands([("HGET", f.session_key, "incarnation") for f in active])
        )
        return [
            (f, Event(f.session_id, f.cursor - 1, "closed"), 0)
            for f in active
            if reader.read_response() != f.incarnation.encode()
        ]

    def ready(self) -> None:
        """Each follower's cursor is fixed when it is followed."""

    @property
    def position(self) -> None:
        """None: it reads many sessions, each from a cursor of its own."""
        return None

    def wake(self) -> None:
        follower = self._follower
        unblock_read(
            follower._connections, self._reader_id, lambda: self._reading, follower._changed
        )

    def close(self) -> None:
        self._disconnect()
