"""LocalState: the in-process StateProvider, a handle on one SessionActor.

Writes are asks to the actor (serialized and versioned there). Reads look up the
actor's published :class:`~dspex_actors.session.SessionTable` directly and fall back
to an ask only when they meet a write in progress (see ``session.py``), so a
``get_variable`` costs a few dict lookups, not a thread round trip.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any, Self

import pykka

from dspex_actors.errors import SessionClosed, StateError
from dspex_actors.provider import StateProvider
from dspex_actors.session import (
    CLOSED,
    ExitHook,
    SessionActor,
    SessionTable,
    new_session_id,
)

__all__ = ["LocalState"]

DEFAULT_CALL_TIMEOUT = 30.0
"""Seconds a call waits for the session actor before giving up (it never hangs)."""


class LocalState(StateProvider):
    """A session held by a SessionActor in this process."""

    __slots__ = ("_call_timeout", "_lock", "_on_exit", "_ref", "_table", "session_id")

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
            if self._ref.is_alive():
                return
            self._ref = SessionActor.start(self._table, self._on_exit)

    def _closed(self) -> SessionClosed:
        return SessionClosed(f"session {self.session_id!r} is closed")

    def _call(self, *message: Any) -> Any:
        """Ask the actor; raise the StateError it answers with in this thread."""
        try:
            result = self._ref.ask(message, timeout=self._call_timeout)
        except pykka.ActorDeadError:
            if self._table.seq == CLOSED:
                raise self._closed() from None
            raise SessionClosed(f"session {self.session_id!r}: its actor is not running") from None
        except pykka.Timeout as exc:
            raise StateError(
                f"session {self.session_id!r}: the actor did not answer within "
                f"{self._call_timeout}s"
            ) from exc
        except StateError:
            raise
        except Exception as exc:
            raise StateError(
                f"session {self.session_id!r}: the session actor crashed handling "
                f"{message[0]!r}: {exc!r}"
            ) from exc
        if isinstance(result, StateError):
            raise result
        return result

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
            return table.lookup(identifier)  # raises VariableNotFound
        thaw = record.validator.thaw
        return record.value if thaw is None else thaw(record.value)

    def get_variables(self, identifiers: Iterable[str]) -> dict[str, Any]:
        identifiers = list(identifiers)
        table = self._table
        seq = table.seq
        if not seq & 1:
            values = table.values(identifiers)
            if table.seq == seq:
                return values
        return dict(self._call("get_many", identifiers))

    def list_variables(self) -> list[dict[str, Any]]:
        table = self._table
        seq = table.seq
        if not seq & 1:
            records = list(table.by_id.values())
            if table.seq == seq:
                return [record.to_dict() for record in records]
        return list(self._call("list"))

    def export_state(self) -> dict[str, Any]:
        table = self._table
        seq = table.seq
        if not seq & 1:
            exported = table.export()
            if table.seq == seq:
                return exported
        return dict(self._call("export"))

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
        self._call("import", exported)

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

    def retire(self) -> None:
        """Stop the actor but leave the table readable, frozen at its last write.

        For a migration's old backend: a reader that picked this handle just before
        the switch still reads the last committed values instead of an error, while
        any write raises SessionClosed.
        """
        with self._lock:
            if self._table.seq != CLOSED:
                self._ref.stop(block=True, timeout=self._call_timeout)

    def cleanup(self) -> None:
        """Stop the session actor; idempotent. Later calls raise SessionClosed."""
        with self._lock:
            if self._table.seq == CLOSED:
                return
            try:
                self._ref.ask(("close",), timeout=self._call_timeout)
            except pykka.ActorDeadError:
                pass  # already dead (crashed or killed): just mark the table
            finally:
                self._table.seq = CLOSED
            self._ref.stop(block=True, timeout=self._call_timeout)

    def __repr__(self) -> str:
        state = "closed" if self._table.seq == CLOSED else f"{len(self._table.by_id)} variables"
        return f"<LocalState {self.session_id} ({state})>"
