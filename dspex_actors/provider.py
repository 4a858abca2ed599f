"""The StateProvider contract every backend honours, and helpers to check a backend.

This is the Python form of DSPex's ``StateProvider`` behaviour: the provider instance
is the backend's opaque state, and errors are ``dspex_actors.errors`` exceptions
rather than ``{:error, reason}`` tuples.

Implementing a backend: subclass :class:`StateProvider`, implement every abstract
method, and prove it with ``dspex_actors.testing`` (the compliance kit). Rules every
backend keeps:

* identifiers are a variable's name or its id;
* versions start at 0 and grow by exactly 1 per successful write of that variable;
* a failing call changes nothing (``update_variables`` and ``import_state`` are
  all-or-nothing);
* after ``cleanup()`` (idempotent) every operation raises a ``StateError`` promptly.

Optional protocols let a supervisor do more with a backend, checked by shape,
never by class:

* :class:`Migratable` (seal for export, unseal, retire to a successor): a migration
  takes an exact cut and a handle kept from before the switch forwards to the new
  backend. Without it a migration exports, switches the Context, and cleans the old
  backend up; a write made on the old backend directly (not through the Context)
  during the switch is then lost.
* :class:`Restartable` (``alive``, ``restart()``): a supervisor restarts a dead
  session in place, its variables kept.
* :class:`MigrationTarget` (a pending copy: import with a digest, commit, remove):
  what a migration copies a session into.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

from dspex_actors.errors import NotSupported
from dspex_actors.exports import ExportColumns, columns_of, export_of
from dspex_actors.records import VariableRecord, variable_not_found

__all__ = [
    "CAPABILITY_KEYS",
    "REQUIRED_METHODS",
    "Migratable",
    "MigrationTarget",
    "Restartable",
    "StateProvider",
    "get_capabilities",
    "is_provider",
    "validate_provider",
]

CAPABILITY_KEYS = ("atomic_updates", "streaming", "persistence", "distribution")

REQUIRED_METHODS = (
    "init",
    "register_variable",
    "get_variable",
    "set_variable",
    "list_variables",
    "get_variables",
    "update_variables",
    "delete_variable",
    "export_state",
    "import_state",
    "requires_bridge",
    "capabilities",
    "cleanup",
)
"""The seed's required callbacks; ``subscribe``/``unsubscribe`` are optional."""


class StateProvider(abc.ABC):
    """A session's variable store. One instance is one session's handle."""

    __slots__ = ()
    session_id: str
    kind: ClassVar[str] = "custom"
    """A short name for logs and ``Context.backend_info()`` ("local", "bridged", ...)."""

    @classmethod
    @abc.abstractmethod
    def init(
        cls,
        *,
        session_id: str | None = None,
        existing_state: Mapping[str, Any] | None = None,
        **backend_opts: Any,
    ) -> Self:
        """Open a session (a fresh unguessable id when none is given).

        ``existing_state`` (an ``export_state()`` result) is imported before returning.
        """

    @abc.abstractmethod
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
        """Create a variable at version 0 and return its id.

        Raises ``VariableExists`` for a taken name and ``ValidationError`` for a bad
        type, constraint set or initial value.
        """

    @abc.abstractmethod
    def get_variable(self, identifier: str) -> Any:
        """The variable's current value; ``VariableNotFound`` if absent."""

    @abc.abstractmethod
    def set_variable(
        self,
        identifier: str,
        new_value: Any,
        metadata: Mapping[str, Any] | None = None,
        *,
        expected_version: int | None = None,
    ) -> int:
        """Validate and store a value, merge ``metadata``; return the new version.

        ``VersionConflict`` when ``expected_version`` is given and is not current.
        """

    @abc.abstractmethod
    def list_variables(self, pattern: str | None = None) -> list[VariableRecord]:
        """Every variable's record, in creation order; with ``pattern``, only those
        whose names match the glob (``fnmatch.fnmatchcase``: ``*``, ``?``,
        ``[abc]``, ``[!abc]``, case-sensitive, the whole name). ``ValidationError``
        (rule ``pattern``) for a pattern that is not a string.

        Each entry is a :class:`~dspex_actors.records.VariableRecord` (a dict of the
        nine ``RECORD_KEYS``; ``VariableRecord.from_dict`` builds one), equal to what
        ``get_record`` answers for that variable at that moment."""

    def get_record(self, identifier: str) -> VariableRecord:
        """One variable's :class:`~dspex_actors.records.VariableRecord` (value and
        version from one moment), by name or id; ``VariableNotFound`` if absent.

        This default scans ``list_variables()``; backends answer it directly.
        """
        if isinstance(identifier, str):
            for record in self.list_variables():
                if identifier in (record["name"], record["id"]):
                    return VariableRecord.from_dict(record)
        raise variable_not_found(identifier, self.session_id)

    @abc.abstractmethod
    def get_variables(self, identifiers: Iterable[str]) -> dict[str, Any]:
        """Values keyed by identifier as given; missing ones are skipped.

        The values come from one consistent moment: never half of a batch.
        """

    @abc.abstractmethod
    def update_variables(
        self, updates: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
    ) -> None:
        """Set several variables all or nothing.

        Every entry is validated first; if any fails (an unknown identifier included),
        ``PartialFailure`` is raised with ``.errors`` and no variable changes.
        """

    @abc.abstractmethod
    def delete_variable(self, identifier: str) -> None:
        """Remove a variable; ``VariableNotFound`` if absent."""

    @abc.abstractmethod
    def export_state(self) -> dict[str, Any]:
        """The whole session as plain data (msgpack-encodable).

        Keys: ``session_id``, ``variables`` (id -> record), ``variable_index``
        (name -> id), ``metadata``.
        """

    @abc.abstractmethod
    def import_state(self, exported: Mapping[str, Any]) -> None:
        """Add an export's variables, keeping ids, versions and timestamps.

        Everything is validated before anything is applied; a bad export raises
        ``InvalidExport`` or ``ValidationError`` and changes nothing.
        """

    def _seeded(self, existing_state: Mapping[str, Any] | None) -> Self:
        """This fresh handle with ``existing_state`` imported (what ``init`` promises);
        if the import fails, the handle is cleaned up and the error raised."""
        if existing_state is not None:
            try:
                self.import_state(existing_state)
            except BaseException:
                self.cleanup()
                raise
        return self

    def export_columns(self) -> ExportColumns:
        """The export as :class:`~dspex_actors.exports.ExportColumns` (one list per
        field): the form migrations and the bridge move. Backends may build it
        directly; this default converts :meth:`export_state`."""
        return columns_of(self.export_state())

    def import_columns(self, columns: ExportColumns) -> None:
        """:meth:`import_state` from columns, with the same checks and the same
        all-or-nothing rule. Backends may import them directly; this default
        converts them to an export map."""
        self.import_state(export_of(columns))

    @classmethod
    @abc.abstractmethod
    def requires_bridge(cls) -> bool:
        """Whether this backend needs the gRPC bridge."""

    @classmethod
    @abc.abstractmethod
    def capabilities(cls) -> dict[str, bool]:
        """Flags ``atomic_updates streaming persistence distribution``."""

    @abc.abstractmethod
    def cleanup(self) -> None:
        """Release the session's resources; idempotent."""

    def close(self) -> None:
        """The same as :meth:`cleanup`, under the name files, sockets and redis-py's
        clients use; idempotent."""
        self.cleanup()

    def heartbeat(self) -> float | None:
        """Keep a session that expires when idle alive; return when it would expire
        (epoch seconds), or None for a session that never expires (the default)."""
        return None

    def subscribe(self, pattern: str | None, subscriber: Any) -> Any:
        """Tell ``subscriber`` (a callable or a Pykka actor) of each change to the
        variables whose names match the glob ``pattern``, as
        :class:`~dspex_actors.streaming.Event` objects; return a subscription (a
        context manager). Events come in sequence order, never from the session's
        own turn, and a subscriber that falls behind gets one ``overflow`` event.

        Optional: a backend without streaming raises ``NotSupported``.
        """
        raise NotSupported(
            f"{type(self).__name__} does not support streaming (subscribe {pattern!r})"
        )

    def unsubscribe(self, subscription: Any) -> None:
        """Cancel a subscription made by :meth:`subscribe`: first deliver the events of
        the writes made before this call, then stop; nothing, not even ``closed``, is
        delivered once it returns (leaving the subscription's ``with`` block alike)."""
        raise NotSupported(f"{type(self).__name__} does not support streaming")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()


@runtime_checkable
class Migratable(Protocol):
    """A backend that can hand its session over exactly (see the module docstring)."""

    def seal(self) -> ExportColumns:
        """Refuse writes from now on and return the session's columns: the cut.

        Writes that meet the seal wait for ``retire`` or ``unseal``; they are never
        lost and never applied twice.
        """
        ...

    def unseal(self) -> None:
        """The migration failed: accept writes again."""
        ...

    def retire(self, successor: StateProvider) -> None:
        """The migration succeeded: release the session and forward every call,
        waiting writes included, to ``successor``."""
        ...


class MigrationTarget(Protocol):
    """Where a migration copies a session: a backend opened ``pending`` (invisible to
    others until committed), as BridgedState and RedisState are."""

    def import_with_digest(self, columns: ExportColumns, *, migrating: bool = False) -> bytes:
        """Import ``columns`` (``migrating``: continuing their event sequence, quietly);
        answer the digest of what was stored, to compare with the export's."""
        ...

    def commit(self) -> None:
        """Make the copy visible: it is the session from now on."""
        ...

    def close_remote(self) -> None:
        """Delete the half-made copy where it lives (a failed migration)."""
        ...

    def cleanup(self) -> None:
        """Let go of the handle."""
        ...


@runtime_checkable
class Restartable(Protocol):
    """A backend whose session a supervisor can restart in place."""

    @property
    def alive(self) -> bool:
        """Whether the session serves calls now."""
        ...

    def restart(self) -> None:
        """Bring a dead session back with its variables; a no-op when alive."""
        ...


def is_provider(cls: object) -> bool:
    """True when ``cls`` is a StateProvider class (a subclass, not an instance)."""
    return isinstance(cls, type) and issubclass(cls, StateProvider)


def get_capabilities(cls: object) -> dict[str, bool]:
    """The capabilities of a provider class; ``TypeError`` for anything else."""
    if not is_provider(cls):
        raise TypeError(f"{cls!r} is not a StateProvider")
    assert isinstance(cls, type) and issubclass(cls, StateProvider)
    return dict(cls.capabilities())


def validate_provider(cls: object) -> None:
    """Check that ``cls`` implements every required method.

    Raises ``TypeError`` naming every missing (or still abstract) method.
    """
    if not isinstance(cls, type):
        raise TypeError(f"{cls!r} is not a class, so it cannot be a StateProvider")
    abstract: frozenset[str] = getattr(cls, "__abstractmethods__", frozenset())
    missing = [
        name
        for name in REQUIRED_METHODS
        if not callable(getattr(cls, name, None)) or name in abstract
    ]
    if missing:
        raise TypeError(
            f"{cls.__qualname__} is missing required StateProvider methods: " + ", ".join(missing)
        )
    if not issubclass(cls, StateProvider):
        raise TypeError(f"{cls.__qualname__} does not subclass dspex_actors.StateProvider")
