"""The in-memory engine of a session: its table and the actor that writes it.

:class:`ActorSession` is the bottom layer the two in-memory front ends share:
LocalState (a handle in this process) and the memory store (sessions behind a
SessionStore server) each hold one per session. It starts the session's actor
(:mod:`dspex_actors.actor`), asks it, hands it deliveries, starts a fresh one on the
same table after a crash (the variables live in the table, not in the actor), and
closes or retires it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any

import pykka

from dspex_actors.actor import SEALED, ExitHook, SessionActor
from dspex_actors.errors import SessionClosed, StateError
from dspex_actors.limits import DEFAULT_LIMITS, Limits
from dspex_actors.messages import Close, Control, Deliver, Operation, Retire
from dspex_actors.session import MISSED, SessionTable
from dspex_actors.streaming import DEFAULT_HISTORY, fulfil

__all__ = ["DEFAULT_CALL_TIMEOUT", "ActorSession", "ask_actor"]

logger = logging.getLogger(__name__)

DEFAULT_CALL_TIMEOUT = 30.0
"""Seconds a call waits for the session actor before giving up (it never hangs)."""


def ask_actor(ref: pykka.ActorRef[Any], message: object, timeout: float, what: str) -> Any:
    """Ask an actor; the one place pykka's errors become dspex_actors errors.

    A ``StateError`` the actor answers with is raised here, in the caller's thread.
    A dead actor never handled the message: ``SessionClosed`` (not applied).
    """
    try:
        result = ref.ask(message, timeout=timeout)
    except pykka.ActorDeadError:
        raise SessionClosed(f"{what}: its actor is not running") from None
    except pykka.Timeout as exc:
        raise StateError(
            f"{what}: the actor did not answer {type(message).__name__} within {timeout}s"
        ) from exc
    if isinstance(result, StateError):
        raise result
    return result


class ActorSession:
    """The in-memory engine of one session: its table and the actor that writes it.

    It starts the actor, asks it, hands it deliveries, starts a fresh one on the same
    table after a crash, and closes or retires it. What a caller waits for, and what
    a sealed write does, is the front end's business (LocalState waits for the
    migration; the memory store answers the client).
    """

    __slots__ = ("_crashed", "_on_exit", "_ref", "call_timeout", "history", "limits", "table")

    def __init__(
        self,
        table: SessionTable,
        *,
        on_exit: ExitHook | None = None,
        limits: Limits = DEFAULT_LIMITS,
        history: int = DEFAULT_HISTORY,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
    ) -> None:
        self.table = table
        self.limits = limits
        self.history = history
        self.call_timeout = call_timeout
        self._on_exit = on_exit
        self._crashed = threading.Event()
        self._ref: pykka.ActorRef[SessionActor] = SessionActor.start(
            table, on_exit, self._crashed, limits, history
        )

    @property
    def session_id(self) -> str:
        return self.table.session_id

    @property
    def ref(self) -> pykka.ActorRef[SessionActor]:
        """The session actor (for supervisors and tests that kill it on purpose)."""
        return self._ref

    @property
    def alive(self) -> bool:
        """Whether the actor serves calls: it runs, did not crash, the table is open."""
        return not self.table.closed and self._ref.is_alive() and not self._crashed.is_set()

    def ask(self, message: Operation[Any] | Control[Any]) -> Any:
        """The actor's answer to ``message`` (:data:`SEALED` included); its
        ``StateError`` raised."""
        return ask_actor(self._ref, message, self.call_timeout, f"session {self.session_id!r}")

    def run(self, operation: Operation[Any]) -> Any:
        """One operation: a read from the table when no write overlaps it, else (and
        every write) by the actor. For tools and tests; front ends run their own."""
        if not operation.write:
            answer = self.table.read(operation)  # type: ignore[arg-type]  # reads only
            if answer is not MISSED:
                return answer
        result = self.ask(operation)
        if result is SEALED:
            raise StateError(f"session {self.session_id!r} is sealed; not applied")
        return result

    def tell(self, delivery: Deliver[Any]) -> None:
        """Hand the actor a delivery (``pykka.ActorDeadError`` if it is not running)."""
        self._ref.tell(delivery)

    def deliver(
        self, operation: Operation[Any] | Control[Any], loop: asyncio.AbstractEventLoop
    ) -> tuple[asyncio.Future[Any], list[bool]]:
        """Hand the actor ``operation`` for a caller on ``loop`` that must not block:
        the actor's answer (a ``StateError`` included, not raised) becomes the
        returned future's result, set on the loop; the list is the claim token of
        :class:`~dspex_actors.messages.Deliver` (pop it to take the call back before
        the actor runs it). ``pykka.ActorDeadError`` if the actor is not running."""
        answer: asyncio.Future[Any] = loop.create_future()

        def reply(result: Any) -> None:  # in the actor's thread
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits now
                loop.call_soon_threadsafe(fulfil, answer, result)

        claim = [True]
        self.tell(Deliver(operation, reply, claim))  # type: ignore[arg-type]
        return answer, claim

    def restart(self) -> None:
        """Start a fresh actor on the same table after the old one died (a no-op
        while it runs); the variables survive: they live in the table, not in the
        dead actor. ``SessionClosed`` for a closed session."""
        if self.table.closed:
            raise SessionClosed(f"session {self.session_id!r} is closed")
        if self.alive:
            return
        try:  # a crashed actor may still be refusing what was queued behind
            self._ref.stop(block=True, timeout=self.call_timeout)
        except pykka.Timeout:
            logger.error("session %s: the crashed actor did not stop", self.session_id)
        self._crashed = threading.Event()
        self._ref = SessionActor.start(
            self.table, self._on_exit, self._crashed, self.limits, self.history
        )

    def close(self) -> None:
        """Close the table after every write queued before it, then stop the actor.

        A dead actor's table is closed by this call (nothing else writes it); a stop
        that outlasts the call timeout is logged, never raised."""
        try:
            self.ask(Close())
        except SessionClosed:
            pass  # already dead (crashed or killed): this call marks the table
        finally:
            self.table.close()  # a no-op after Close
            self._stop()

    def retire(self) -> None:
        """The session moved on: the actor closes its table in its own turn (a dead
        actor's is closed here), then stops; failures are logged, never raised."""
        try:
            self.ask(Retire())
        except SessionClosed:
            self.table.close()
        except StateError as exc:
            logger.error("session %s: retiring its actor failed: %s", self.session_id, exc)
            self.table.close()
        self._stop()

    def _stop(self) -> None:
        try:
            self._ref.stop(block=True, timeout=self.call_timeout)
        except pykka.Timeout:
            logger.error("session %s: the actor did not stop in time", self.session_id)
