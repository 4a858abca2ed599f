"""LocalState: the in-process StateProvider, a handle on one SessionActor.

Writes are asks to the actor (serialized and versioned there), each one typed
message of :mod:`dspex_actors.messages`. Reads look up the actor's published
:class:`~dspex_actors.session.SessionTable` directly and fall back to an ask only
when they meet a write in progress (see ``session.py``), so a ``get_variable``
costs a few dict lookups, not a thread round trip.

LocalState implements the migration protocol
(:class:`~dspex_actors.provider.Migratable`): ``seal()`` takes the exact cut (the
actor answers writes from that turn on with ``SEALED``, not an error), ``unseal()``
undoes it, and ``retire(successor)`` closes the table and makes this handle forward
every message to the successor through the messages' own ``forward``. So a caller
that kept this handle, or a bound ``get_variable`` of it, keeps working against the
live copy; a write that met the seal waits for the migration's outcome and then
lands exactly once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Self, TypeVar

import pykka

from dspex_actors.errors import NotSupported, SessionClosed, StateError
from dspex_actors.exports import ExportColumns, columns_of
from dspex_actors.limits import DEFAULT_LIMITS, Limits, check_session_id
from dspex_actors.messages import (
    Close,
    Control,
    Delete,
    Digest,
    Export,
    ExportCols,
    Get,
    GetMany,
    GetRecord,
    Import,
    List,
    OpenEvents,
    Operation,
    ReadOperation,
    Register,
    Retire,
    Seal,
    SetValue,
    Unseal,
    Update,
)
from dspex_actors.provider import Migratable, StateProvider
from dspex_actors.records import VariableRecord, check_pattern
from dspex_actors.session import (
    MISSED,
    SEALED,
    ExitHook,
    SessionActor,
    SessionTable,
    new_session_id,
)
from dspex_actors.streaming import DEFAULT_HISTORY, Subscriber, Subscription
from dspex_actors.vartypes import plain_copy

__all__ = ["LocalState", "ask_actor"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

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


class LocalState(StateProvider):
    """A session held by a SessionActor in this process."""

    __slots__ = (
        "_call_timeout",
        "_crashed",
        "_history",
        "_limits",
        "_lock",
        "_migration",
        "_on_exit",
        "_ref",
        "_successor",
        "_table",
        "session_id",
    )
    kind: ClassVar[str] = "local"

    def __init__(
        self,
        table: SessionTable,
        *,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        on_exit: ExitHook | None = None,
        limits: Limits = DEFAULT_LIMITS,
        event_history: int = DEFAULT_HISTORY,
    ) -> None:
        self.session_id = table.session_id
        self._history = event_history
        self._table = table
        self._call_timeout = call_timeout
        self._on_exit = on_exit
        self._limits = limits
        self._lock = threading.Lock()
        self._migration: threading.Event | None = None  # set while sealed
        self._successor: StateProvider | None = None
        self._crashed = threading.Event()
        self._ref: pykka.ActorRef[SessionActor] = SessionActor.start(
            table, on_exit, self._crashed, limits, event_history
        )

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
        state = cls(
            SessionTable(session_id or new_session_id()),
            call_timeout=call_timeout,
            on_exit=on_exit,
            limits=limits,
            event_history=event_history,
        )
        return state._seeded(existing_state)

    # -- plumbing ------------------------------------------------------------------

    @property
    def actor_ref(self) -> pykka.ActorRef[SessionActor]:
        """The session actor (for supervisors and tests that kill it on purpose)."""
        return self._ref

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
        if self._successor is not None:
            return True
        return not self._table.closed and self._ref.is_alive() and not self._crashed.is_set()

    def restart(self) -> None:
        """Start a fresh actor on the same table after the old one died.

        The variables survive: they live in the table, not in the dead actor. A
        retired handle has nothing to restart (its session lives in the successor).
        """
        with self._lock:
            if self._successor is not None:
                return
            if self._table.closed:
                raise self._closed()
            if self._migration is not None:
                raise SessionClosed(f"session {self.session_id!r} is being migrated")
            if self._ref.is_alive() and not self._crashed.is_set():
                return
            try:  # a crashed actor may still be refusing what was queued behind
                self._ref.stop(block=True, timeout=self._call_timeout)
            except pykka.Timeout:
                logger.error("session %s: the crashed actor did not stop", self.session_id)
            self._crashed = threading.Event()
            self._ref = SessionActor.start(
                self._table, self._on_exit, self._crashed, self._limits, self._history
            )

    def _closed(self) -> SessionClosed:
        return SessionClosed(f"session {self.session_id!r} is closed")

    def _ask(self, message: Operation[_T]) -> _T:
        """Run ``message`` on the actor, or on the successor once the session moved.

        A write that meets the seal waits for the migration's outcome (within the
        call timeout), then goes to the successor or back to the unsealed actor.
        """
        deadline = time.monotonic() + self._call_timeout
        unowned = 0
        while True:
            successor = self._successor
            if successor is not None:
                return message.forward(successor)
            result: Any = ask_actor(
                self._ref, message, self._call_timeout, f"session {self.session_id!r}"
            )
            if result is not SEALED:
                answer: _T = result
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
                    f"{self._call_timeout}s; {type(message).__name__} was not applied"
                )

    def _control(self, message: Control[_T]) -> _T:
        answer: _T = ask_actor(
            self._ref, message, self._call_timeout, f"session {self.session_id!r}"
        )
        return answer

    # -- reads: lock-free from the table, seqlock-checked -----------------------------

    def get_variable(self, identifier: str) -> Any:
        table = self._table
        seq = table.seq
        try:
            record = table.index.get(identifier)
        except TypeError:  # unhashable: no such variable
            record = None
        if seq & 1 or table.seq != seq:
            return self._ask(Get(identifier))
        if record is None:
            raise table.missing(identifier)
        thaw = record.thaw
        return record.value if thaw is None else thaw(record.value)

    def _read(self, message: ReadOperation[_T]) -> _T:
        """``message`` run on the table if no write overlapped it, else by the actor
        (or the successor)."""
        answer = self._table.read(message)
        if answer is MISSED:
            return self._ask(message)
        result: _T = answer  # type: ignore[assignment]  # not MISSED: a _T
        return result

    def get_variables(self, identifiers: Iterable[str]) -> dict[str, Any]:
        return self._read(GetMany(list(identifiers)))

    def get_record(self, identifier: str) -> VariableRecord:
        if not isinstance(identifier, str):
            raise self._table.missing(identifier)
        return self._read(GetRecord(identifier))

    def list_variables(self, pattern: str | None = None) -> list[dict[str, Any]]:
        return self._read(List(check_pattern(pattern)))

    def export_state(self) -> dict[str, Any]:
        return self._read(Export())

    def export_columns(self) -> ExportColumns:
        return self._read(ExportCols())

    def digest(self) -> bytes:
        """``exports.columns_digest`` of the variables, without building an export."""
        return self._read(Digest())

    # -- writes: one actor turn each -----------------------------------------------

    def register_variable(
        self,
        name: str,
        type: str,  # the contract's word, shadowing the builtin here only
        initial_value: Any,
        *,
        constraints: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        description: str | None = None,
    ) -> str:
        return self._ask(Register(name, type, initial_value, constraints, metadata, description))

    def set_variable(
        self,
        identifier: str,
        new_value: Any,
        metadata: Mapping[str, Any] | None = None,
        *,
        expected_version: int | None = None,
    ) -> int:
        return self._ask(SetValue(identifier, new_value, metadata, expected_version))

    def update_variables(
        self, updates: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
    ) -> None:
        if not isinstance(updates, Mapping):
            raise TypeError(f"updates must be a mapping, got {type(updates).__name__}")
        self._ask(Update(dict(updates), metadata))

    def delete_variable(self, identifier: str) -> None:
        self._ask(Delete(identifier))

    def import_state(self, exported: Mapping[str, Any]) -> None:
        self.import_columns(columns_of(exported))  # structure checked in this thread

    def import_columns(self, columns: ExportColumns) -> None:
        self._ask(Import(columns))

    def subscribe(
        self, pattern: str | None, subscriber: Subscriber, *, start: int | None = None
    ) -> Any:
        """Deliver each change to variables whose names match ``pattern`` (a glob;
        None: all) to ``subscriber``, a callable or a Pykka actor, from its own
        thread (see :mod:`dspex_actors.streaming`); returns the Subscription.

        ``start`` resumes from an event sequence (past the kept history: one
        ``overflow`` event first). A retired handle subscribes on its successor;
        subscriptions made before the retirement end with a ``closed`` event.
        """
        successor = self._successor
        if successor is not None:
            forward: Any = successor.subscribe
            if start is None:
                return forward(pattern, subscriber)
            return forward(pattern, subscriber, start=start)
        log = self._control(OpenEvents())
        return Subscription(
            log, pattern, subscriber, start=start, name=f"dspex-events-{self.session_id}"
        )

    def unsubscribe(self, subscription: Any) -> None:
        """Stop a subscription; no event is delivered once this returns."""
        successor = self._successor
        if successor is not None and not isinstance(subscription, Subscription):
            successor.unsubscribe(subscription)
            return
        if not isinstance(subscription, Subscription):
            raise TypeError(f"not a subscription: {subscription!r}")
        subscription.close()

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
            return self._control(Seal())
        except BaseException:
            self._end_migration()
            raise

    def unseal(self) -> None:
        """The migration failed: accept writes again."""
        successor = self._successor
        if successor is not None:
            _migratable(successor).unseal()
            return
        try:
            self._control(Unseal())
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
            ref = self._ref
        try:
            self._control(Retire())
        except SessionClosed:
            self._table.close()  # no actor runs on it: the handle is its writer now
        except StateError as exc:
            logger.error("session %s: retiring its actor failed: %s", self.session_id, exc)
            self._table.close()
        finally:
            self._end_migration()
        try:
            ref.stop(block=True, timeout=self._call_timeout)
        except pykka.Timeout:
            logger.error("session %s: the retired actor did not stop in time", self.session_id)

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
            try:
                self._control(Close())
            except SessionClosed:
                pass  # already dead (crashed or killed): the handle marks the table
            finally:
                # A no-op after Close; otherwise no actor writes the table any more.
                self._table.close()
                try:
                    self._ref.stop(block=True, timeout=self._call_timeout)
                except pykka.Timeout:
                    logger.error("session %s: actor did not stop", self.session_id)
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
