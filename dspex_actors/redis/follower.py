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
  redis_state.RedisSubscription` does);
- a ``closed`` entry, or a session whose incarnation is gone (expired, or closed
  and reopened), is told as ``closed``, and that follower is done; the incarnation
  of every followed session is checked once per block period, idle or not;
- a lost connection is reopened with backoff, and each stream read on from its cursor.

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

from dspex_actors.redis.connections import acquire_connections, release_connections
from dspex_actors.redis.events import (
    STREAM_BLOCK_MS,
    STREAM_READ_COUNT,
    present_cursor,
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
"""The reader's thread name and its connection's Redis client name (``CLIENT LIST``)."""

_FIRST_PAUSE = 0.01
_MAX_PAUSE = 1.0
"""Reconnection backoff, doubling from the first pause up to this."""


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
        self._url, self._timeout = url, timeout
        self._lock = threading.Lock()
        self._delivering = threading.Lock()  # held while a batch is delivered
        self._followed: set[Followed] = set()
        self._thread: threading.Thread | None = None
        self._reader_id: int | None = None
        self._woken = False
        self._closed = False
        self._stopped = threading.Event()  # ends a backoff wait
        self._pause = _FIRST_PAUSE  # the reader's next backoff
        self._connections = acquire_connections(url, timeout)

    @property
    def following(self) -> int:
        """How many streams are followed now."""
        with self._lock:
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
        with self._lock:
            if self._closed:
                raise RuntimeError("the stream follower is closed")
            self._followed.add(followed)
            self._woken = True
            thread = self._thread
            if thread is None:
                thread = self._thread = threading.Thread(
                    target=self._run, name=READER_NAME, daemon=True
                )
                thread.start()
        self._wake()  # a blocked read returns, and the next one includes it
        return followed

    def unfollow(self, followed: Followed) -> None:
        """Stop delivering to ``followed``; returns once no event reaches it (and,
        when it was the last, once the reader's thread has ended)."""
        with self._lock:
            followed.active = False
            self._followed.discard(followed)
            thread = self._thread
        if thread is None or thread is threading.current_thread():
            return
        with self._delivering:
            pass  # a batch being delivered to it is over; the next skips it
        self._wait_idle(thread)

    def close(self) -> None:
        """Stop following everything and end the thread; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for followed in self._followed:
                followed.active = False
            self._followed.clear()
            thread = self._thread
        self._stopped.set()
        if thread is not None and thread is not threading.current_thread():
            self._wait_idle(thread)
        release_connections(self._connections)

    def _wait_idle(self, thread: threading.Thread) -> None:
        """Wake the reader until it has ended, unless something is followed again."""
        while thread.is_alive():
            with self._lock:
                if self._followed and not self._closed:
                    return  # followed again meanwhile: the reader goes on
                self._woken = True
            self._wake()
            thread.join(0.05)

    def _wake(self) -> None:
        unblock(self._connections, self._reader_id)

    # -- the reader's thread --------------------------------------------------------------

    def _run(self) -> None:
        self._pause = _FIRST_PAUSE
        errors = self._connections.errors
        while True:
            if self._idle():
                return
            reader = self._connections.new(
                socket_timeout=STREAM_BLOCK_MS / 1000
                + self._connections.connection_kwargs.get("socket_timeout", self._timeout),
                client_name=READER_NAME,
            )
            try:
                reader.connect()
                reader.send_command("CLIENT", "ID")
                self._reader_id = int(reader.read_response())
                self._read(reader)
                continue  # _read returns when nothing is followed: _idle decides
            except (errors.ConnectionError, errors.TimeoutError, OSError) as exc:
                logger.info("Redis event streams interrupted: %s", exc)
            except Exception:  # a surprise must not starve every watcher: retry
                logger.exception("following Redis event streams failed")
            finally:
                self._reader_id = None
                reader.disconnect()
            self._stopped.wait(self._pause)
            self._pause = min(self._pause * 2, _MAX_PAUSE)

    def _idle(self) -> bool:
        """Whether the thread ends now: nothing followed (or closed). Decided under
        the lock, so a ``follow`` either sees this thread gone or is read by it."""
        with self._lock:
            if self._followed and not self._closed:
                return False
            self._thread = None
            return True

    def _read(self, reader: AbstractConnection) -> None:
        """Read and deliver until nothing is followed (or the connection fails)."""
        checked = time.monotonic()
        while True:
            with self._lock:
                if self._closed or not self._followed:
                    return
                self._woken = False
                streams: dict[str, list[Followed]] = {}
                for followed in self._followed:
                    streams.setdefault(followed.events_key, []).append(followed)
            keys = list(streams)
            starts = [f"{max(min(f.cursor for f in streams[k]) - 1, 0)}-0" for k in keys]
            with self._lock:
                if self._woken:
                    continue  # followed meanwhile: take it in before blocking
            reader.send_command(
                "XREAD",
                *("COUNT", STREAM_READ_COUNT, "BLOCK", STREAM_BLOCK_MS),
                *("STREAMS", *keys, *starts),
            )
            reply = reader.read_response() or []
            self._pause = _FIRST_PAUSE  # a read went through: a later failure backs off afresh
            with self._delivering:
                for key, entries in reply:
                    for followed in streams[key.decode()]:
                        if followed.active:
                            self._deliver(reader, followed, entries)
                if time.monotonic() - checked >= STREAM_BLOCK_MS / 1000:
                    self._check_live(reader, [f for fs in streams.values() for f in fs])
                    checked = time.monotonic()

    def _deliver(self, reader: AbstractConnection, followed: Followed, entries: Any) -> None:
        """Hand ``followed`` the entries from its cursor on (the reader's batch)."""
        if stream_sequence(entries[0][0]) > followed.cursor:  # trimmed past the cursor
            # The present is taken first: a write made after the overflow was told
            # is always delivered.
            missed = followed.cursor - 1
            followed.cursor = present_cursor(reader, followed.events_key, followed.cursor)
            self._hand(followed, Event(followed.session_id, missed, "overflow"))
            return
        for entry_id, raw in entries:
            if not followed.active:
                return  # unfollowed by its own callback: nothing more reaches it
            sequence = stream_sequence(entry_id)
            if sequence < followed.cursor:
                continue  # read for a follower further back
            fields = dict(zip(raw[::2], raw[1::2], strict=True))
            if fields.get(b"k") == b"closed":
                self._end(followed, sequence - 1)
                return
            try:
                event = stream_event(followed.session_id, sequence, fields)
            except Exception:  # not an entry this version writes: skipped, and said
                logger.exception(
                    "session %s: stream entry %s unreadable; its watchers get overflow",
                    followed.session_id,
                    entry_id,
                )
                missed, followed.cursor = followed.cursor - 1, sequence + 1
                self._hand(followed, Event(followed.session_id, missed, "overflow"))
                continue
            followed.cursor = sequence + 1
            self._hand(followed, event)

    @staticmethod
    def _hand(followed: Followed, event: Event) -> None:
        """Deliver one event with the cursor after it; a callback's failure is logged
        and stays its own (the other sessions read on)."""
        try:
            followed.deliver(event, followed.cursor)
        except Exception:
            logger.exception("session %s: delivering %s failed", followed.session_id, event)

    def _check_live(self, reader: AbstractConnection, followed: list[Followed]) -> None:
        """Tell ``closed`` to each follower whose incarnation is no longer the session's
        (it expired, or was closed and opened again, without a closed entry read)."""
        active = [f for f in followed if f.active]
        if not active:
            return
        reader.send_packed_command(
            reader.pack_commands([("HGET", f.session_key, "incarnation") for f in active])
        )
        for f in active:
            if reader.read_response() != f.incarnation.encode():
                self._end(f, f.cursor - 1)

    def _end(self, followed: Followed, last: int) -> None:
        """``closed`` after ``last``: that follower is done."""
        with self._lock:
            followed.active = False
            self._followed.discard(followed)
        self._hand(followed, Event(followed.session_id, last, "closed"))
