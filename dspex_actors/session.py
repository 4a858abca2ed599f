"""SessionActor: the one owner of a session's variables, versions and validation.

The actor (a Pykka ``ThreadingActor``, the Elixir Agent's counterpart) applies every
write in its own thread, one message at a time, so writes are serialized and
versioned in one place. LocalState talks to it in-process; the SessionStore server
keeps one per session behind gRPC.

Reads do not need a round trip. The actor publishes its variables in a
:class:`SessionTable` — like an ETS table with read concurrency owned by a GenServer:
only the actor thread writes it, any thread may read it. Records are immutable
tuples replaced whole, and the table carries a sequence counter (a seqlock): the
actor makes it odd before changing the table and even after. A reader that sees the
same even number before and after its lookups has read one consistent moment, never
half of an atomic batch; otherwise it asks the actor, whose turn comes after the
batch. Because the actor publishes before it replies, a caller returning from a
write always reads that write. A closed table's counter is -1 (odd) forever, so
every fast read falls through to the slow path, which reports the closure.

The table outlives its actor: a supervisor can start a new actor on the same table
(the ETS "heir" idea) and the session keeps its variables across a restart. Only the
table's writer changes it: its running actor, or, once no actor runs on it, the
handle that owns it (which may only close it).
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any, NamedTuple, Protocol, TypeVar

import pykka

from dspex_actors import vartypes
from dspex_actors.bulk import BULK_ITEMS, gc_paused
from dspex_actors.errors import (
    InvalidExport,
    PartialFailure,
    SessionClosed,
    StateError,
    ValidationError,
    VariableExists,
    VariableNotFound,
    VersionConflict,
)
from dspex_actors.exports import ExportColumns, check_shape, columns_digest, first_repeat
from dspex_actors.limits import (
    DEFAULT_LIMITS,
    Limits,
    check_batch_size,
    check_metadata_size,
    check_variable_count,
)
from dspex_actors.messages import Control, Deliver, ReadOperation, WriteOperation
from dspex_actors.records import VariableRecord, name_matches, variable_not_found
from dspex_actors.streaming import DEFAULT_HISTORY, Event, EventKind, EventLog
from dspex_actors.vartypes import (
    MAX_VERSION,
    Validator,
    all_of_type,
    check_metadata,
    describe_value,
    plain_copy,
    sized_metadata,
)

__all__ = [
    "CLOSED",
    "MISSED",
    "SEALED",
    "ExitHook",
    "Journal",
    "Record",
    "Sealed",
    "SessionActor",
    "SessionTable",
    "new_session_id",
    "records_from_columns",
    "variable_not_found",
]

logger = logging.getLogger(__name__)

CLOSED = -1
"""The sequence number of a closed table (odd, so readers always take the slow path)."""

LOCK_FREE_READS: bool = getattr(sys, "_is_gil_enabled", lambda: True)()
"""The seqlock relies on the GIL's ordering of plain attribute writes. On a
free-threaded interpreter a table's sequence number starts odd and stays odd
(writers add 2), so every read goes through the actor instead."""

_SEQ_STEP = 1 if LOCK_FREE_READS else 2


class Missed:
    """A table read that met a write in progress (or a closed table): ask the actor."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSED"


MISSED = Missed()

_T = TypeVar("_T")


def new_session_id() -> str:
    """An unguessable session id (122 random bits)."""
    return f"sess_{uuid.uuid4().hex}"


def _new_var_id() -> str:
    return f"var_{uuid.uuid4().hex}"


class Record(NamedTuple):
    """One variable at one version; never mutated once published."""

    id: str
    name: str
    value: Any
    version: int
    metadata: dict[str, Any]
    created_at: float
    last_updated_at: float
    validator: Validator
    thaw: Callable[[Any], Any] | None  # validator.thaw, at hand: a read's one lookup

    def read_value(self) -> Any:
        """The value as the caller receives it: a fresh copy when it is not a scalar."""
        thaw = self.thaw
        return self.value if thaw is None else thaw(self.value)

    def public(self) -> VariableRecord:
        """The record as callers receive it: a VariableRecord of fresh copies."""
        return VariableRecord(
            self.id,
            self.name,
            self.validator.type,
            self.read_value(),
            plain_copy(self.validator.constraints),
            plain_copy(self.metadata),
            self.version,
            self.created_at,
            self.last_updated_at,
        )

    def to_dict(self) -> dict[str, Any]:
        """The record as plain data: a fresh copy the caller may keep."""
        return {
            "id": self.id,
            "name": self.name,
            "type": self.validator.type,
            "value": self.read_value(),
            "constraints": plain_copy(self.validator.constraints),
            "metadata": plain_copy(self.metadata),
            "version": self.version,
            "created_at": self.created_at,
            "last_updated_at": self.last_updated_at,
        }


class Journal(Protocol):
    """Where a durable store records each change before the session publishes it.

    ``write`` runs in the session actor's turn, before the table changes: it must
    make the change durable (one transaction) or raise a ``StateError``, and then
    the change is not applied. ``upserts`` are whole records (their validator holds
    the type and constraints); ``next_event`` is the session's event count after
    the change.
    """

    def write(
        self,
        session_id: str,
        upserts: Sequence[Record],
        removed: Sequence[Record],
        metadata: dict[str, Any] | None,
        next_event: int,
    ) -> None: ...


class SessionTable:
    """A session's published variables: written by its writer only, read by anyone.

    The writer is the session's running actor, or, when no actor runs on it, the
    handle that owns it, which may only :meth:`close` it. ``index`` maps both names
    and ids to records; ``by_id`` keeps creation order. ``next_event`` counts the
    session's change events (always, so sequences stay true); ``events`` is their
    log, kept from the first subscriber on.
    """

    __slots__ = (
        "by_id",
        "events",
        "index",
        "journal",
        "metadata",
        "next_event",
        "seq",
        "session_id",
    )

    def __init__(self, session_id: str, journal: Journal | None = None) -> None:
        self.session_id = session_id
        self.seq = 0 if LOCK_FREE_READS else 1
        self.index: dict[str, Record] = {}
        self.by_id: dict[str, Record] = {}
        self.metadata: dict[str, Any] = {}
        self.next_event = 1
        self.events: EventLog | None = None
        self.journal = journal

    @property
    def closed(self) -> bool:
        return self.seq == CLOSED

    def close(self) -> None:
        """Mark the table closed for good: every fast read then takes the slow path,
        which reports the closure (or, on a retired handle, forwards). Its event
        log, if any, closes too."""
        self.seq = CLOSED
        if self.events is not None:
            self.events.close()

    def read(self, message: ReadOperation[_T]) -> _T | Missed:
        """``message`` answered from the table if no write overlapped it, else
        :data:`MISSED` (ask the actor). An error it raises counts only if no write
        overlapped it either."""
        seq = self.seq
        if seq & 1:
            return MISSED
        try:
            result = message.apply(self)
        except StateError:
            if self.seq == seq:
                raise
            return MISSED
        return result if self.seq == seq else MISSED

    # -- Reads: what read operations run on, lock-free or in the actor's turn --

    def get(self, identifier: str) -> Any:
        """The value as the caller receives it (``VariableNotFound`` if absent)."""
        return self.lookup(identifier).read_value()

    def get_many(self, identifiers: list[str]) -> dict[str, Any]:
        return self.values(identifiers)

    def get_record(self, identifier: str) -> VariableRecord:
        return self.lookup(identifier).public()

    def get_versioned(self, identifier: str) -> tuple[Any, int]:
        record = self.lookup(identifier)
        return record.read_value(), record.version

    def lookup(self, identifier: str) -> Record:
        """The record by name or id; ``VariableNotFound`` if absent."""
        record = self.index.get(identifier) if isinstance(identifier, str) else None
        if record is None:
            raise self.missing(identifier)
        return record

    def missing(self, identifier: Any) -> VariableNotFound:
        """The error for an identifier that names no variable."""
        return variable_not_found(identifier, self.session_id)

    def values(self, identifiers: Iterable[str]) -> dict[str, Any]:
        """Values of the identifiers present, keyed as given."""
        index = self.index
        out = {}
        for identifier in identifiers:
            record = index.get(identifier) if isinstance(identifier, str) else None
            if record is not None:
                out[identifier] = record.read_value()
        return out

    def export(self) -> dict[str, Any]:
        """The whole session as plain data (see StateProvider.export_state).

        Takes its snapshot in one step (``list`` of the values runs in C under the
        GIL) before the Python-level copying, so a writer cannot change the dict
        under it; readers outside the actor still check the seqlock around it.
        """
        snapshot = list(self.by_id.values())
        metadata = self.metadata
        with gc_paused(len(snapshot) >= BULK_ITEMS):
            records = [record.to_dict() for record in snapshot]
        return {
            "session_id": self.session_id,
            "variables": {r["id"]: r for r in records},
            "variable_index": {r["name"]: r["id"] for r in records},
            "metadata": plain_copy(metadata),
        }

    def listing(self, pattern: str | None = None) -> list[dict[str, Any]]:
        """The records whose names match ``pattern`` (a glob; None: all) as plain
        data, in creation order (snapshotted in one step)."""
        return [
            record.to_dict()
            for record in list(self.by_id.values())
            if pattern is None or name_matches(record.name, pattern)
        ]

    def columns(self, copies: bool = True) -> ExportColumns:
        """The variables as :class:`ExportColumns`, in creation order, without a dict
        per variable. Values are always fresh copies; constraints and metadata are
        too, unless ``copies`` is False: then they are the records' own (and the
        constraints shared with other sessions), for columns that are only packed
        or hashed."""
        records = list(self.by_id.values())
        with gc_paused(len(records) >= BULK_ITEMS):
            return _columns_of_records(
                self.session_id, self.metadata, records, plain_copy if copies else _same
            )._replace(sequence=self.next_event)

    def digest(self) -> bytes:
        """:func:`~dspex_actors.exports.columns_digest` of the current variables."""
        return columns_digest(self.columns(copies=False))


def _same(data: Any) -> Any:
    return data


def _events(
    session_id: str, first: int, kind: EventKind, records: Sequence[Record]
) -> list[Event]:
    """The events of one publish: one per record, numbered from ``first`` (built
    from tuples in C: an import makes one per variable in the actor's turn)."""
    if kind == "deleted":
        now = time.time()
        return [
            _new_event((session_id, first + n, kind, r.id, r.name, None, r.version, None, now))
            for n, r in enumerate(records)
        ]
    return [
        _new_event(
            (
                session_id,
                first + n,
                kind,
                r.id,
                r.name,
                r.value if r.thaw is None else r.thaw(r.value),
                r.version,
                # A copy: a subscriber must not reach the table's own dict.
                plain_copy(r.metadata) if r.metadata else {},
                r.last_updated_at,
            )
        )
        for n, r in enumerate(records)
    ]


_new_event: Callable[[tuple[Any, ...]], Event] = partial(tuple.__new__, Event)


def _columns_of_records(
    session_id: str, metadata: dict[str, Any], records: list[Record], copy: Callable[[Any], Any]
) -> ExportColumns:
    validators = [r.validator for r in records]
    keys = list(map(id, validators))  # one Validator per definition: alike by identity
    slots = {key: slot for slot, key in enumerate(dict.fromkeys(keys))}
    chosen = dict(zip(keys, validators, strict=True))
    return ExportColumns(
        session_id,
        copy(metadata),
        [r.id for r in records],
        [r.name for r in records],
        [(chosen[key].type, copy(chosen[key].constraints)) for key in slots],
        list(map(slots.__getitem__, keys)),
        [r.read_value() for r in records],
        [r.version for r in records],
        [r.created_at for r in records],
        [r.last_updated_at for r in records],
        [copy(r.metadata) if r.metadata else {} for r in records],
    )


_new_record: Callable[[tuple[Any, ...]], Record] = partial(tuple.__new__, Record)
"""A Record from a tuple of its fields, built in C (``_make`` is several times slower)."""


ExitHook = Callable[[str, BaseException | None], None]
"""Called with (session_id, error) when an actor stops without being asked to: a
crash (the error) or an external ``actor_ref.stop()`` (None). A stop the handle asked
for (close, retire) is not reported: there is nothing to restart."""


class Sealed:
    """The answer to a write that met a migration's seal: not applied, and not an error.

    The handle waits for the migration's outcome and sends the write again, to the
    successor or to this actor once unsealed; no exception carries that signal.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "SEALED"


SEALED = Sealed()

Message = ReadOperation[Any] | WriteOperation[Any] | Control[Any] | Deliver[Any]
"""What a session actor accepts."""


class SessionActor(pykka.ThreadingActor):
    """Owns one session's variables; every operation is one typed message, one turn.

    Messages are :mod:`dspex_actors.messages` objects; each applies itself through
    this actor's typed methods (:class:`~dspex_actors.messages.SessionOps`). A
    request that breaks a rule is answered with the ``StateError`` instance (the
    handle raises it in the caller's thread, with the caller's traceback). Any other
    exception is a bug: the actor answers it as a ``StateError``, refuses everything
    after it, and stops (through Pykka's public ``stop``), so a supervisor restarts
    a fresh actor on the same table.

    States: open; sealed (writes answered :data:`SEALED`, a migration is taking its
    cut); closed (everything answered ``SessionClosed``).
    """

    # Daemon thread: a program that forgets cleanup() must still be able to exit.
    # The actor holds nothing that must be flushed on the way out.
    use_daemon_thread = True

    @staticmethod
    def _create_actor_inbox() -> Any:  # pykka's ActorInbox protocol (a private type)
        # Pykka's documented hook "for implementors of new actor types". SimpleQueue
        # is the lighter C queue: against ThreadingActor's queue.Queue it takes
        # set_variable from 1.24x to 1.11x a bare Pykka ask (python -m benchmarks
        # local, pinned, two runs each). Unbounded on purpose: every message but the
        # stop request is an ask whose sender blocks for the reply, so the inbox
        # never holds more messages than there are threads calling this session
        # (+1 stop).
        inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        return inbox

    def __init__(
        self,
        table: SessionTable,
        on_exit: ExitHook | None = None,
        crashed: threading.Event | None = None,
        limits: Limits = DEFAULT_LIMITS,
        history: int = DEFAULT_HISTORY,
    ) -> None:
        super().__init__()
        self.table = table
        self.limits = limits
        self.history = history
        self._on_exit = on_exit
        # Set the moment a bug is met, before the stop request is even queued, so the
        # handle's ``alive`` turns False at once and a supervisor restarts promptly.
        self._crashed = crashed if crashed is not None else threading.Event()
        self._crash: BaseException | None = None
        self._sealed = False
        self._closed_error: Callable[[], StateError] | None = None  # set once closed
        self._stop_requested = False
        # A turn that crashed half way leaves seq odd; a new actor on the same table
        # starts from an even number so readers trust it again.
        if LOCK_FREE_READS and table.seq != CLOSED and table.seq & 1:
            table.seq += _SEQ_STEP

    # -- pykka hooks -------------------------------------------------------------

    def on_receive(self, message: Message) -> Any:
        if isinstance(message, Deliver):  # first: its answer goes to its reply, even
            return self._deliver(message)  # when that answer is that the session closed
        if self._closed_error is not None:
            return self._closed_error()  # a fresh error each time: callers raise it
        try:
            if isinstance(message, ReadOperation):  # a reader met a write in progress
                return message.apply(self.table)
            if isinstance(message, WriteOperation | Control):
                if self._sealed and message.write:
                    return SEALED
                return message.apply(self)
        except StateError as exc:
            return exc
        except Exception as exc:
            return self._fail(message, exc)
        # Not a dspex_actors message: the sender's bug, not ours.
        return StateError(f"session actor got {type(message).__name__}, not a message")

    def _deliver(self, delivery: Deliver[Any]) -> None:
        """Run a delivered message unless its sender took it back; hand over the answer."""
        try:
            delivery.claim.pop()
        except IndexError:
            return  # the sender's deadline passed first: it never runs
        delivery.reply(self.on_receive(delivery.message))

    def _fail(self, message: object, exc: Exception) -> StateError:
        """A bug, not a rule broken by the caller: crash like an Erlang process.

        The caller hears of it as a StateError; whatever is queued behind is refused
        (``SessionClosed``: not applied); the actor stops through Pykka's public
        ``stop()``, and ``on_stop`` reports the crash to the supervisor.
        """
        session_id = self.table.session_id
        logger.error("session %s: actor crashed: %r", session_id, exc, exc_info=True)
        self._crash = exc
        self._crashed.set()
        self._closed_error = lambda: SessionClosed(
            f"session {session_id!r}: its actor crashed and is being restarted",
            session_id=session_id,
        )
        self.stop()
        error = StateError(
            f"session {session_id!r}: the actor crashed handling {type(message).__name__}: {exc!r}"
        )
        error.__cause__ = exc
        return error

    def on_stop(self) -> None:
        if not self._stop_requested:
            self._report_exit(self._crash)

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        # Only a failure in pykka's own machinery gets here (on_receive catches all).
        self._report_exit(exception_value)

    def _report_exit(self, error: BaseException | None) -> None:
        hook, self._on_exit = self._on_exit, None
        if hook is not None:
            hook(self.table.session_id, error)

    # -- writes --------------------------------------------------------------------

    def _publish(
        self,
        kind: EventKind,
        records: Sequence[Record],
        removed: Sequence[Record] = (),
        metadata: dict[str, Any] | None = None,
        quiet: bool = False,
    ) -> None:
        """Swap records (and session metadata) into the table in one seqlock window,
        and log their change events (``kind``) together, unless ``quiet``. A durable
        store's journal records the change first; if it cannot, nothing changes."""
        table = self.table
        if table.journal is not None:
            after = table.next_event + (0 if quiet else len(records) + len(removed))
            table.journal.write(table.session_id, records, removed, metadata, after)
        index = table.index
        by_id = table.by_id
        table.seq += _SEQ_STEP
        for record in removed:
            del index[record.name], index[record.id], by_id[record.id]
        for record in records:
            index[record.name] = index[record.id] = by_id[record.id] = record
        if metadata is not None:
            # Replaced, never mutated: a reader may be copying the old dict.
            table.metadata = metadata
        table.seq += _SEQ_STEP
        if quiet:
            return
        first = table.next_event
        table.next_event = first + len(records) + len(removed)
        log = table.events
        if log is not None:
            log.append(_events(table.session_id, first, kind, records or removed))

    def register(
        self,
        name: Any,
        type_name: Any,
        initial_value: Any,
        constraints: Any,
        metadata: Any,
        description: Any,
    ) -> str:
        vartypes.check_name(name)
        table = self.table
        if name in table.index:
            raise VariableExists(
                f"variable {name!r} already exists in session {table.session_id!r}",
                variable=name,
            )
        limits = self.limits
        check_variable_count(table.session_id, len(table.by_id), 1, limits)
        validator = vartypes.compile_type(name, type_name, constraints, limits)
        value = validator.check(name, initial_value)
        meta = check_metadata(name, metadata, limits)
        if vartypes.check_description(name, description) is not None:
            meta["description"] = description
            check_metadata_size(name, meta, limits)
        now = time.time()
        record = Record(_new_var_id(), name, value, 0, meta, now, now, validator, validator.thaw)
        self._publish("registered", (record,))
        return record.id

    @staticmethod
    def _next(record: Record, value: Any, meta: dict[str, Any] | None, now: float) -> Record:
        """The record's next version (built directly: ``_replace`` is several times slower)."""
        return _new_record(
            (
                record.id,
                record.name,
                value,
                record.version + 1,
                record.metadata if not meta else {**record.metadata, **meta},
                record.created_at,
                now,
                record.validator,
                record.thaw,
            )
        )

    def set_value(
        self, identifier: str, value: Any, metadata: Any, expected_version: int | None
    ) -> int:
        record = self.table.lookup(identifier)
        vartypes.check_expected_version(record.name, expected_version)
        if expected_version is not None and expected_version != record.version:
            raise VersionConflict(
                f"variable {record.name!r}: expected version {expected_version!r} "
                f"but it is at version {record.version}",
                variable=record.name,
                expected=expected_version,
                actual=record.version,
            )
        checked = record.validator.check(record.name, value)
        meta = None
        if metadata is not None:
            meta = check_metadata(record.name, metadata, self.limits)
            if meta and record.metadata:  # the merged map must fit as well as each part
                check_metadata_size(record.name, {**record.metadata, **meta}, self.limits)
        updated = self._next(record, checked, meta, time.time())
        self._publish("updated", (updated,))
        return updated.version

    def update(self, updates: Mapping[str, Any], metadata: Any) -> None:
        """All or nothing: validate every entry, then publish all in one window.

        The loop is the batch's whole cost, so it is kept lean: one dict lookup and
        one check per entry, the error paths only on failure.
        """
        table = self.table
        lookup = table.index.get
        errors: dict[str, StateError] = {}
        staged: dict[str, tuple[Record, Any]] = {}
        for identifier, new_value in updates.items():
            try:
                record = lookup(identifier)
            except TypeError:  # unhashable: no such variable
                record = None
            if record is None or not isinstance(identifier, str):
                errors[str(identifier)] = table.missing(identifier)
                continue
            var_id = record.id
            if var_id in staged:
                errors[str(identifier)] = ValidationError(
                    f"variable {record.name!r} appears twice in one batch "
                    f"(rule 'unique', value {describe_value(identifier)})",
                    variable=record.name,
                    rule="unique",
                    value=identifier,
                )
                continue
            try:
                staged[var_id] = (record, record.validator.check(record.name, new_value))
            except StateError as exc:
                errors[identifier] = exc
        meta = None
        meta_size = 0
        if metadata is not None:
            try:
                meta, meta_size = sized_metadata("<batch>", metadata, self.limits)
                if meta:
                    for record, _ in staged.values():
                        if record.metadata:
                            check_metadata_size(
                                record.name, {**record.metadata, **meta}, self.limits
                            )
            except StateError as exc:
                errors["<metadata>"] = exc
        if errors:
            raise PartialFailure.for_batch(errors, len(updates))
        check_batch_size(
            "<batch>",
            list(updates),
            [value for _, value in staged.values()],
            self.limits,
            extra_bytes=meta_size,
        )
        now = time.time()
        if meta:
            changed = [self._next(record, value, meta, now) for record, value in staged.values()]
        else:  # the common batch: the records' next versions, built inline
            new = _new_record
            changed = [
                new(
                    (
                        r.id,
                        r.name,
                        v,
                        r.version + 1,
                        r.metadata,
                        r.created_at,
                        now,
                        r.validator,
                        r.thaw,
                    )
                )
                for r, v in staged.values()
            ]
        self._publish("updated", changed)

    def delete(self, identifier: str) -> None:
        record = self.table.lookup(identifier)
        self._publish("deleted", (), removed=(record,))

    def import_columns(self, columns: ExportColumns, continue_from: int | None = None) -> int:
        """Check a whole export, then publish it in one window; returns the count.

        With ``continue_from`` (a migration's copy of a session) the import yields no
        events and the session's event count continues from that number.
        """
        check_shape(columns)
        check_variable_count(
            self.table.session_id, len(self.table.by_id), columns.variable_count, self.limits
        )
        with gc_paused(columns.variable_count >= BULK_ITEMS):
            records = records_from_columns(columns, self.table, self.limits)
        session_meta = check_metadata("<session>", columns.metadata, self.limits)
        quiet = continue_from is not None
        self._publish(
            "registered", records, metadata={**self.table.metadata, **session_meta}, quiet=quiet
        )
        if continue_from is not None:
            table = self.table
            table.next_event = max(table.next_event, continue_from)
            if table.events is not None:
                table.events.skip_to(table.next_event)
        return len(records)

    def open_events(self) -> EventLog:
        """The session's event log, started now if nobody subscribed before."""
        table = self.table
        if table.events is None:
            table.events = EventLog(table.session_id, table.next_event, self.history)
        return table.events

    # -- lifecycle -----------------------------------------------------------------

    def seal(self) -> ExportColumns:
        """Refuse writes from now on and return the export's columns: a migration's
        exact cut."""
        if self._sealed:
            raise StateError(f"session {self.table.session_id!r} is already sealed")
        self._sealed = True
        # Without copies: the columns only travel to the migration, which packs them.
        return self.table.columns(copies=False)

    def unseal(self) -> None:
        """Accept writes again (a migration failed)."""
        self._sealed = False

    def retire(self) -> None:
        """The session moved on: close the table; the handle forwards from now on."""
        self._shut(f"session {self.table.session_id!r} moved to another backend")

    def close(self) -> None:
        # Marks the table in this turn, after every write queued before it; the
        # handle then sends the stop request. Anything queued behind is refused.
        self._shut(f"session {self.table.session_id!r} is closed")

    def _shut(self, why: str) -> None:
        session_id = self.table.session_id
        self.table.close()
        self._stop_requested = True
        self._closed_error = lambda: SessionClosed(why, session_id=session_id)

    def crash(self, reason: str) -> None:
        """Fail on purpose (tests and supervisors exercise restarts with it)."""
        raise RuntimeError(reason)


def records_from_columns(
    columns: ExportColumns, table: SessionTable, limits: Limits = DEFAULT_LIMITS
) -> list[Record]:
    """Records for every variable of well-shaped columns (see ``check_shape``), all
    checked before any is built.

    Raises ``InvalidExport`` for a malformed export (a version or timestamp out of
    range, a NaN or infinite timestamp included), ``ValidationError`` for a bad name,
    definition or value, ``VariableExists`` for a clash with ``table``, and
    ``LimitExceeded`` for a value, metadata map or constraints over ``limits``, or
    for a whole import over ``max_message_bytes`` (measured as the bridge's columns
    carry it, so what imports here can migrate). Each rule runs over a whole column;
    only when it fails does a per-variable scan find the first offender to name.
    Each definition is compiled once, for the first variable that uses it.
    """
    from dspex_actors.limits import NUMBER_BYTES, array_header_size, check_columns_size

    ids, names, slots = columns.ids, columns.names, columns.definition
    count = len(ids)
    if not (all_of_type(ids, str) and all(ids)):
        bad = next(i for i in ids if type(i) is not str or not i)
        raise InvalidExport(f"export variable id {describe_value(bad)} is not a string")
    vartypes.check_names(names)
    _check_unique(ids, names, table)
    versions = columns.versions
    if not all_of_type(versions, int) or (
        versions and (min(versions) < 0 or max(versions) > MAX_VERSION)
    ):
        name, bad = next(
            (n, v)
            for n, v in zip(names, versions, strict=True)
            if type(v) is not int or not 0 <= v <= MAX_VERSION
        )
        raise InvalidExport(
            f"export variable {name!r}: version {describe_value(bad)} "
            f"is not a version number (0 to {MAX_VERSION})"
        )
    created = _timestamps(names, columns.created_at, "created_at")
    updated = _timestamps(names, columns.last_updated_at, "last_updated_at")
    definitions = columns.definitions
    first_user = dict(zip(reversed(slots), range(count - 1, -1, -1), strict=True))
    compiled = {
        slot: vartypes.compile_type(names[first_user[slot]], *definitions[slot], limits)
        for slot in sorted(first_user, key=first_user.__getitem__)
    }
    validators = list(map(compiled.__getitem__, slots))
    values = [
        v.check(name, value)
        for v, name, value in zip(validators, names, columns.values, strict=True)
    ]
    sized = [
        vartypes.sized_metadata(name, meta, limits)
        for name, meta in zip(names, columns.variable_metadata, strict=True)
    ]
    metadata = [meta for meta, _ in sized]
    session_metadata_bytes = vartypes.sized_metadata("<session>", columns.metadata, limits)[1]
    check_columns_size(
        "<import>",
        f"the import of {count} variables",
        (
            ids,
            names,
            [v.type for v in compiled.values()],
            [v.constraints for v in compiled.values()],
            values,
        ),
        limits,
        extra_bytes=(
            3 * NUMBER_BYTES * count  # version, created_at, last_updated_at
            + array_header_size(count)
            + sum(size for _, size in sized)
            + session_metadata_bytes
        ),
    )
    return list(
        map(
            _new_record,
            zip(
                *(ids, names, values, versions, metadata, created, updated, validators),
                [v.thaw for v in validators],
                strict=True,
            ),
        )
    )


def _check_unique(ids: list[str], names: list[str], table: SessionTable) -> None:
    """Ids and names each once, never one as the other, and new to ``table``."""
    distinct_ids, distinct_names = set(ids), set(names)
    for kind, listed, distinct in (("id", ids, distinct_ids), ("name", names, distinct_names)):
        if len(distinct) != len(listed):
            raise InvalidExport(f"export lists variable {kind} {first_repeat(listed)!r} twice")
    if not distinct_ids.isdisjoint(distinct_names):
        raise InvalidExport("export uses a variable id that is also a variable name")
    held = table.index.keys()
    for key in (held & distinct_names) or (held & distinct_ids):
        existing = table.index[key]
        raise VariableExists(
            f"variable {key!r} already exists in session {table.session_id!r} "
            f"(as {'name' if existing.name == key else 'id'} of {existing.name!r})",
            variable=key,
        )


def _timestamps(names: list[str], stamps: list[Any], key: str) -> list[float]:
    """The column as floats (ints are converted); ``InvalidExport`` names the variable
    and the field of a stamp that is not a finite number (NaN or ±inf would order and
    compare wrongly in every later read of the session).

    The common column, all finite floats, is checked in C: the sum of finite floats
    minus itself is 0.0, and NaN or inf anywhere makes it NaN (a sum that overflows
    only sends the column to the per-stamp scan, which decides exactly).
    """
    if all_of_type(stamps, float):
        total = sum(stamps)
        if total - total == 0.0:
            return stamps
    from math import isfinite  # the rare path only: a column that is not all finite floats

    out = []
    for name, stamp in zip(names, stamps, strict=True):
        if isinstance(stamp, int | float) and not isinstance(stamp, bool):
            try:
                number = float(stamp)
            except OverflowError:
                pass
            else:
                if isfinite(number):
                    out.append(number)
                    continue
        raise InvalidExport(
            f"export variable {name!r}: {key} {describe_value(stamp)} is not a finite number",
            variable=name,
            field=key,
        )
    return out
