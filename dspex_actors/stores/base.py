"""What a SessionStore server keeps its sessions in: the Store contract.

The server (``bridge/``) only translates the wire; a :class:`Store` holds the
sessions and runs the typed operations of :mod:`dspex_actors.messages` on them.
Every method but ``read_now`` is a coroutine run on the server's event loop (a
store written before ``read_now`` may lack it: each read is then run); a store
must never block that loop on a session's work (the memory store hands writes to
session actors and is told their answers; a store on an engine awaits the engine).

Rules every store keeps, beyond the StateProvider contract's:

* **Exactly once.** A write carrying a ``request_id`` the session has seen within
  its dedupe window is answered with the first answer (value or error) and not
  applied again; a repeat that arrives while the first is still running waits for
  it.
* **Settling.** ``settle`` answers whether a write was applied; once it answers
  False, that request id can never apply (the refusal is remembered in place of an
  answer, for as long as answers are). A write sent longer ago than the store
  remembers is ``OutcomeUnknown``, never guessed.
* **Deadlines.** ``run`` is given the caller's deadline (monotonic seconds); a
  write whose deadline passes before it started is never applied, and the caller
  hears :class:`~dspex_actors.errors.BridgeUnavailable` (which always means "not
  applied").
* **Incarnations.** Each creation of a session id is a new incarnation (an opaque
  string); every call given an incarnation acts on that one only, so a stale
  handle can neither close, write nor read a later session that reuses the id.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Protocol, TypeVar

from dspex_actors.errors import SessionNotFound
from dspex_actors.limits import Limits
from dspex_actors.messages import ReadOperation, WriteOperation
from dspex_actors.records import Opened, SessionInfo
from dspex_actors.session import Missed
from dspex_actors.streaming import Event, Progress

__all__ = [
    "DEDUPE_WINDOW",
    "PENDING_TTL",
    "EventStream",
    "Opened",
    "SessionInfo",
    "Store",
    "Watching",
    "not_found",
]

_R = TypeVar("_R")

DEDUPE_WINDOW = 4096
"""Request ids a session remembers (the most recent; older ones are forgotten)."""

PENDING_TTL = 60.0
"""Seconds an uncommitted (pending) session lives without activity."""


class EventStream(Protocol):
    """A watcher's events; ``aclose`` ends the watch and releases what it holds,
    whether or not it was read. ``start`` is the sequence it starts at and
    ``incarnation`` the session's (what the Watch stream's first message says)."""

    start: int
    incarnation: str

    def __aiter__(self) -> AsyncIterator[Event | Progress]: ...

    async def __anext__(self) -> Event | Progress: ...

    async def aclose(self) -> None: ...


def not_found(session_id: str) -> SessionNotFound:
    """The error for a session id the store does not hold (every store's wording)."""
    return SessionNotFound(
        f"session {session_id!r} not found (never opened, closed or expired)",
        session_id=session_id,
    )


class Watching:
    """An :class:`EventStream` over an async generator of events."""

    def __init__(
        self, events: AsyncGenerator[Event | Progress, None], start: int, incarnation: str
    ) -> None:
        self.start = start
        self.incarnation = incarnation
        self._events = events

    def __aiter__(self) -> Watching:
        return self

    async def __anext__(self) -> Event | Progress:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        await self._events.aclose()


class Store(Protocol):
    """Sessions held for a SessionStore server (see the module docstring)."""

    kind: str
    """Its name in ``--store``: "memory", "sqlite", "redis"."""
    limits: Limits
    """What its sessions accept (and what its server announces)."""

    async def open(
        self,
        session_id: str | None,
        *,
        create: bool,
        metadata: dict[str, Any] | None,
        pending: bool = False,
        request_id: str | None = None,
    ) -> Opened:
        """Attach to ``session_id``, or create it (a fresh id when None) if ``create``.

        ``SessionNotFound`` for an unknown id without ``create``. With ``pending`` a
        created session is invisible to every other open until :meth:`commit` (a
        migration's copy), and expires after :data:`PENDING_TTL` if never committed;
        a pending open never attaches (``SessionClosed`` if the id is taken). An
        open repeating the ``request_id`` of the one that created the session is
        answered ``created`` again (its reply was lost).
        """
        ...

    async def commit(self, session_id: str, incarnation: str) -> None:
        """Make a pending session visible; idempotent. ``SessionNotFound`` if absent
        or another incarnation."""
        ...

    async def close(self, session_id: str, incarnation: str | None) -> None:
        """Close the session (only if it is that incarnation, when one is given).

        ``SessionNotFound`` if absent or another incarnation.
        """
        ...

    async def info(self, session_id: str, incarnation: str | None = None) -> SessionInfo:
        """Describe a session (counts as activity); with ``incarnation``, only that
        one (``SessionNotFound`` otherwise)."""
        ...

    async def heartbeat(self, session_id: str, incarnation: str | None = None) -> float:
        """Mark the session active; when it expires without activity (epoch s).
        With ``incarnation``, only that one (``SessionNotFound`` otherwise)."""
        ...

    async def run(
        self,
        session_id: str,
        operation: ReadOperation[_R] | WriteOperation[_R],
        *,
        request_id: str | None,
        deadline: float | None,
        incarnation: str | None = None,
    ) -> _R:
        """Run one operation on a session (counts as activity); raise its StateError.

        With ``incarnation``, only on that incarnation (``SessionNotFound`` otherwise).
        """
        ...

    def read_now(
        self, session_id: str, operation: ReadOperation[_R], incarnation: str | None = None
    ) -> _R | Missed:
        """``operation`` answered now, without suspending, from what the store holds
        in this process (counts as activity; raises as :meth:`run` would), or
        :data:`~dspex_actors.session.MISSED`: then it must be :meth:`run` (a store on
        an engine, a scan of a large session, a read that met a write in progress).
        The server answers a streamed read so in the turn it arrives in."""
        ...

    async def watch(
        self,
        session_id: str,
        patterns: list[str],
        start: int | None,
        incarnation: str | None = None,
        *,
        progress: bool = False,
    ) -> EventStream:
        """Start following a session (``SessionNotFound`` at once if absent, or if
        ``incarnation`` names another one): its change events whose names match any
        glob of ``patterns`` (all when empty), from sequence ``start`` (None: from
        now), as described in :mod:`dspex_actors.streaming`, with a
        :class:`~dspex_actors.streaming.Progress` whenever it caught up past skipped
        events if ``progress``; ends after a ``closed`` event. The caller closes it
        (``aclose``) when done."""
        ...

    async def settle(
        self, session_id: str, request_id: str, age: float, incarnation: str | None = None
    ) -> bool:
        """Whether the write with ``request_id``, first sent ``age`` seconds ago, was
        applied (waiting for it while it runs). False means not, and never: the
        refusal is remembered under the request id, so the write arriving late is
        refused. ``OutcomeUnknown`` when the store no longer remembers that far."""
        ...

    async def end_watches(self) -> None:
        """Tell every watcher the store is closing (each gets ``closed``)."""
        ...

    async def reap_expired(self) -> list[str]:
        """Close every session idle for its TTL; return their ids."""
        ...

    async def aclose(self) -> None:
        """Close every session and release the store (the server is stopping)."""
        ...
