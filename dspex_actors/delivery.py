"""Change delivery: one way events reach a subscriber, whatever they are read from.

A :class:`Source` reads a session's events from a cursor it keeps: a session's
in-process log (:class:`~dspex_actors.streaming.LogSource`), the bridge's Watch
stream, a Redis Stream, or a Context's current backend across a switch. A
:class:`Delivery` is one thread that reads a source and hands each item on, and
when a read fails it waits by the one :class:`~dspex_actors.backoff.Backoff` policy
and reads again (the
source resumes from its cursor, so nothing is lost or repeated). A
:class:`Subscription` is a delivery of events to a subscriber (a callable or a Pykka
actor), filtered by a glob over names: what every backend's ``subscribe`` returns.

Rules every subscription keeps, whatever its source: events come in sequence order,
never from a session's own turn, so a subscriber may call back into the session; a
subscriber that raises is logged and goes on receiving; one that falls behind gets
one ``overflow`` event and goes on from the present; a subscription ends after one
``closed`` event; and ``close()`` first delivers what the session published before
it, then returns once no event is being delivered, and none follows (called by the
subscriber itself, from the delivery thread, it stops at once).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any, Generic, Protocol, Self, TypeVar

from dspex_actors.backoff import Backoff
from dspex_actors.errors import StateError
from dspex_actors.records import check_pattern
from dspex_actors.streaming import (
    Event,
    Subscriber,
    check_subscriber,
    hand_over,
    meant_for,
)

__all__ = [
    "DRAIN_TIMEOUT",
    "READ_PERIOD",
    "Delivery",
    "Ended",
    "Interrupted",
    "QueueSource",
    "Source",
    "Subscription",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

READ_PERIOD = 1.0
"""Seconds one read may wait for something to deliver before it is asked again."""

DRAIN_TIMEOUT = 5.0
"""Seconds closing a subscription waits for the events published before it."""


class Interrupted(Exception):
    """A source could not read now (its connection broke, its server restarts);
    reading again, after a backoff, resumes from its cursor."""


class Ended(Exception):
    """A source has nothing more to give and nothing to say about it: its delivery
    ends quietly (a subscription's source says ``closed`` instead)."""


class Source(Protocol[T]):
    """What a delivery reads: items from a cursor the source keeps."""

    def read(self, timeout: float) -> list[T]:
        """The next items, waiting up to about ``timeout`` when there are none (an
        empty list then). :class:`Interrupted` for a failure worth another read,
        :class:`Ended` when nothing more will come."""
        ...

    def ready(self) -> None:
        """Return once the source reads from a fixed point of the session's sequence
        (a change made after this returns will be read); raise why it cannot."""
        ...

    def wake(self) -> None:
        """Make a read in progress (in the delivery's thread) return now."""
        ...

    def close(self) -> None:
        """Release what reading holds; called once, by the delivery's thread, last."""
        ...

    @property
    def position(self) -> int | None:
        """The sequence the next read starts from: every event before it was read
        (None where the source cannot tell, as a provider's own subscription)."""
        ...


class Delivery(Generic[T]):
    """One thread that reads a source and hands each item on, until stopped, until
    ``hand`` returns False, or until the source ends; :attr:`interruptions` counts
    the reads that failed and were tried again."""

    def __init__(
        self,
        source: Source[T],
        hand: Callable[[T], bool],
        *,
        name: str,
        on_end: Callable[[], None] | None = None,
    ) -> None:
        self.source = source
        self.interruptions = 0
        self._hand = hand
        self._on_end = on_end  # its thread has ended: nothing of it runs any more
        self._stopped = threading.Event()
        self._handed = threading.Condition()  # notified after each read's items are handed on
        # The source's position once the items before it were handed on: where it
        # starts, before any read (nothing before that is to be delivered).
        self._position: int | None = source.position
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def active(self) -> bool:
        return not self._stopped.is_set() and self._thread.is_alive()

    def _run(self) -> None:
        backoff = Backoff()
        try:
            while not self._stopped.is_set():
                try:
                    items = self.source.read(READ_PERIOD)
                except Interrupted as exc:
                    if self._stopped.is_set():
                        return
                    logger.info("%s: reading again after %s", self._thread.name, exc)
                    self.interruptions += 1
                    if self._stopped.wait(backoff.next()):
                        return
                    continue
                except Ended:
                    return
                backoff.reset()
                for item in items:
                    if self._stopped.is_set():
                        return
                    if not self._hand(item):
                        return
                with self._handed:
                    self._position = self.source.position
                    self._handed.notify_all()
        except Exception:
            logger.exception("%s: delivery failed", self._thread.name)
        finally:
            self._stopped.set()
            with self._handed:
                self._handed.notify_all()
            try:
                self.source.close()
            finally:
                if self._on_end is not None:
                    self._on_end()

    def stop(self) -> None:
        """Stop delivering; idempotent. Returns once no item is being handed on,
        unless called from the delivery's own thread (then none follows it)."""
        self._stopped.set()
        self.source.wake()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    @property
    def position(self) -> int | None:
        """The source's position once the items before it were handed on."""
        return self._position

    def reach(self, position: int, timeout: float) -> bool:
        """Wait until every item before ``position`` was handed on (within
        ``timeout`` seconds, and while the delivery runs); whether they were."""
        with self._handed:
            self._handed.wait_for(
                lambda: self._reached(position) or self._stopped.is_set(), timeout
            )
            return self._reached(position)

    def _reached(self, position: int) -> bool:
        return self._position is not None and self._position >= position

    def is_current_thread(self) -> bool:
        """Whether the caller runs in this delivery's own thread (in a callback)."""
        return threading.current_thread() is self._thread

    def join(self, timeout: float | None) -> bool:
        """Wait for the delivery to end by itself; whether it has."""
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        return not self._thread.is_alive()


class QueueSource:
    """A provider's own ``subscribe`` as a source (a backend class of your own that
    has no :meth:`~dspex_actors.methods.SessionMethods.events`): its events wait in
    a bounded queue, and a reader that falls :data:`LIMIT` behind gets ``overflow``,
    as from any source."""

    LIMIT = 10_000

    def __init__(self, provider: Any, pattern: str | None, start: int | None) -> None:
        self._provider = provider
        self._pending: deque[Event] = deque()
        self._given = 0  # the sequence of the last event read
        self._woken = False
        self._changed = threading.Condition()
        options = {} if start is None else {"start": start}
        self._inner = provider.subscribe(pattern, self._put, **options)

    def ready(self) -> None:
        """Its subscription was made when this source was: nothing to wait for."""

    def _put(self, event: Event) -> None:
        with self._changed:
            if len(self._pending) >= self.LIMIT:
                self._pending.clear()
                self._pending.append(Event(event.session_id, self._given, "overflow"))
            self._pending.append(event)
            self._changed.notify_all()

    def read(self, timeout: float) -> list[Event]:
        with self._changed:
            self._changed.wait_for(lambda: self._pending or self._woken, timeout)
            events = list(self._pending)
            self._pending.clear()
        if events:
            self._given = events[-1].sequence
        return events

    def wake(self) -> None:
        with self._changed:
            self._woken = True
            self._changed.notify_all()

    @property
    def position(self) -> None:
        """Unknown: the provider's subscription says nothing of what it skipped."""
        return None

    def close(self) -> None:
        try:
            self._provider.unsubscribe(self._inner)
        except Exception:  # its own; ending it must not stop ours from ending
            logger.exception("ending a provider's own subscription failed")


class Subscription:
    """Delivery of a session's events to one subscriber (see the module docstring).

    Use a backend's ``subscribe``; ``unsubscribe`` (or :meth:`close`, or the end of a
    ``with`` block) first delivers what the session published before it, then stops
    delivery before it returns. ``fence`` tells the session's next sequence now (what
    a drain waits for); without it (or a source that cannot tell its position)
    closing stops at once.
    """

    def __init__(
        self,
        source: Source[Event],
        session_id: str,
        pattern: str | None,
        subscriber: Subscriber,
        *,
        name: str,
        fence: Callable[[], int] | None = None,
        on_end: Callable[[], None] | None = None,
    ) -> None:
        check_subscriber(subscriber)
        self.pattern = check_pattern(pattern)
        self.subscriber = subscriber
        self.session_id = session_id
        self._fence = fence
        self._last: int | None = None
        self._lock = threading.Lock()
        self._said_closed = False
        self._unsubscribed = False  # its subscriber asked to stop: no closed then
        self._ending = threading.RLock()  # held while end() tells closed
        self._delivery = Delivery(source, self._hand, name=name, on_end=on_end)
        try:
            source.ready()  # (read by the delivery's thread, which now runs)
        except BaseException:
            self._delivery.stop()
            raise

    @property
    def source(self) -> Source[Event]:
        return self._delivery.source

    @property
    def position(self) -> int | None:
        """Past the last event handed to the subscriber or skipped by the pattern
        (None until the source can tell): what a drain waits for."""
        return self._delivery.position

    @property
    def last_sequence(self) -> int | None:
        """The sequence of the last event delivered, or skipped by the pattern (None
        before any)."""
        return self._last

    @property
    def active(self) -> bool:
        return self._delivery.active

    @property
    def reconnects(self) -> int:
        """How often reading was interrupted and resumed from the cursor."""
        return self._delivery.interruptions

    def _hand(self, event: Event) -> bool:
        kind = event.kind
        with self._lock:
            if self._said_closed:
                return False
            if kind == "closed":
                self._said_closed = True
        if meant_for(event, self.pattern):
            hand_over(self.subscriber, event)
        self._last = event.sequence
        return kind != "closed"

    def close(self, *, drain: bool = True, timeout: float = DRAIN_TIMEOUT) -> None:
        """Stop delivery; idempotent. First (with ``drain``) deliver every event the
        session published before this call, within ``timeout`` seconds (what is not
        delivered by then is dropped, and logged); called by the subscriber itself,
        it stops at once. No event, not even ``closed``, follows once this returns."""
        with self._ending:
            self._unsubscribed = True
        delivery = self._delivery
        if drain and delivery.active and not delivery.is_current_thread():
            self._drain(timeout)
        delivery.stop()

    def _drain(self, timeout: float) -> None:
        """Wait until the events before the session's next sequence were delivered."""
        if self._fence is None or self.source.position is None:
            return
        try:
            fence = self._fence()
        except StateError as exc:  # the session ended, or cannot be asked: stop now
            logger.info("subscription %r stops without its last events: %s", self, exc)
            return
        if not self._delivery.reach(fence, timeout) and self._delivery.active:
            logger.warning(
                "subscription %r: events before sequence %d were not all delivered "
                "within %ss; stopped without them",
                self,
                fence,
                timeout,
            )

    def end(self) -> None:
        """The session is going away for this subscriber: stop, and tell it ``closed``
        once (unless its source already did, or it unsubscribed)."""
        self._delivery.stop()
        with self._ending:
            with self._lock:
                said = self._said_closed or self._unsubscribed
                self._said_closed = True
            if not said:
                last = self._last if self._last is not None else 0
                hand_over(self.subscriber, Event(self.session_id, last, "closed"))

    def finish(self, timeout: float) -> None:
        """The session was closed: deliver what its source still gives, up to its
        ``closed`` (within ``timeout`` seconds), then end as :meth:`end` does."""
        finishing: Any = getattr(self.source, "finish", None)
        if finishing is not None:
            finishing()
        self._delivery.join(timeout)
        self.end()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "active" if self.active else "stopped"
        return f"<Subscription {self.pattern or '*'} of {self.session_id} ({state})>"
