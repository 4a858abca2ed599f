"""LocalState: the in-process StateProvider, a handle on one SessionActor.

Writes are asks to the actor (serialized and versioned there). Reads look up the
actor's published :class:`~dspex_actors.session.SessionTable` directly and fall back
to an ask only when they meet a write in progress (see ``session.py``), so a
``get_variable`` costs a few dict lookups, not a thread round trip.

A migration seals the session (the actor refuses writes from that turn on), and
once the bridged copy is verified, ``retire(successor)`` closes the table and makes
this handle forward every call to the successor. So a caller that kept this handle,
or a bound ``get_variable`` of it, keeps working against the live copy; a write
that met the seal waits for the migration's outcome and then lands exactly once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Self, TypeVar

import pykka

from dspex_actors.errors import SessionClosed, StateError
from dspex_actors.exports import ExportColumns, columns_of
from dspex_actors.provider import StateProvider
from dspex_actors.session import (
    CLOSED,
    ExitHook,
    SessionActor,
    SessionTable,
    new_session_id,
)
from dspex_actors.vartypes import plain_copy

__all__ = ["LocalState", "ask_actor"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

DEFAULT_CALL_TIMEOUT = 30.0
"""Seconds a call waits for the session actor before giving up (it never hangs)."""


def ask_actor(ref: pykka.ActorRef[Any], message: Any, timeout: float, what: str) -> Any:
    """Ask an actor; the one place pykka's errors become dspex_actors errors.

    A ``StateError`` the actor answers with is raised here, in the caller's thread.
    """
    try:
        result = ref.ask(message, timeout=timeout)
    except pykka.ActorDeadError:
        raise SessionClosed(f"{what}: its actor is not running") from None
    except pykka.Timeout as exc:
        raise StateError(f"{what}: the actor did not answer within {timeout}s") from exc
    except StateError:
        raise
    except Exception as exc:
        raise StateError(f"{what}: the actor crashed handling {message[0]!r}: {exc!r}") from exc
    if isinstance(result, StateError):
        raise result
    return result


_FORWARD: dict[str, Callable[..., Any]] = {
    "get": lambda p, i: p.get_variable(i),
    "get_many": lambda p, ids: p.get_variables(ids),
    "list": lambda p: p.list_variables(),
    "export": lambda p: p.export_state(),
    "columns": lambda p: p.export_columns(),
    "digest": lambda p: p.digest(),
    "register": lambda p, n, t, v, c, m, d: p.register_variable(
        n, t, v, constraints=c, metadata=m, description=d
    ),
    "set": lambda p, i, v, m, ev: p.set_variable(i, v, m, expected_version=ev),
    "update": lambda p, u, m: p.update_variables(u, m),
    "delete": lambda p, i: p.delete_variable(i),
    "import": lambda p, columns: p.import_columns(columns),
}
"""How each actor message is made on a successor backend after a migration."""


class LocalState(StateProvider):
    """A session held by a SessionActor in this process."""

    __slots__ = (
        "_call_timeout",
        "_lock",
        "_migration",
        "_on_exit",
        "_ref",
        "_successor",
        "_table",
        "session_id",
    )

    def __init__(
        self,
        table: SessionTable,
        *,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        on_exit: ExitHook | None = None,
    ) -> None:
        self.session_id = table.session_id
        self._table = table
        self._call_timeout = call_timeout
        self._on_exit = on_exit
        self._lock = threading.Lock()
        self._migration: threading.Event | None = None  # set while sealed
        self._successor: StateProvider | None = None
        self._ref: pykka.ActorRef[SessionActor] = SessionActor.start(table, on_exit)

    @classmethod
    def init(
        cls,
        *,
        session_id: str | None = None,
        existing_state: Mapping[str, Any] | None = None,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        on_exit: ExitHook | None = None,
        **backend_opts: Any,
    ) -> Self:
        """Start a session actor; ``on_exit`` hears when it stops or crashes."""
        if backend_opts:
            raise TypeError(f"LocalState.init got unknown options: {', '.join(backend_opts)}")
        if session_id is not None and (not isinstance(session_id, str) or not session_id):
            raise TypeError(f"session_id must be a non-empty string, got {session_id!r}")
        state = cls(
            SessionTable(session_id or new_session_id()),
            call_timeout=call_timeout,
            on_exit=on_exit,
        )
        if existing_state is not None:
            try:
                state.import_state(existing_state)
            except BaseException:
                state.cleanup()
                raise
        return state

    # -- plumbing ------------------------------------------------------------------

    @property
    def actor_ref(self) -> pykka.ActorRef[SessionActor]:
        """The session actor (for supervisors and tests that kill it on purpose)."""
        return self._ref

    @property
    def variable_count(self) -> int:
        """How many variables the session holds (read from its table, no round trip)."""
        return len(self._table.by_id)

    @property
    def session_metadata(self) -> dict[str, Any]:
        """A copy of the session's own metadata (set by imports)."""
        return dict(plain_copy(self._table.metadata))

    @property
    def alive(self) -> bool:
        """Whether the session actor is running and the handle is open."""
        return self._table.seq != CLOSED and self._ref.is_alive()

    def restart(self) -> None:
        """Start a fresh actor on the same table after the old one died.

        The variables survive: they live in the table, not in the dead actor.
        """
        with self._lock:
            if self._table.seq == CLOSED:
                raise self._closed()
            if self._migration is not None:
                raise SessionClosed(f"session {self.session_id!r} is being migrated")
            if self._ref.is_alive():
                return
            self._ref = SessionActor.start(self._table, self._on_exit)

    def _closed(self) -> SessionClosed:
        return SessionClosed(f"session {self.session_id!r} is closed")

    def _call(self, *message: Any) -> Any:
        """Ask the actor, or the successor once the session has moved."""
        for _ in range(2):
            if self._successor is not None:
                return _FORWARD[message[0]](self._successor, *message[1:])
            try:
                return ask_actor(
                    self._ref, message, self._call_timeout, f"session {self.session_id!r}"
                )
            except SessionClosed as exc:
                migration = self._migration
                if migration is None and not exc.details.get("migrating"):
                    if self._table.seq == CLOSED and self._successor is None:
                        raise self._closed() from None
                    raise
                # Sealed for a migration: wait for its outcome, then go to the
                # successor, or back to the unsealed actor.
                if migration is not None and not migration.wait(self._call_timeout):
                    raise
        raise SessionClosed(f"session {self.session_id!r}: migration did not settle")

    # -- reads: lock-free from the table, seqlock-checked -----------------------------

    def get_variable(self, identifier: str) -> Any:
        table = self._table
        seq = table.seq
        try:
            record = table.index.get(identifier)
        except TypeError:  # unhashable: no such variable
            record = None
        if seq & 1 or table.seq != seq:
            return self._call("get", identifier)
        if record is None:
            raise table.missing(identifier)
        thaw = record.validator.thaw
        return record.value if thaw is None else thaw(record.value)

    def _read(self, read: Callable[[], _T], *message: Any) -> _T:
        """``read()`` from the table if no write overlapped it, else ask (``message``)."""
        table = self._table
        seq = table.seq
        if not seq & 1:
            result = read()
            if table.seq == seq:
                return result
        return self._call(*message)  # type: ignore[no-any-return]

    def get_variables(self, identifiers: Iterable[str]) -> dict[str, Any]:
        identifiers = list(identifiers)
        return self._read(lambda: self._table.values(identifiers), "get_many", identifiers)

    def list_variables(self) -> list[dict[str, Any]]:
        return self._read(self._table.listing, "list")

    def export_state(self) -> dict[str, Any]:
        return self._read(self._table.export, "export")

    def digest(self) -> bytes:
        """``exports.columns_digest`` of the variables, without building an export."""
        return self._read(self._table.digest, "digest")

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
        return str(
            self._call("register", name, type, initial_value, constraints, metadata, description)
        )

    def set_variable(
        self,
        identifier: str,
        new_value: Any,
        metadata: Mapping[str, Any] | None = None,
        *,
        expected_version: int | None = None,
    ) -> int:
        return int(self._call("set", identifier, new_value, metadata, expected_version))

    def update_variables(
        self, updates: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
    ) -> None:
        if not isinstance(updates, Mapping):
            raise TypeError(f"updates must be a mapping, got {type(updates).__name__}")
        self._call("update", dict(updates), metadata)

    def delete_variable(self, identifier: str) -> None:
        self._call("delete", identifier)

    def import_state(self, exported: Mapping[str, Any]) -> None:
        self.import_columns(columns_of(exported))  # structure checked in this thread

    def export_columns(self) -> ExportColumns:
        return self._read(self._table.columns, "columns")

    def import_columns(self, columns: ExportColumns) -> None:
        self._call("import", columns)

    # -- lifecycle -------------------------------------------------------------------

    @classmethod
    def requires_bridge(cls) -> bool:
        return False

    @classmethod
    def capabilities(cls) -> dict[str, bool]:
        return {
            "atomic_updates": True,
            "streaming": False,
            "persistence": False,
            "distribution": False,
        }

    # -- migration -------------------------------------------------------------------

    def seal(self) -> ExportColumns:
        """Refuse writes from this actor turn on and return the export's columns (the cut).

        Writes that meet the seal wait for :meth:`retire` (then go to the successor)
        or :meth:`unseal` (then go to this actor).
        """
        with self._lock:
            if self._migration is not None:
                raise StateError(f"session {self.session_id!r} is already being migrated")
            self._migration = threading.Event()
        try:
            columns: ExportColumns = self._call("seal")
            return columns
        except BaseException:
            self._end_migration()
            raise

    def unseal(self) -> None:
        """The migration failed: accept writes again."""
        try:
            self._call("unseal")
        finally:
            self._end_migration()

    def retire(self, successor: StateProvider) -> None:
        """The migration succeeded: stop the actor and forward everything to ``successor``."""
        with self._lock:
            self._successor = successor
            self._table.seq = CLOSED  # every fast read now takes the forwarding path
            ref = self._ref
        self._end_migration()
        ref.stop(block=True, timeout=self._call_timeout)

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
            if self._table.seq == CLOSED:
                return
            try:
                ask_actor(
                    self._ref, ("close",), self._call_timeout, f"session {self.session_id!r}"
                )
            except SessionClosed:
                pass  # already dead (crashed or killed): just mark the table
            finally:
                self._table.seq = CLOSED
                try:
                    self._ref.stop(block=True, timeout=self._call_timeout)
                except pykka.Timeout:
                    logger.error("session %s: actor did not stop", self.session_id)

    def __repr__(self) -> str:
        state = "closed" if self._table.seq == CLOSED else f"{len(self._table.by_id)} variables"
        return f"<LocalState {self.session_id} ({state})>"
