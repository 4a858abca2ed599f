"""One typed message per session operation, defined once.

Pykka's own ``pykka.messages`` is the model: a message is a small typed object, and
the receiver dispatches on it. Each :class:`Operation` here says, in one place,

* its arguments (typed fields, so mypy follows a value from ``Context.set_variable``
  to the session actor) and its reply (the type parameter);
* whether it writes (:attr:`Operation.write`: the seal refuses writes, the Context's
  write gate fences them during a switch, a bridged write carries a request id);
* how a session applies it (:meth:`~ReadOperation.apply`: one call on the session
  engine's typed methods, :class:`SessionOps` for writes; a read needs only
  :class:`Reads`, which a session's published table offers lock-free and a bridged
  handle's copy offers when it can answer); and
* how it runs on a backend that is not ours (:meth:`Operation.forward`, a call on the
  public :class:`~dspex_actors.provider.StateProvider` API), so a Context and a
  retired handle can hand any call to any provider; and
* what makes it large (:attr:`Operation.scans`, :meth:`Operation.result_items`: a
  server builds such answers off its event loop) and how a size error names it
  (:meth:`Operation.sized_as`).

Everything else about an operation has one place each: its public method in
:mod:`dspex_actors.methods`, its wire form in :mod:`dspex_actors.wire.operations`,
its Lua script in the Redis engine's table. Every backend runs operations through one
entry point, ``run(op)``.

:class:`SessionOperation`\\ s are answered by whatever keeps sessions (a SessionStore's
store: opening, committing, closing, describing, keeping alive) rather than by the
session's engine. :class:`Control` messages (seal, unseal, retire, close, crash) only
ever go to a session actor; they are not provider operations.

Messages are ``slots`` dataclasses, not frozen ones: a frozen dataclass costs three
times as much to build, and one is built per call on the hot path. Treat them as
immutable all the same.

**Length.** Every operation of the library is here, each a few lines: splitting them
over modules would scatter the one table a reader needs whole.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from dspex_actors.errors import NotSupported
from dspex_actors.exports import ExportColumns, columns_digest
from dspex_actors.records import Opened, SessionInfo, VariableRecord
from dspex_actors.streaming import EventLog

if TYPE_CHECKING:
    from dspex_actors.provider import StateProvider
    from dspex_actors.stores.base import Store

__all__ = [
    "Close",
    "CloseSession",
    "CommitSession",
    "Control",
    "Crash",
    "DeleteVariable",
    "Deliver",
    "Digest",
    "ExportSession",
    "ExportState",
    "GetRecord",
    "GetSession",
    "GetVariable",
    "GetVariables",
    "GetVersioned",
    "HasVariable",
    "Heartbeat",
    "ImportState",
    "ListVariables",
    "OpenEvents",
    "OpenSession",
    "Operation",
    "ReadOperation",
    "Reads",
    "RegisterVariable",
    "Retire",
    "Seal",
    "SessionOperation",
    "SessionOps",
    "SetVariable",
    "Settle",
    "Unseal",
    "UpdateVariables",
    "WriteOperation",
]

R = TypeVar("R")


class Reads(Protocol):
    """What read operations run on: a session's published table offers all of it;
    a bridged handle's copy answers what it can and ``MISS`` for the rest."""

    def get(self, identifier: str) -> Any: ...
    def get_many(self, identifiers: list[str]) -> dict[str, Any]: ...
    def whole_record(self, identifier: str) -> VariableRecord: ...
    def get_versioned(self, identifier: str) -> tuple[Any, int]: ...
    def listing(self, pattern: str | None) -> list[VariableRecord]: ...
    def export(self) -> dict[str, Any]: ...
    def columns(self) -> ExportColumns: ...
    def content_digest(self) -> bytes: ...
    def info(self) -> SessionInfo: ...


class SessionOps(Protocol):
    """What a session actor offers its write and control messages (reads need only
    :class:`Reads`): one typed method per rule of the session."""

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
    def update(self, updates: Mapping[str, Any], metadata: Any) -> int: ...
    def delete(self, identifier: str) -> None: ...
    def add_columns(self, columns: ExportColumns, continue_from: int | None) -> int: ...
    def content_digest(self) -> bytes: ...
    def open_events(self) -> EventLog: ...
    def seal(self) -> ExportColumns: ...
    def unseal(self) -> None: ...
    def retire(self) -> None: ...
    def close(self) -> None: ...
    def crash(self, reason: str) -> None: ...


class Operation(Generic[R]):
    """A session operation: run by every backend, forwardable to any provider.

    Either a :class:`ReadOperation`, a :class:`WriteOperation` or a
    :class:`SessionOperation`.
    """

    __slots__ = ()
    write: ClassVar[bool] = False
    """Whether it changes the session (refused while sealed, fenced during a switch,
    sent with a request id so that a retry is applied once)."""
    within: float | None = None
    """At most this many seconds for the whole call (None: the handle's timeout)."""
    scans: ClassVar[bool] = False
    """Whether its work grows with the session's size (a listing, an export): a
    server builds a large one off its event loop, so other sessions keep answering."""

    def result_items(self, result: R) -> int:
        """How many variables ``result`` carries (what makes its reply large)."""
        return 0

    def sized_as(self) -> tuple[str, str]:
        """How a size error names it: the variable it reports, and what was too large."""
        return f"<{type(self).__name__}>", "the request"

    def forward(self, provider: StateProvider) -> R:
        """Run it on a provider that has no ``run`` through the public API."""
        raise NotSupported(f"{type(provider).__name__} cannot run {type(self).__name__}")


class ReadOperation(Operation[R]):
    """An operation that changes nothing: it runs on :class:`Reads` alone."""

    __slots__ = ()

    def apply(self, session: Reads) -> R:
        """Run it on a table (lock-free), in the session actor's turn, or on a copy."""
        raise NotImplementedError


class WriteOperation(Operation[R]):
    """An operation that changes the session: one session actor turn."""

    __slots__ = ()
    write: ClassVar[bool] = True

    def apply(self, session: SessionOps) -> R:
        """Run it in the session actor's turn."""
        raise NotImplementedError


class SessionOperation(Operation[R]):
    """An operation on a session as a whole, answered by what keeps the session (a
    store), not by its variables' engine. :meth:`serve` is how a store answers it;
    a session with no store around it answers the ones that :meth:`apply` defines."""

    __slots__ = ()

    async def serve(
        self,
        store: Store,
        session_id: str,
        request_id: str | None,
        incarnation: str | None,
    ) -> R:
        """Run it on a store."""
        raise NotImplementedError

    def apply(self, session: Reads) -> R:
        """Run it on a session that no store keeps (a LocalState's table)."""
        raise NotSupported(f"{type(self).__name__} needs a session kept by a store")


class Control(Generic[R]):
    """A message only a session actor understands (its lifecycle, not the contract)."""

    __slots__ = ()
    write: ClassVar[bool] = False

    def apply(self, session: SessionOps) -> R:
        raise NotImplementedError


# -- reads ----------------------------------------------------------------------------


@dataclass(slots=True)
class GetVariable(ReadOperation[Any]):
    identifier: str

    def apply(self, session: Reads) -> Any:
        return session.get(self.identifier)

    def forward(self, provider: StateProvider) -> Any:
        return provider.get_variable(self.identifier)


@dataclass(slots=True)
class GetVariables(ReadOperation[dict[str, Any]]):
    identifiers: list[str]

    def apply(self, session: Reads) -> dict[str, Any]:
        return session.get_many(self.identifiers)

    def forward(self, provider: StateProvider) -> dict[str, Any]:
        return provider.get_variables(self.identifiers)


@dataclass(slots=True)
class GetRecord(ReadOperation[VariableRecord]):
    identifier: str

    def apply(self, session: Reads) -> VariableRecord:
        return session.whole_record(self.identifier)

    def forward(self, provider: StateProvider) -> VariableRecord:
        return provider.get_record(self.identifier)


@dataclass(slots=True)
class GetVersioned(ReadOperation[tuple[Any, int]]):
    """A value and its version from one moment (what the bridge's GetVariable answers,
    so a client's copy never reads older than the server did)."""

    identifier: str

    def apply(self, session: Reads) -> tuple[Any, int]:
        return session.get_versioned(self.identifier)

    def forward(self, provider: StateProvider) -> tuple[Any, int]:
        record = provider.get_record(self.identifier)
        return record.value, record.version


@dataclass(slots=True)
class HasVariable(ReadOperation[bool]):
    """Whether a variable exists, by name or id. A copy that cannot tell answers
    its ``MISS`` as it is (the caller then asks the session)."""

    identifier: str

    def apply(self, session: Reads) -> bool:
        identifier = self.identifier
        found = session.get_many([identifier])
        if not isinstance(found, dict):
            return found  # a copy's MISS, passed on
        return isinstance(identifier, str) and identifier in found

    def forward(self, provider: StateProvider) -> bool:
        return self.identifier in provider.get_variables([self.identifier])


@dataclass(slots=True)
class ListVariables(ReadOperation[list[VariableRecord]]):
    pattern: str | None
    scans: ClassVar[bool] = True

    def result_items(self, result: list[VariableRecord]) -> int:
        return len(result)

    def apply(self, session: Reads) -> list[VariableRecord]:
        return session.listing(self.pattern)

    def forward(self, provider: StateProvider) -> list[VariableRecord]:
        return provider.list_variables(self.pattern)


@dataclass(slots=True)
class ExportState(ReadOperation[dict[str, Any]]):
    """The whole session as an export map (see ``StateProvider.export_state``)."""

    scans: ClassVar[bool] = True

    def result_items(self, result: dict[str, Any]) -> int:
        return len(result.get("variables", ()))

    def apply(self, session: Reads) -> dict[str, Any]:
        return session.export()

    def forward(self, provider: StateProvider) -> dict[str, Any]:
        return provider.export_state()


@dataclass(slots=True)
class ExportSession(ReadOperation[ExportColumns]):
    """The whole session as columns, the form migrations and the bridge move."""

    scans: ClassVar[bool] = True

    def result_items(self, result: ExportColumns) -> int:
        return result.variable_count

    def apply(self, session: Reads) -> ExportColumns:
        return session.columns()

    def forward(self, provider: StateProvider) -> ExportColumns:
        return provider.export_columns()


@dataclass(slots=True)
class Digest(ReadOperation[bytes]):
    """``exports.columns_digest`` of the session, without building an export."""

    scans: ClassVar[bool] = True

    def apply(self, session: Reads) -> bytes:
        return session.content_digest()

    def forward(self, provider: StateProvider) -> bytes:
        return columns_digest(provider.export_columns())


# -- writes ---------------------------------------------------------------------------


@dataclass(slots=True)
class RegisterVariable(WriteOperation[str]):
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
class SetVariable(WriteOperation[int]):
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
class UpdateVariables(WriteOperation[int]):
    """All or nothing; answers the session's next event sequence after the batch (a
    bridged copy waits for it), which the public method does not return."""

    updates: Mapping[str, Any]
    metadata: Mapping[str, Any] | None

    def apply(self, session: SessionOps) -> int:
        return session.update(self.updates, self.metadata)

    def sized_as(self) -> tuple[str, str]:
        return "<batch>", f"the batch of {len(self.updates)} updates"

    def forward(self, provider: StateProvider) -> int:
        provider.update_variables(self.updates, self.metadata)
        return 0


@dataclass(slots=True)
class DeleteVariable(WriteOperation[None]):
    identifier: str

    def apply(self, session: SessionOps) -> None:
        session.delete(self.identifier)

    def forward(self, provider: StateProvider) -> None:
        provider.delete_variable(self.identifier)


@dataclass(slots=True)
class ImportState(WriteOperation[bytes]):
    """Add an export's variables, all or nothing; answers the digest of the session
    after it when ``want_digest`` (in the same turn: a migration's verification)."""

    columns: ExportColumns
    continue_from: int | None = None
    """A migration's copy: no events, and the event count continues from this."""
    want_digest: bool = False

    def apply(self, session: SessionOps) -> bytes:
        session.add_columns(self.columns, self.continue_from)
        return session.content_digest() if self.want_digest else b""

    def sized_as(self) -> tuple[str, str]:
        return "<import>", f"the import of {self.columns.variable_count} variables"

    def forward(self, provider: StateProvider) -> bytes:
        provider.import_columns(self.columns)
        return columns_digest(provider.export_columns()) if self.want_digest else b""


# -- the session as a whole -----------------------------------------------------------


@dataclass(slots=True)
class OpenSession(SessionOperation[Opened]):
    """Attach to a session, or create it (see ``Store.open``)."""

    create: bool
    pending: bool = False
    metadata: Mapping[str, Any] | None = None

    async def serve(
        self, store: Store, session_id: str, request_id: str | None, incarnation: str | None
    ) -> Opened:
        opened = await store.open(
            session_id or None,
            create=self.create,
            metadata=dict(self.metadata) if self.metadata is not None else None,
            pending=self.pending,
            request_id=request_id,
        )
        return opened._replace(
            store=store.kind, max_calls_per_connection=store.limits.max_calls_per_connection
        )


@dataclass(slots=True)
class CommitSession(SessionOperation[None]):
    """Make a session opened ``pending`` visible to others (idempotent)."""

    write: ClassVar[bool] = True

    async def serve(
        self, store: Store, session_id: str, request_id: str | None, incarnation: str | None
    ) -> None:
        await store.commit(session_id, incarnation or "")


@dataclass(slots=True)
class CloseSession(SessionOperation[None]):
    """Close a session (that incarnation only, when one is named)."""

    write: ClassVar[bool] = True

    async def serve(
        self, store: Store, session_id: str, request_id: str | None, incarnation: str | None
    ) -> None:
        await store.close(session_id, incarnation)


@dataclass(slots=True)
class GetSession(SessionOperation[SessionInfo]):
    """The session as what keeps it sees it (counts as activity)."""

    async def serve(
        self, store: Store, session_id: str, request_id: str | None, incarnation: str | None
    ) -> SessionInfo:
        return await store.info(session_id, incarnation)

    def apply(self, session: Reads) -> SessionInfo:
        return session.info()


@dataclass(slots=True)
class Heartbeat(SessionOperation[float | None]):
    """Keep a session that expires when idle alive: when it would expire (epoch
    seconds), None for one that never does."""

    async def serve(
        self, store: Store, session_id: str, request_id: str | None, incarnation: str | None
    ) -> float | None:
        return await store.heartbeat(session_id, incarnation)

    def apply(self, session: Reads) -> float | None:
        return None  # a session no store keeps never expires

    def forward(self, provider: StateProvider) -> float | None:
        return provider.heartbeat()


@dataclass(slots=True)
class Settle(SessionOperation[bool]):
    """Whether the write with ``request_id``, first sent ``age`` seconds ago, was
    applied; after False it never will be (the store remembers the refusal in place
    of an answer). ``OutcomeUnknown`` when the store no longer remembers that far."""

    request_id: str
    age: float
    within: float | None = None
    write: ClassVar[bool] = True

    async def serve(
        self, store: Store, session_id: str, request_id: str | None, incarnation: str | None
    ) -> bool:
        return await store.settle(session_id, self.request_id, self.age, incarnation)


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
