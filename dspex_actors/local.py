"""LocalState: the in-process StateProvider, a handle on one session's actor.

Every public method is :class:`~dspex_actors.methods.SessionMethods`'; this class
only says how an operation runs here (:meth:`LocalState.run`): a read looks up the
session's published :class:`~dspex_actors.session.SessionTable` directly and falls
back to the actor only when it meets a write in progress; a write is one ask of the
actor (:class:`~dspex_actors.engine.ActorSession`, the engine the memory store uses
too), serialized and versioned there. ``get_variable`` answers from the table before
building a message at all, so it costs a few dict lookups, not a thread round trip.

LocalState implements the migration protocol
(:class:`~dspex_actors.provider.Migratable`): ``seal()`` takes the exact cut (the
actor answers writes from that turn on with ``SEALED``, not an error), ``unseal()``
undoes it, and ``retire(successor)`` closes the table and makes this handle run every
operation on the successor. So a caller that kept this handle, or a bound
``get_variable`` of it, keeps working against the live copy; a write that met the
seal waits for the migration's outcome and then lands exactly once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any, ClassVar, Self, TypeVar

import pykka

from dspex_actors.actor import SEALED, ExitHook, SessionActor
from dspex_actors.delivery import Source
from dspex_actors.engine import DEFAULT_CALL_TIMEOUT, ActorSession
from dspex_actors.errors import NotSupported, SessionClosed, StateError
from dspex_actors.exports import ExportColumns
from dspex_actors.limits import DEFAULT_LIMITS, Limits, check_session_id
from dspex_actors.messages import GetVariable, OpenEvents, Operation, Seal, Unseal
from dspex_actors.methods import SessionMethods, events_of, run_on
from dspex_actors.provider import Migratable, StateProvider
from dspex_actors.session import MISSED, SessionTable, new_session_id
from dspex_actors.streaming import DEFAULT_HISTORY, Event, LogSource
from dspex_actors.vartypes import plain_copy

__all__ = ["LocalState"]

logger = logging.getLogger(__name__)

R = TypeVar("R")


class LocalState(SessionMethods):
    """A session held by a SessionActor in this process."""

    __slots__ = ("_engine", "_lock", "_migration", "_successor", "_table", "session_id")
    kind: ClassVar[str] = "local"

    def __init__(self, engine: ActorSession) -> None:
        """Wrap a running engine; use :meth:`init`, which starts one."""
        self.session_id = engine.session_id
        self._engine = engine
        self._table = engine.table
        self._lock = threading.Lock()
        self._migration: threading.Event | None = None  # set while sealed
        self._successor: StateProvider | None = None

    @classmethod
    def init(
        cls,
        *,
        session_id: str | None = None,
        existing_state: Mapping[str, Any] | None = None,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        on_exit: ExitHook | None = None,
        limits: Limits = DEFAULT_LIMITS,
        event_history: int = DEFAULT_HISTORY,
        **backend_opts: Any,
    ) -> Self:
        """Start a session actor; ``on_exit`` hears when it stops unasked or crashes.

        ``limits`` are the ones every backend enforces (:mod:`dspex_actors.limits`);
        a session id breaking them is a ``ValidationError`` here as on the bridge.
        ``event_history`` is how many change events the session keeps for
        subscribers that fall behind or resume.
        """
        if backend_opts:
            raise TypeError(f"LocalState.init got unknown options: {', '.join(backend_opts)}")
        if session_id is not None:
            check_session_id(session_id, limits)
        engine = ActorSession(
            SessionTable(session_id or new_session_id()),
            on_exit=on_exit,
            limits=limits,
            history=event_history,
            call_timeout=call_timeout,
        )
        return cls(engine)._seeded(existing_state)

    # -- plumbing ------------------------------------------------------------------

    @property
    def actor_ref(self) -> pykka.ActorRef[SessionActor]:
        """The session actor (for supervisors and tests that kill it on purpose)."""
        return self._engine.ref

    @property
    def variable_count(self) -> int:
        """How many variables the session holds (read from its table, no round trip)."""
        successor = self._successor
        if successor is not None:
            return len(successor.list_variables())
        return len(self._table.by_id)

    @property
    def session_metadata(self) -> dict[str, Any]:
        """A copy of the session's own metadata (set by imports)."""
        successor = self._successor
        if successor is not None:
            return dict(successor.export_state()["metadata"])
        return dict(plain_copy(self._table.metadata))

    @property
    def alive(self) -> bool:
        """Whether calls are served: the actor runs (or the handle forwards)."""
        return self._successor is not None or self._engine.alive

    def restart(self) -> None:
        """Start a fresh actor on the same table after the old one died.

        The variables survive: they live in the table, not in the dead actor. A
        retired handle has nothing to restart (its session lives in the successor).
        """
        with self._lock:
            if self._successor is not None:
                return
            if self._migration is not None and not self._table.closed:
                raise SessionClosed(f"session {self.session_id!r} is being migrated")
            self._engine.restart()

    def run(self, operation: Operation[R]) -> R:
        """Run one operation: a read on the table when no write overlaps it, else by
        the actor; on the successor once the session moved."""
        successor = self._successor
        if successor is not None:
            return run_on(successor, operation)
        if not operation.write:
            answer = self._table.read(operation)  # type: ignore[arg-type]  # a read
            if answer is not MISSED:
                result: R = answer  # type: ignore[assignment]  # not MISSED: an R
                return result
        return self._ask(operation)

    def _ask(self, message: Operation[R]) -> R:
        """Run ``message`` on the actor, or on the successor once the session moved.

        A write that meets the seal waits for the migration's outcome (within the
        call timeout), then goes to the successor or back to the unsealed actor.
        """
        timeout = self._engine.call_timeout
        deadline = time.monotonic() + timeout
        unowned = 0
        while True:
            successor = self._successor
            if successor is not None:
                return run_on(successor, message)
            result: Any = self._engine.ask(message)
            if result is not SEALED:
                answer: R = result
                return answer
            migration = self._migration
            left = deadline - time.monotonic()
            if migration is None:
                # Unsealed meanwhile (try again), or sealed by a caller other than
                # this handle, whose outcome it cannot wait for.
                unowned += 1
                if unowned > 1:
                    raise StateError(
                        f"session {self.session_id!r} is sealed, not by this handle; "
                        f"{type(message).__name__} was not applied"
                    )
            elif left <= 0 or not migration.wait(left):
                raise StateError(
                    f"session {self.session_id!r}: a migration did not settle within "
                    f"{timeout}s; {type(message).__name__} was not applied"
                )

    # -- the one read answered before a message is built -----------------------------

    def get_variable(self, identifier: str) -> Any:
        """The variable's current value; ``VariableNotFound`` if absent.

        Answered from the table with the seqlock check inline (a message and a
        dispatch would triple the cost of this, the hottest call of all); a read
        that meets a write goes through :meth:`run`."""
        table = self._table
        seq = table.seq
        try:
            record = table.index.get(identifier)
        except TypeError:  # unhashable: no such variable
            record = None
        if seq & 1 or table.seq != seq:
            return self.run(GetVariable(identifier))
        if record is None:
            raise table.missing(identifier)
        thaw = record.thaw
        return record.value if thaw is None else thaw(record.value)

    # -- change events ---------------------------------------------------------------

    def events(self, pattern: str | None, start: int | None = None) -> Source[Event]:
        """The session's event log read from ``start`` (None: from now): it yields
        ``closed`` once the session closes. A retired handle's comes from the
        successor; a subscription made before the retirement ends with ``closed``."""
        successor = self._successor
        if successor is not None:
            return events_of(successor, pattern, start)
        return LogSource(self._engine.ask(OpenEvents()), start)

    # -- lifecycle -------------------------------------------------------------------

    @classmethod
    def requires_bridge(cls) -> bool:
        return False

    @classmethod
    def capabilities(cls) -> dict[str, bool]:
        return {
            "atomic_updates": True,
            "streaming": True,
            "persistence": False,
            "distribution": False,
        }

    # -- migration (the Migratable protocol) ------------------------------------------

    def seal(self) -> ExportColumns:
        """Refuse writes from this actor turn on and return the export's columns (the cut).

        Writes that meet the seal wait for :meth:`retire` (then go to the successor)
        or :meth:`unseal` (then go to this actor). A retired handle forwards.
        """
        successor = self._successor
        if successor is not None:
            return _migratable(successor).seal()
        with self._lock:
            if self._migration is not None:
                raise StateError(f"session {self.session_id!r} is already being migrated")
            self._migration = threading.Event()
        try:
            columns: ExportColumns = self._engine.ask(Seal())
        except BaseException:
            self._end_migration()
            raise
        return columns

    def unseal(self) -> None:
        """The migration failed: accept writes again."""
        successor = self._successor
        if successor is not None:
            _migratable(successor).unseal()
            return
        try:
            self._engine.ask(Unseal())
        finally:
            self._end_migration()

    def retire(self, successor: StateProvider) -> None:
        """The migration succeeded: close the table and forward everything to ``successor``.

        The actor closes its table in its own turn (a dead actor's handle closes
        it), then stops; a stop that outlasts the call timeout is logged, never
        raised: the switch has happened either way.
        """
        current = self._successor
        if current is not None:
            _migratable(current).retire(successor)
            return
        with self._lock:
            self._successor = successor  # before the table closes: readers forward
        try:
            self._engine.retire()
        finally:
            self._end_migration()

    def _end_migration(self) -> None:
        with self._lock:
            migration, self._migration = self._migration, None
        if migration is not None:
            migration.set()

    def cleanup(self) -> None:
        """Stop the session actor; idempotent. Later calls raise SessionClosed.

        A retired handle has nothing left to clean up: its session lives on in the
        successor, which its new owner cleans up.
        """
        with self._lock:
            if self._table.closed:
                return
            self._engine.close()
        self._end_migration()  # writes waiting on a seal now hear SessionClosed

    def __repr__(self) -> str:
        if self._successor is not None:
            return f"<LocalState {self.session_id} (retired, forwards to {self._successor!r})>"
        state = "closed" if self._table.closed else f"{len(self._table.by_id)} variables"
        return f"<LocalState {self.session_id} ({state})>"


def _migratable(provider: StateProvider) -> Migratable:
    if not isinstance(provider, Migratable):
        raise NotSupported(f"{type(provider).__name__} does not implement the migration protocol")
    return provider
