"""One typed message per session operation, defined once.

Pykka's own ``pykka.messages`` is the model: a message is a small typed object, and
the receiver dispatches on it. Each :class:`Operation` here says, in one place,

* its arguments (typed fields, so mypy follows a value from ``Context.set_variable``
  to the session actor),
* whether it writes (:attr:`Operation.write`: the seal refuses writes; the Context's
  write gate fences them during a switch),
* how the session actor applies it (:meth:`Operation.apply`, a call on
  :class:`SessionOps`; a :class:`ReadOperation` needs only :class:`Reads`, which a
  session's published table offers, so it can be answered without the actor), and
* how it runs on any other backend (:meth:`Operation.forward`, a call on the public
  :class:`~dspex_actors.provider.StateProvider` API) — the one generic path by which
  a retired handle hands every call to its successor.

Adding an operation means one class here plus its wire mapping in the bridge.
:class:`Control` messages (seal, unseal, retire, close, crash) only ever go to a
session actor; they are not provider operations and cannot be forwarded.

Messages are ``slots`` dataclasses, not frozen ones: a frozen dataclass costs three
times as much to build, and one is built per call on the hot path. Treat them as
immutable all the same.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from dspex_actors.exports import ExportColumns, columns_digest
from dspex_actors.records import VariableRecord
from dspex_actors.streaming import EventLog

if TYPE_CHECKING:
    from dspex_actors.provider import StateProvider

__all__ = [
    "Close",
    "Control",
    "Delete",
    "Deliver",
    "Digest",
    "Export",
    "ExportCols",
    "Get",
    "GetMany",
    "GetRecord",
    "GetVersioned",
    "Import",
    "List",
    "OpenEvents",
    "Operation",
    "ReadOperation",
    "Reads",
    "Register",
    "Retire",
    "Seal",
    "SessionOps",
    "SetValue",
    "Unseal",
    "Update",
    "WriteOperation",
]

R = TypeVar("R")


class Reads(Protocol):
    """What read operations need: a session's published table offers it."""

    def get(self, identifier: str) -> Any: ...
    def get_many(self, identifiers: list[str]) -> dict[str, Any]: ...
    def get_record(self, identifier: str) -> VariableRecord: ...
    def get_versioned(self, identifier: str) -> tuple[Any, int]: ...
    def listing(self, pattern: str | None) -> list[dict[str, Any]]: ...
    def export(self) -> dict[str, Any]: ...
    def columns(self) -> ExportColumns: ...
    def digest(self) -> bytes: ...


class SessionOps(Protocol):
    """What a session actor offers its write and control messages (reads need only
    :class:`Reads`): one typed method per operation."""

    def register(
        self,
        name: Any,
        type_name: Any,
        initial_value: Any,
        constraints: Any,
        metadata: Any,
        description: Any,
    ) -> str: ...
    def set_value(
        self, identifier: str, value: Any, metadata: Any, expected_version: int | None
    ) -> int: ...
    def update(self, updates: Mapping[str, Any], metadata: Any) -> None: ...
    def delete(self, identifier: str) -> None: ...
    def import_columns(self, columns: ExportColumns, continue_from: int | None) -> int: ...
    def open_events(self) -> EventLog: ...
    def seal(self) -> ExportColumns: ...
    def unseal(self) -> None: ...
    def retire(self) -> None: ...
    def close(self) -> None: ...
    def crash(self, reason: str) -> None: ...


class Operation(Generic[R]):
    """A session operation: applied in a session, forwardable to any backend.

    Either a :class:`ReadOperation` or a :class:`WriteOperation`.
    """

    __slots__ = ()
    write: ClassVar[bool] = False
    """Whether it changes the session (refused while sealed, fenced during a switch)."""

    def forward(self, provider: StateProvider) -> R:
        """Run it on a backend through the public StateProvider API."""
        raise NotImplementedError


class ReadOperation(Operation[R]):
    """An operation that changes nothing: it runs on :class:`Reads` alone."""

    __slots__ = ()

    def apply(self, session: Reads) -> R:
        """Run it on a table (lock-free) or in the session actor's turn."""
        raise NotImplementedError


class WriteOperation(Operation[R]):
    """An operation that changes the session: one session actor turn."""

    __slots__ = ()
    write: ClassVar[bool] = True

    def apply(self, session: SessionOps) -> R:
        """Run it in the session actor's turn."""
        raise NotImplementedError


class Control(Generic[R]):
    """A message only a session actor understands (its lifecycle, not the contract)."""

    __slots__ = ()
    write: ClassVar[bool] = False

    def apply(self, session: SessionOps) -> R:
        raise NotImplementedError


# -- reads ----------------------------------------------------------------------------


@dataclass(slots=True)
class Get(ReadOperation[Any]):
    identifier: str

    def apply(self, session: Reads) -> Any:
        return session.get(self.identifier)

    def forward(self, provider: StateProvider) -> Any:
        return provider.get_variable(self.identifier)


@dataclass(slots=True)
class GetMany(ReadOperation[dict[str, Any]]):
    identifiers: list[str]

    def apply(self, session: Reads) -> dict[str, Any]:
        return session.get_many(self.identifiers)

    def forward(self, provider: StateProvider) -> dict[str, Any]:
        return provider.get_variables(self.identifiers)


@dataclass(slots=True)
class GetRecord(ReadOperation[VariableRecord]):
    identifier: str

    def apply(self, session: Reads) -> VariableRecord:
        return session.get_record(self.identifier)

    def forward(self, provider: StateProvider) -> VariableRecord:
        return provider.get_record(self.identifier)


@dataclass(slots=True)
class GetVersioned(ReadOperation[tuple[Any, int]]):
    """A value and its version from one moment (what a compare-and-set loop reads)."""

    identifier: str

    def apply(self, session: Reads) -> tuple[Any, int]:
        return session.get_versioned(self.identifier)

    def forward(self, provider: StateProvider) -> tuple[Any, int]:
        record = provider.get_record(self.identifier)
        return record.value, record.version


@dataclass(slots=True)
class List(ReadOperation[list[dict[str, Any]]]):
    pattern: str | None

    def apply(self, session: Reads) -> list[dict[str, Any]]:
        return session.listing(self.pattern)

    def forward(self, provider: StateProvider) -> list[dict[str, Any]]:
        return provider.list_variables(self.pattern)


@dataclass(slots=True)
class Export(ReadOperation[dict[str, Any]]):
    def apply(self, session: Reads) -> dict[str, Any]:
        return session.export()

    def forward(self, provider: StateProvider) -> dict[str, Any]:
        return provider.export_state()


@dataclass(slots=True)
class ExportCols(ReadOperation[ExportColumns]):
    def apply(self, session: Reads) -> ExportColumns:
        return session.columns()

    def forward(self, provider: StateProvider) -> ExportColumns:
        return provider.export_columns()


@dataclass(slots=True)
class Digest(ReadOperation[bytes]):
    def apply(self, session: Reads) -> bytes:
        return session.digest()

    def forward(self, provider: StateProvider) -> bytes:
        return columns_digest(provider.export_columns())


# -- writes ---------------------------------------------------------------------------


@dataclass(slots=True)
class Register(WriteOperation[str]):
    name: str
    type_name: str
    initial_value: Any
    constraints: Mapping[str, Any] | None
    metadata: Mapping[str, Any] | None
    description: str | None

    def apply(self, session: SessionOps) -> str:
        return session.register(
            self.name,
            self.type_name,
            self.initial_value,
            self.constraints,
            self.metadata,
            self.description,
        )

    def forward(self, provider: StateProvider) -> str:
        return provider.register_variable(
            self.name,
            self.type_name,
            self.initial_value,
            constraints=self.constraints,
            metadata=self.metadata,
            description=self.description,
        )


@dataclass(slots=True)
class SetValue(WriteOperation[int]):
    identifier: str
    value: Any
    metadata: Mapping[str, Any] | None
    expected_version: int | None

    def apply(self, session: SessionOps) -> int:
        return session.set_value(self.identifier, self.value, self.metadata, self.expected_version)

    def forward(self, provider: StateProvider) -> int:
        return provider.set_variable(
            self.identifier, self.value, self.metadata, expected_version=self.expected_version
        )


@dataclass(slots=True)
class Update(WriteOperation[None]):
    updates: Mapping[str, Any]
    metadata: Mapping[str, Any] | None

    def apply(self, session: SessionOps) -> None:
        session.update(self.updates, self.metadata)

    def forward(self, provider: StateProvider) -> None:
        provider.update_variables(self.updates, self.metadata)


@dataclass(slots=True)
class Delete(WriteOperation[None]):
    identifier: str

    def apply(self, session: SessionOps) -> None:
        session.delete(self.identifier)

    def forward(self, provider: StateProvider) -> None:
        provider.delete_variable(self.identifier)


@dataclass(slots=True)
class Import(WriteOperation[None]):
    columns: ExportColumns
    continue_from: int | None = None
    """A migration's copy: no events, and the event count continues from this."""

    def apply(self, session: SessionOps) -> None:
        session.import_columns(self.columns, self.continue_from)

    def forward(self, provider: StateProvider) -> None:
        provider.import_columns(self.columns)


# -- control --------------------------------------------------------------------------


@dataclass(slots=True)
class Deliver(Generic[R]):
    """Run ``message`` and hand its answer to ``reply`` instead of a Pykka future.

    What a caller that must not block a thread on the answer (the SessionStore's
    event loop) sends with ``tell``. ``claim`` holds one token: whoever pops it
    first decides — the actor, which then runs the message, or the caller, which
    then knows it never ran (its deadline passed first). ``list.pop`` is atomic, so
    exactly one side wins. ``reply`` must not raise.
    """

    message: ReadOperation[R] | WriteOperation[R] | Control[R]
    reply: Callable[[Any], None]
    claim: list[bool]


@dataclass(slots=True)
class Seal(Control[ExportColumns]):
    """Refuse writes from this turn on; answer the export's columns (a migration's cut)."""

    def apply(self, session: SessionOps) -> ExportColumns:
        return session.seal()


@dataclass(slots=True)
class Unseal(Control[None]):
    """Accept writes again (a migration failed)."""

    def apply(self, session: SessionOps) -> None:
        session.unseal()


@dataclass(slots=True)
class Retire(Control[None]):
    """Close the table for good after a migration: the session lives on elsewhere."""

    def apply(self, session: SessionOps) -> None:
        session.retire()


@dataclass(slots=True)
class Close(Control[None]):
    """Close the table after every write queued before it; refuse everything after."""

    def apply(self, session: SessionOps) -> None:
        session.close()


@dataclass(slots=True)
class OpenEvents(Control[EventLog]):
    """The session's change-event log (started at the first subscriber)."""

    def apply(self, session: SessionOps) -> EventLog:
        return session.open_events()


@dataclass(slots=True)
class Crash(Control[None]):
    """Fail on purpose (tests and supervisors exercise restarts with it)."""

    reason: str

    def apply(self, session: SessionOps) -> None:
        session.crash(self.reason)
