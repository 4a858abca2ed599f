"""One thread following every session a server watches, with one blocking read per
Redis (per hash slot in a cluster).

A server on the Redis store feeds each watched session's
:class:`~dspex_actors.streaming.EventLog` from that session's Redis Stream. A reader
per session would cost a thread and a connection each, so a server watching a
thousand sessions would hold a thousand of both. :class:`StreamFollower` follows
them all from one thread, which runs only while something is followed:

- on one Redis (or a Sentinel's primary), one ``XREAD BLOCK`` over every followed
  stream, on one connection;
- in a Redis Cluster, one ``XREAD BLOCK`` per hash slot that holds followed streams,
  each on a connection to the node serving that slot, all waited on at once by the
  same thread. One read per node is not possible: a cluster refuses a command whose
  keys lie in different slots (``CROSSSLOT``), even on one node, and each session
  has a slot of its own. A node that fails costs only its slots' reads a retry;
  the slot map is read again (a failover moves slots to a promoted replica);
- each followed stream has its own cursor; a stream followed twice (a watcher
  resuming from further back) is read once, from the earlier cursor;
- an entry past a cursor means Redis trimmed what was not read yet: that follower
  gets ``overflow`` and goes on from the present (as :class:`~dspex_actors.
  redis.events.StreamSource` does);
- after each (re)connection, each stream's history is checked
  (:func:`~dspex_actors.redis.events.check_history`): a failover that lost events
  read already is an ``overflow``, never a silent gap;
- a ``closed`` entry, or a session whose incarnation is gone (expired, or closed
  and reopened), is told as ``closed``, and that follower is done; the incarnation
  of every followed session is checked once per block period, idle or not;
- a read whose connection fails is tried again after a pause of the one backoff
  policy (:class:`~dspex_actors.backoff.Backoff`), from its cursors; the others
  read on meanwhile.

Delivery runs in the reader's thread and must not block (an EventLog append).
:meth:`StreamFollower.unfollow` returns once no event reaches that follower.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dspex_actors.backoff import Backoff
from dspex_actors.delivery import Delivery, Ended
from dspex_actors.redis.connections import (
    Connections,
    NodeConnections,
    Unanswered,
    acquire_connections,
    release_connections,
)
from dspex_actors.redis.events import (
    STREAM_BLOCK_MS,
    STREAM_READ_COUNT,
    check_history,
    connect_reader,
    entry_mark,
    present_cursor,
    skipped_numbers,
    stream_event,
    stream_sequence,
    unblock,
)
from dspex_actors.redis.scripts import session_keys
from dspex_actors.streaming import Event

if TYPE_CHECKING:
    from redis.connection import AbstractConnection

__all__ = ["READER_NAME", "Followed", "StreamFollower"]

logger = logging.getLogger(__name__)

READER_NAME = "dspex-redis-events"
"""The reader's thread name and its connections' Redis client name (``CLIENT LIST``)."""
_UNBLOCK_AGAIN = 0.002
"""Seconds before a ``CLIENT UNBLOCK`` that found its read not yet blocked is sent again."""


@dataclass(eq=False)
class Followed:
    """One incarnation's stream, delivered from ``cursor`` (the next sequence) on."""

    session_id: str
    incarnation: str
    cursor: int
    deliver: Callable[[Event, int], None]  # an event, and the cursor after it
    active: bool = True
    checked: bool = False  # its history checked on the current connection
    mark: bytes | None = None  # the entry before the cursor (check_history)
    keys: tuple[str, ...] = field(init=False)
    session_key: str = field(init=False)
    events_key: str = field(init=False)

    def __post_init__(self) -> None:
        self.keys = session_keys(self.session_id, self.incarnation)
        self.session_key, self.events_key = self.keys[0], self.keys[-1]


class StreamFollower:
    """Follows many sessions' streams from one thread (see the module docstring)."""

    def __init__(self, url: str, timeout: float) -> None:
        self._timeout = timeout
        self._changed = threading.Condition()  # guards what is followed and the reader
        self._delivering = threading.Lock()  # held while one event is handed on
        self._followed: set[Followed] = set()
        self._reader: Delivery[_Item] | None = None
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
            reader = self._reader
            if reader is None:
                source = _Streams(self)
                reader = self._reader = Delivery(source, self._hand, name=READER_NAME)
        reader.source.wake()  # the reader takes it in (a blocked read is asked again)
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


@dataclass(eq=False)
class _Read:
    """The streams one ``XREAD`` may read together (all, or one slot's), its
    connection, and whether that read is waiting in Redis now."""

    group: Hashable
    node: NodeConnections
    connection: AbstractConnection
    reader_id: int
    followed: list[Followed] = field(default_factory=list)
    asked: dict[str, int] = field(default_factory=dict)  # the pending read's cursors
    asked_for: list[Followed] = field(default_factory=list)  # whom it was sent for
    pending: bool = False
    unblocking: float = 0.0  # when a CLIENT UNBLOCK was last sent (0: none wanted)
    checked: float = field(default_factory=time.monotonic)


class _Streams:
    """What the follower's reader reads: every followed stream, one ``XREAD`` per
    group of streams one command may read (a :class:`~dspex_actors.delivery.
    Source` of events for many), all awaited by one selector."""

    def __init__(self, follower: StreamFollower) -> None:
        self._follower = follower
        self._connections: Connections = follower._connections
        self._reads: dict[Hashable, _Read] = {}
        self._retry: dict[Hashable, tuple[float, Backoff]] = {}  # failed: when to try again
        errors = self._connections.errors
        # A read is tried again when its connection or node failed, or Redis refused
        # it for now (a failover's UNBLOCKED, a cluster's MOVED).
        self._retryable = (errors.RedisError, Unanswered, OSError)
        self._selector = selectors.DefaultSelector()
        self._woken, self._waker = socket.socketpair()
        self._woken.setblocking(False)
        self._selector.register(self._woken, selectors.EVENT_READ, None)

    def read(self, timeout: float) -> list[_Item]:
        follower = self._follower
        with follower._changed:
            if follower._closed or not follower._followed:
                follower._reader = None  # decided under the lock: a follow starts anew
                follower._changed.notify_all()
                raise Ended
            self._drain_wake()
            groups: dict[Hashable, list[Followed]] = {}
            for one in follower._followed:
                groups.setdefault(self._connections.group(one.events_key), []).append(one)
        items: list[_Item] = []
        for group in [g for g in self._reads if g not in groups]:
            self._drop(group)  # nothing followed there now
        for group in [g for g in self._retry if g not in groups]:
            del self._retry[group]
        now = time.monotonic()
        for group, members in groups.items():
            if group in self._retry and self._retry[group][0] > now:
                continue
            try:
                items += self._ask(group, members)
            except self._retryable as exc:
                self._failed(group, exc)
        if items:
            return items
        return self._wait(min(timeout, STREAM_BLOCK_MS / 1000))

    def _ask(self, group: Hashable, followed: list[Followed]) -> list[_Item]:
        """Make sure ``group``'s read is waiting in Redis for ``followed``: connect
        (checking each stream's history), or have a read that lacks a stream return
        and be asked again. Items when a check found a gap."""
        read = self._reads.get(group)
        items: list[_Item] = []
        if read is None:
            connection, node = connect_reader(
                self._connections, followed[0].events_key, READER_NAME
            )
            try:
                connection.send_command("CLIENT", "ID")
                reader_id = int(connection.read_response())
            except BaseException:
                connection.disconnect()
                raise
            read = self._reads[group] = _Read(group, node, connection, reader_id)
            for each in followed:
                each.checked = False
        read.followed = followed
        for each in followed:
            if not each.checked:
                items += self._check(each)
        if items:
            return items
        wanted: dict[str, int] = {}
        for each in followed:
            wanted[each.events_key] = min(each.cursor, wanted.get(each.events_key, each.cursor))
        if read.pending:
            # A stream followed since, or from further back: ask again with it.
            if any(cursor < read.asked.get(key, cursor + 1) for key, cursor in wanted.items()):
                self._unblock(read)
            return []
        self._send(read, wanted)
        return []

    def _check(self, followed: Followed) -> list[_Item]:
        """The stream's history after a (re)connection (see the module docstring)."""
        missed = followed.cursor - 1
        verdict, followed.cursor, followed.mark = check_history(
            self._connections,
            followed.keys,
            followed.incarnation,
            followed.cursor,
            followed.mark,
            feeds_log=True,
        )
        followed.checked = True
        if verdict == "lost":
            overflow = Event(followed.session_id, missed, "overflow")
            return [(followed, overflow, followed.cursor)]
        return []

    def _send(self, read: _Read, wanted: dict[str, int]) -> None:
        """Send ``read``'s ``XREAD`` for each stream from its cursor (``wanted``)."""
        keys = list(wanted)
        starts = [f"{max(wanted[key] - 1, 0)}-0" for key in keys]
        read.connection.send_command(
            "XREAD",
            *("COUNT", STREAM_READ_COUNT, "BLOCK", STREAM_BLOCK_MS),
            *("STREAMS", *keys, *starts),
        )
        read.asked, read.asked_for = wanted, list(read.followed)
        read.pending, read.unblocking = True, 0.0
        self._selector.register(_socket(read.connection), selectors.EVENT_READ, read)

    def _unblock(self, read: _Read) -> None:
        """Have a pending read return now (``CLIENT UNBLOCK`` from another connection),
        asked again shortly if Redis had not begun it yet."""
        now = time.monotonic()
        if read.unblocking and now - read.unblocking < _UNBLOCK_AGAIN:
            return
        read.unblocking = now
        unblock(read.node, read.reader_id)

    def _wait(self, timeout: float) -> list[_Item]:
        """Wait for any pending read (or a wake), up to ``timeout``; their items."""
        if any(r.unblocking for r in self._reads.values()):
            timeout = min(timeout, _UNBLOCK_AGAIN)
        if self._retry:
            soonest = min(at for at, _ in self._retry.values())
            timeout = max(0.0, min(timeout, soonest - time.monotonic()))
        items: list[_Item] = []
        for key, _ in self._selector.select(timeout):
            read: _Read | None = key.data
            if read is None or self._reads.get(read.group) is not read:
                continue  # woken: the next read() takes the change in
            try:
                items += self._answer(read)
                self._retry.pop(read.group, None)
            except self._retryable as exc:
                self._failed(read.group, exc)
        return items

    def _answer(self, read: _Read) -> list[_Item]:
        """Read one pending read's reply: its followers' events, and ``closed`` for
        any whose session is gone (checked once per block period)."""
        self._selector.unregister(_socket(read.connection))
        read.pending, read.unblocking = False, 0.0
        reply = read.connection.read_response() or []
        items: list[_Item] = []
        for key, entries in reply:
            # Only those it was sent for: one followed since, from further back,
            # is read by the next one, from its own cursor.
            for followed in read.asked_for:
                if followed.active and followed.events_key == key.decode():
                    items += self._items(read.connection, followed, entries)
        if time.monotonic() - read.checked >= STREAM_BLOCK_MS / 1000:
            items += self._gone(read.connection, read.followed)
            read.checked = time.monotonic()
        return items

    def _failed(self, group: Hashable, exc: BaseException) -> None:
        """A group's connection failed: dropped, the slot map read again, and tried
        again after the backoff's pause."""
        self._drop(group)
        self._connections.rerouted()
        _, backoff = self._retry.get(group, (0.0, Backoff()))
        pause = backoff.next()
        self._retry[group] = (time.monotonic() + pause, backoff)
        logger.info("%s: reading again in %.2fs after %s", READER_NAME, pause, exc)

    def _drop(self, group: Hashable) -> None:
        read = self._reads.pop(group, None)
        if read is None:
            return
        if read.pending:
            self._selector.unregister(_socket(read.connection))
        read.connection.disconnect()  # a read blocked in Redis ends with its client

    def _items(self, reader: AbstractConnection, followed: Followed, entries: Any) -> list[_Item]:
        """``followed``'s events of the reader's batch, from its cursor on."""
        items: list[_Item] = []
        first = stream_sequence(entries[0][0])
        if first > followed.cursor:
            missed = Event(followed.session_id, followed.cursor - 1, "overflow")
            followed.mark = None
            if not skipped_numbers(reader, followed.events_key, followed.cursor):
                # Trimmed past the cursor. The present is taken first: a write made
                # after the overflow was told is always delivered.
                followed.cursor = present_cursor(reader, followed.events_key, followed.cursor)
                return [(followed, missed, followed.cursor)]
            followed.cursor = first  # numbers skipped after a failover: told, then read on
            items.append((followed, missed, first))
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
            followed.mark = entry_mark(fields)
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

    def _drain_wake(self) -> None:
        try:
            while self._woken.recv(4096):
                pass
        except BlockingIOError:
            pass

    def ready(self) -> None:
        """Each follower's cursor is fixed when it is followed."""

    @property
    def position(self) -> None:
        """None: it reads many sessions, each from a cursor of its own."""
        return None

    def wake(self) -> None:
        """Make the reader's wait return now (it then takes in what changed)."""
        with contextlib.suppress(OSError):  # a wake is pending, or the reader has closed
            self._waker.send(b"\0")

    def close(self) -> None:
        for group in list(self._reads):
            self._drop(group)
        self._selector.close()
        self._woken.close()
        self._waker.close()


def _socket(connection: AbstractConnection) -> socket.socket:
    """A connected connection's socket: redis-py keeps it private (``_sock``), and
    waiting on many reads at once needs it."""
    sock: socket.socket | None = getattr(connection, "_sock", None)
    if sock is None:
        raise OSError("the connection is closed")
    return sock
