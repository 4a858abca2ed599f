"""The public methods of every session handle, written once over ``run(op)``.

redis-py writes each command once (a method that builds its arguments and calls
``execute_command``), shared by its sync and async clients; httpx shares one client
base between ``Client`` and ``AsyncClient``. :class:`SessionMethods` is that layer
here: each method checks its arguments, builds the operation's message
(:mod:`dspex_actors.messages`) and hands it to ``run``, the one thing a backend
implements. ``LocalState`` asks its actor, ``BridgedState`` sends the operation's wire
form, ``RedisState`` runs its Lua script, and a ``Context`` sends writes through its
write gate to whichever backend holds the session now — so none of them can drift
from the contract, and a new operation is one method here.

A backend may answer a read before building a message when it can from memory of its
own (a LocalState's table, a bridged handle's copy): it overrides that one method
with the fast path and calls ``run`` on the slow path. Such overrides are listed,
with their measured reason, in ``tests/test_structure.py``.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar

from dspex_actors import access, failpoints
from dspex_actors.delivery import QueueSource, Source, Subscription
from dspex_actors.errors import NotSupported
from dspex_actors.exports import ExportColumns, check_shape, columns_of
from dspex_actors.messages import (
    CloseSession,
    CommitSession,
    DeleteVariable,
    Digest,
    ExportSession,
    ExportState,
    GetRecord,
    GetSession,
    GetVariable,
    GetVariables,
    HasVariable,
    Heartbeat,
    ImportState,
    ListVariables,
    OpenSession,
    Operation,
    RegisterVariable,
    Settle,
    SetVariable,
    UpdateVariables,
)
from dspex_actors.provider import StateProvider
from dspex_actors.records import Opened, VariableRecord, check_pattern
from dspex_actors.streaming import Event, Subscriber, check_subscriber

__all__ = ["READ_METHODS", "RemoteSessionMethods", "SessionMethods", "events_of", "run_on"]

R = TypeVar("R")

READ_METHODS = (
    "get_variable",
    "get_variables",
    "get_record",
    "has_variable",
    "list_variables",
    "export_state",
    "export_columns",
    "digest",
    "session_info",
)
"""The methods that only read: a Context binds its backend's own as its own."""


def run_on(provider: StateProvider, operation: Operation[R]) -> R:
    """Run ``operation`` on any provider: through its ``run`` when it has one (every
    handle of this package), else through its public methods."""
    if isinstance(provider, SessionMethods):
        return provider.run(operation)
    return operation.forward(provider)


def events_of(provider: StateProvider, pattern: str | None, start: int | None) -> Source[Event]:
    """``provider``'s change events as a source: its own when it is one of this
    package's handles, else its ``subscribe`` feeding a bounded queue."""
    if isinstance(provider, SessionMethods):
        return provider.events(pattern, start)
    return QueueSource(provider, pattern, start)


class SessionMethods(StateProvider):
    """Every StateProvider method, over one abstract :meth:`run`; and Pythonic access
    over them (items, ``v``, ``batch()``, ``variable()``: :mod:`dspex_actors.access`)."""

    __slots__ = ()

    @abc.abstractmethod
    def run(self, operation: Operation[R]) -> R:
        """Run one operation on the session; raise its ``StateError``."""

    # -- reads ------------------------------------------------------------------------

    def get_variable(self, identifier: str) -> Any:
        return self.run(GetVariable(identifier))

    def get_variables(self, identifiers: Iterable[str]) -> dict[str, Any]:
        return self.run(GetVariables(list(identifiers)))

    def get_record(self, identifier: str) -> VariableRecord:
        return self.run(GetRecord(identifier))

    def has_variable(self, identifier: str) -> bool:
        """Whether a variable exists, by name or id."""
        return self.run(HasVariable(identifier))

    def list_variables(self, pattern: str | None = None) -> list[VariableRecord]:
        return self.run(ListVariables(check_pattern(pattern)))

    def export_state(self) -> dict[str, Any]:
        return self.run(ExportState())

    def export_columns(self) -> ExportColumns:
        """The export as columns (one list per field): the form migrations and the
        bridge move; ``sequence`` is the session's next event sequence."""
        columns = self.run(ExportSession())
        check_shape(columns)  # the caller gets columns it can index safely
        return columns

    def digest(self) -> bytes:
        """``exports.columns_digest`` of the session, without building an export."""
        return self.run(Digest())

    def session_info(self) -> dict[str, Any]:
        """The session as what keeps it sees it: ``session_id``, ``incarnation``,
        ``variable_count``, ``created_at``, ``last_active_at``, ``ttl_seconds``
        (None: never expires), ``metadata``, ``next_sequence``, ``expires_at``."""
        return self.run(GetSession())._asdict()

    # -- writes -----------------------------------------------------------------------

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
        return self.run(
            RegisterVariable(name, type, initial_value, constraints, metadata, description)
        )

    def set_variable(
        self,
        identifier: str,
        new_value: Any,
        metadata: Mapping[str, Any] | None = None,
        *,
        expected_version: int | None = None,
    ) -> int:
        return self.run(SetVariable(identifier, new_value, metadata, expected_version))

    def update_variables(
        self, updates: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
    ) -> None:
        if not isinstance(updates, Mapping):
            raise TypeError(f"updates must be a mapping, got {type(updates).__name__}")
        self.run(UpdateVariables(dict(updates), metadata))

    def delete_variable(self, identifier: str) -> None:
        self.run(DeleteVariable(identifier))

    def import_state(self, exported: Mapping[str, Any]) -> None:
        self.run(ImportState(columns_of(exported)))  # its structure checked here

    def import_columns(self, columns: ExportColumns) -> None:
        self.run(ImportState(columns))

    def import_with_digest(self, columns: ExportColumns, *, migrating: bool = False) -> bytes:
        """Import like :meth:`import_columns`; answer the digest of what the session
        then holds, computed where it is stored (to compare with
        ``exports.columns_digest(columns)``: a copy verified without exporting it
        back). ``migrating``: the copy continues the columns' event sequence and
        yields no events of its own, so a watcher moving with the session misses
        nothing."""
        continue_from = columns.sequence if migrating else None
        digest = self.run(ImportState(columns, continue_from, want_digest=True))
        failpoints.hit("migration.import_reply")  # tests lose this reply on purpose
        return digest

    # -- change events ----------------------------------------------------------------

    def events(self, pattern: str | None, start: int | None = None) -> Source[Event]:
        """The session's change events whose names match the glob ``pattern`` (None:
        all), from sequence ``start`` (None: from now), as a
        :class:`~dspex_actors.delivery.Source`; what :meth:`subscribe` delivers.
        ``NotSupported`` on a backend without streaming."""
        raise NotSupported(f"{type(self).__name__} does not support streaming")

    def subscribe(
        self, pattern: str | None, subscriber: Subscriber, *, start: int | None = None
    ) -> Subscription:
        """Deliver each change to variables whose names match ``pattern`` (a glob;
        None: all) to ``subscriber``, a callable or a Pykka actor, from a thread of
        its own (see :mod:`dspex_actors.delivery`); returns the Subscription, which
        ``unsubscribe`` (or leaving its ``with`` block) stops once it delivered what
        was written before.

        ``start`` resumes from an event sequence (past the kept history: one
        ``overflow`` event first). A write made after this returns is never missed.
        """
        glob = check_pattern(pattern)
        check_subscriber(subscriber)
        subscription = Subscription(
            self.events(glob, start),
            self.session_id,
            glob,
            subscriber,
            name=f"dspex-events-{self.session_id}",
            fence=self._next_sequence,
        )
        try:
            self._subscribed(subscription)
        except BaseException:
            subscription.close()
            raise
        return subscription

    def _subscribed(self, subscription: Subscription) -> None:
        """A subscription was made: a backend that keeps track of them (to end them
        with the handle, or to wait for its stream) does so here."""

    def _next_sequence(self) -> int:
        """The sequence the session's next event will get (what closing a
        subscription delivers up to)."""
        return int(self.run(GetSession()).next_sequence)

    def unsubscribe(self, subscription: Any) -> None:
        """Stop a subscription, first delivering the events of the writes made before
        this call (within ``delivery.DRAIN_TIMEOUT``, 5 s); no event, not even
        ``closed``, is delivered once this returns."""
        if not isinstance(subscription, Subscription):
            raise TypeError(f"not a subscription: {subscription!r}")
        subscription.close()

    # -- Pythonic access (dspex_actors.access): each form stands for a method ---------

    def __getitem__(self, name: str) -> Any:
        gathered = access.gathered(self)
        if gathered is not None and name in gathered:
            return gathered[name]
        return self.get_variable(name)

    def __setitem__(self, name: str, value: Any) -> None:
        gathered = access.gathered(self)
        if gathered is not None:
            gathered[name] = value
        else:
            self.set_variable(name, value)

    def __delitem__(self, name: str) -> None:
        access.refuse_delete_in_batch(self, name)
        self.delete_variable(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.has_variable(name)

    def __iter__(self) -> Iterator[str]:
        """The names, in creation order, as one listing read them (a snapshot)."""
        return iter([record["name"] for record in self.list_variables()])

    def __len__(self) -> int:
        return int(self.run(GetSession()).variable_count)

    def __bool__(self) -> bool:
        """A handle is true even when its session holds no variable (``len`` is 0)."""
        return True

    @property
    def v(self) -> access.Variables:
        """The variables as attributes: ``state.v.temperature``, ``state.v.temperature
        = 0.9``, ``del state.v.temperature``."""
        return access.Variables(self)

    def batch(self) -> contextlib.AbstractContextManager[dict[str, Any]]:
        """Gather this thread's item and attribute assignments into one all-or-nothing
        ``update_variables`` when the ``with`` block ends (nothing if it raises);
        yields the gathered values."""
        return access.gathering(self)

    def variable(self, name: str) -> access.Variable:
        """One variable's handle (the variable is read when its handle is used)."""
        return access.Variable(self, name)

    # -- the session ------------------------------------------------------------------

    def heartbeat(self) -> float | None:
        """Keep a session that expires when idle alive; when it would expire (epoch
        seconds), None for one that never does."""
        return self.run(Heartbeat())


class RemoteSessionMethods(SessionMethods):
    """The methods of a handle on a session a store keeps (a migration's target)."""

    __slots__ = ()

    def _open_session(self, *, create: bool, pending: bool) -> Opened:
        """Attach to the handle's session, or create it (``pending``: invisible to
        others until committed): what opening a handle does first."""
        return self.run(OpenSession(create, pending))

    def commit(self) -> None:
        """Make a session opened ``pending`` visible to others (idempotent)."""
        self.run(CommitSession())

    def settle(self, request_id: str, age: float, within: float | None = None) -> bool:
        """Whether this handle's write ``request_id``, first sent ``age`` seconds ago,
        was applied; after False it never will be. What ``OutcomeUnknown.settle``
        calls; ``OutcomeUnknown`` when the store no longer remembers that far.
        ``within``: at most this many seconds (None: the handle's timeout)."""
        return self.run(Settle(request_id, age, within))

    def close_remote(self) -> None:
        """Close this handle's incarnation of the session where it is kept, now.

        ``SessionNotFound`` if it is gone (or the id names a later incarnation)."""
        self.run(CloseSession())
