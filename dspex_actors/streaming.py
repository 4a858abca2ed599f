"""Change events: what a session tells its subscribers, in order, bounded, resumable.

Every change a session actor publishes is also an :class:`Event` with the next
number of the session's sequence: one per variable registered, updated or deleted
(a batch or an import yields one per variable, appended together). The session's
:class:`EventLog` keeps the most recent events (``history`` of them) in order; it
is written in the actor's turn, together with the table, and read by anyone.

A reader reads the log from its own cursor, outside the actor's turn (so a
subscriber may call back into the session), and never holds a writer up: the log is
bounded, and a reader that falls behind its oldest event gets one ``overflow`` event
(carrying the last sequence it was given) and goes on from the present; it can
resynchronise from ``list_variables()``. Resuming from a sequence works the same
way, locally and over the bridge's ``Watch``. A log closes with the session: every
reader then gets one ``closed`` event.

In this process a reader is a :class:`LogSource`, delivered to a subscriber by
:mod:`dspex_actors.delivery` (the one delivery path every backend shares); on a
SessionStore server, a watcher is the coroutine :func:`follow`, which costs no thread
while it waits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterable
from typing import Any, Literal, NamedTuple

import pykka

from dspex_actors.limits import size_bound
from dspex_actors.records import name_matches

__all__ = [
    "DEFAULT_HISTORY",
    "DEFAULT_HISTORY_BYTES",
    "Event",
    "EventKind",
    "EventLog",
    "LogSource",
    "Progress",
    "Subscriber",
    "check_subscriber",
    "follow",
    "hand_over",
    "meant_for",
]

logger = logging.getLogger(__name__)

EventKind = Literal["registered", "updated", "deleted", "overflow", "closed"]

DEFAULT_HISTORY = 10_000
"""Events a session's log keeps for readers that fall behind or resume."""

DEFAULT_HISTORY_BYTES = 64 << 20
"""...and at most about this many bytes of their values: large values make the
kept history shorter, never the memory larger."""


class Event(NamedTuple):
    """One change to one variable (or, for ``overflow`` and ``closed``, to the stream).

    ``sequence`` is the session's own count of events; for ``overflow`` it is the
    last sequence the reader was given (it should resynchronise), for ``closed`` the
    last one the session wrote. ``value`` and ``metadata`` are shared by every
    subscriber of the event: treat them as read-only. A NamedTuple (immutable, built
    in C): an import of 10,000 variables makes 10,000 of them in the actor's turn.
    """

    session_id: str
    sequence: int
    kind: EventKind
    variable_id: str | None = None
    name: str | None = None
    value: Any = None
    version: int | None = None
    metadata: dict[str, Any] | None = None
    timestamp: float | None = None


Subscriber = Callable[[Event], Any] | pykka.ActorRef[Any]
"""A callable taking one event, or a Pykka actor told each event."""


class EventLog:
    """A session's recent events, appended in its actor's turn, read by anyone.

    ``next_sequence`` is the sequence the next event will get; ``first_sequence``
    the oldest one still kept. Readers wait on a condition (threads) or register a
    loop callback (the SessionStore's coroutines); both are woken on every append.
    """

    def __init__(
        self,
        session_id: str,
        next_sequence: int,
        history: int = DEFAULT_HISTORY,
        history_bytes: int = DEFAULT_HISTORY_BYTES,
    ):
        if history <= 0 or history_bytes <= 0:
            raise ValueError(f"history must be positive, got {history!r}, {history_bytes!r}")
        self.session_id = session_id
        self.history = history
        self.history_bytes = history_bytes
        self._events: deque[Event] = deque()
        self._sizes: deque[int] = deque()
        self._bytes = 0
        self._next = next_sequence
        self._closed = False
        self._changed = threading.Condition()
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    @property
    def next_sequence(self) -> int:
        return self._next

    @property
    def first_sequence(self) -> int:
        """The oldest sequence kept (``next_sequence`` when none is)."""
        with self._changed:
            return self._events[0].sequence if self._events else self._next

    @property
    def closed(self) -> bool:
        return self._closed

    def append(self, events: Iterable[Event]) -> None:
        """Add events (numbered by the caller from ``next_sequence`` on) and wake readers."""
        with self._changed:
            for event in events:
                size = size_bound(event.value) if event.value is not None else 0
                self._events.append(event)
                self._sizes.append(size)
                self._bytes += size
                self._next = event.sequence + 1
            while len(self._events) > self.history or (
                self._bytes > self.history_bytes and len(self._events) > 1
            ):
                self._events.popleft()
                self._bytes -= self._sizes.popleft()
            self._wake()

    def skip_to(self, sequence: int) -> None:
        """Continue the numbering from ``sequence`` (a migrated session keeps its count)."""
        with self._changed:
            self._next = max(self._next, sequence)
            self._wake()

    def restart_at(self, sequence: int) -> None:
        """Drop what is kept and continue from ``sequence``: the events between were
        lost to this log (its feed fell behind), so a reader behind gets ``overflow``."""
        with self._changed:
            self._events.clear()
            self._sizes.clear()
            self._bytes = 0
            self._next = max(self._next, sequence)
            self._wake()

    def close(self) -> None:
        """No more events: every reader gets ``closed`` after what it has not read."""
        with self._changed:
            self._closed = True
            self._wake()

    def wake_readers(self) -> None:
        """Wake every waiting reader without adding anything (a reader is stopping)."""
        with self._changed:
            self._changed.notify_all()

    def _wake(self) -> None:
        self._changed.notify_all()
        waiters, self._async_waiters = self._async_waiters, []
        for loop, future in waiters:
            with contextlib.suppress(RuntimeError):  # that loop closed: nobody waits
                loop.call_soon_threadsafe(fulfil, future)

    def read(self, cursor: int, limit: int = 1024) -> tuple[list[Event], int]:
        """Events from ``cursor`` on (at most ``limit``), and the cursor after them.

        Past the kept history: one ``overflow`` event (sequence ``cursor - 1``) and
        the present as the new cursor. Once closed and read to the end: one
        ``closed`` event and a cursor past it.
        """
        with self._changed:
            first = self._events[0].sequence if self._events else self._next
            if cursor < first:
                overflow = Event(self.session_id, cursor - 1, "overflow")
                return [overflow], self._next
            if cursor >= self._next:
                if self._closed:
                    return [Event(self.session_id, self._next - 1, "closed")], cursor + 1
                return [], cursor
            start = cursor - first
            stop = min(len(self._events), start + limit)
            events = [self._events[i] for i in range(start, stop)]
            return events, events[-1].sequence + 1

    def wait(
        self, cursor: int, timeout: float | None, stopped: Callable[[], bool] = lambda: False
    ) -> bool:
        """Block until there is something at ``cursor``, the log closed, or ``stopped()``
        (checked whenever :meth:`wake_readers` is called); False on timeout."""
        with self._changed:
            return self._changed.wait_for(
                lambda: cursor < self._next or self._closed or cursor < self._first() or stopped(),
                timeout,
            )

    def _first(self) -> int:
        return self._events[0].sequence if self._events else self._next

    async def wait_async(self, cursor: int) -> None:
        """Await something at ``cursor`` (or the close), costing no thread."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._changed:
            if cursor < self._next or self._closed:
                return
            self._async_waiters.append((loop, future))
        try:
            await future
        finally:  # a watcher that went away leaves no waiter behind
            with self._changed, contextlib.suppress(ValueError):
                self._async_waiters.remove((loop, future))


def fulfil(future: asyncio.Future[Any], value: Any = None) -> None:
    """Resolve ``future`` with ``value`` unless it is already done (a waiter that went
    away cancelled it); run on the future's own loop."""
    if not future.done():
        future.set_result(value)


class Progress(NamedTuple):
    """A watcher has been given every matching event up to ``sequence``: what a
    filtered watch says when it caught up past events its globs skipped, so its
    reader can tell it is not missing any (a Watch stream's ``KIND_PROGRESS``)."""

    sequence: int


async def follow(
    log: EventLog, cursor: int, globs: list[str | None], *, progress: bool = False
) -> AsyncGenerator[Event | Progress, None]:
    """A log's events from ``cursor`` on, matching ``globs`` (all when empty), until
    ``closed``: a SessionStore watcher, costing no thread while it waits. With
    ``progress``, a :class:`Progress` each time it caught up after skipping events
    (at most one per wait: a busy session costs one per wake-up, not per event)."""
    given = cursor - 1  # the last sequence given, or known to be skipped
    while True:
        events, cursor = log.read(cursor)
        if not events:
            if progress and cursor - 1 > given:
                given = cursor - 1
                yield Progress(given)
            await log.wait_async(cursor)
            continue
        for event in events:
            if event.kind in ("overflow", "closed") or _matches(event.name, globs):
                given = event.sequence
                yield event
            if event.kind == "closed":
                return


def _matches(name: str | None, globs: list[str | None]) -> bool:
    """Whether a variable name matches any glob (no globs: everything matches)."""
    return not globs or any(name_matches(name or "", glob) for glob in globs)


def hand_over(subscriber: Subscriber, event: Event) -> None:
    """Give ``event`` to a subscriber (call it, or tell the actor); a subscriber's
    failure is logged, never raised: delivery goes on."""
    try:
        if isinstance(subscriber, pykka.ActorRef):
            subscriber.tell(event)
        else:
            subscriber(event)
    except Exception:
        logger.exception(
            "subscriber of session %s failed on event %d; delivery goes on",
            event.session_id,
            event.sequence,
        )


def meant_for(event: Event, pattern: str | None) -> bool:
    """Whether a subscriber of the glob ``pattern`` gets ``event``: every ``overflow``
    and ``closed``, and the changes to the names it matches."""
    return event.kind in ("overflow", "closed") or name_matches(event.name or "", pattern)


def check_subscriber(subscriber: object) -> None:
    """``TypeError`` unless ``subscriber`` is a callable or a Pykka actor."""
    if not (callable(subscriber) or isinstance(subscriber, pykka.ActorRef)):
        raise TypeError(
            f"a subscriber is a callable or a pykka.ActorRef, got {type(subscriber).__name__}"
        )


class LogSource:
    """A session's in-process log read from a cursor: a local subscription's source
    (:class:`~dspex_actors.delivery.Source`). Past the kept history it gives one
    ``overflow`` and goes on from the present; once the log closed and was read to
    its end, one ``closed``."""

    __slots__ = ("_cursor", "_log", "_woken")

    def __init__(self, log: EventLog, start: int | None = None) -> None:
        self._log = log
        self._cursor = log.next_sequence if start is None else start
        self._woken = False

    def read(self, timeout: float) -> list[Event]:
        log = self._log
        events, cursor = log.read(self._cursor)
        if not events and not self._woken:
            # Woken at once by an append, the close, or wake().
            log.wait(self._cursor, timeout, stopped=lambda: self._woken)
            events, cursor = log.read(self._cursor)
        self._cursor = cursor
        return events

    def ready(self) -> None:
        """The cursor was fixed when the source was made: nothing to wait for."""

    @property
    def position(self) -> int:
        return self._cursor

    def wake(self) -> None:
        self._woken = True
        self._log.wake_readers()

    def close(self) -> None:
        """Nothing to release: the log belongs to the session."""
