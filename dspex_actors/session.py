"""SessionTable: a session's published variables, read by anyone without a lock.

The bottom layer of the in-memory engine. Only the session's actor
(:mod:`dspex_actors.actor`) writes a table; any thread may read it, like an ETS table
with read concurrency owned by a GenServer. Records are immutable tuples replaced
whole, and the table carries a sequence counter (a seqlock): the actor makes it odd
before changing the table and even after. A reader that sees the same even number
before and after its lookups has read one consistent moment, never half of an
atomic batch; otherwise it asks the actor, whose turn comes after the batch. Because
the actor publishes before it replies, a caller returning from a write always reads
that write. A closed table's counter is -1 (odd) forever, so every fast read falls
through to the slow path, which reports the closure.

The table outlives its actor: a supervisor can start a new actor on the same table
(the ETS "heir" idea) and the session keeps its variables across a restart. Only the
table's writer changes it: its running actor, or, once no actor runs on it, the
handle that owns it (which may only close it).
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar

from dspex_actors.bulk import BULK_ITEMS, gc_paused
from dspex_actors.errors import StateError, VariableNotFound
from dspex_actors.exports import ExportColumns, columns_digest
from dspex_actors.records import SessionInfo, VariableRecord, name_matches, variable_not_found
from dspex_actors.streaming import EventLog
from dspex_actors.vartypes import Validator, plain_copy

if TYPE_CHECKING:
    from dspex_actors.messages import ReadOperation

__all__ = [
    "CLOSED",
    "LOCK_FREE_READS",
    "MISSED",
    "SEQ_STEP",
    "Journal",
    "Missed",
    "Record",
    "SessionTable",
    "new_record",
    "new_session_id",
    "new_var_id",
]


CLOSED = -1
"""The sequence number of a closed table (odd, so readers always take the slow path)."""

LOCK_FREE_READS: bool = getattr(sys, "_is_gil_enabled", lambda: True)()
"""The seqlock relies on the GIL's ordering of plain attribute writes. On a
free-threaded interpreter a table's sequence number starts odd and stays odd
(writers add 2), so every read goes through the actor instead."""

SEQ_STEP = 1 if LOCK_FREE_READS else 2


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


def new_var_id() -> str:
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
        """The record as callers receive it (``get_record``, each ``list_variables``
        entry): a VariableRecord of fresh copies. An empty map (most constraints and
        metadata) is a new ``{}``: ``plain_copy`` would take ~0.6 us to walk it."""
        constraints, metadata = self.validator.constraints, self.metadata
        return VariableRecord(
            id=self.id,
            name=self.name,
            type=self.validator.type,
            value=self.read_value(),
            constraints=plain_copy(constraints) if constraints else {},
            metadata=plain_copy(metadata) if metadata else {},
            version=self.version,
            created_at=self.created_at,
            last_updated_at=self.last_updated_at,
        )

    def to_dict(self) -> dict[str, Any]:
        """The record as plain data for an export: a fresh copy the caller may keep."""
        constraints, metadata = self.validator.constraints, self.metadata
        return {
            "id": self.id,
            "name": self.name,
            "type": self.validator.type,
            "value": self.read_value(),
            "constraints": plain_copy(constraints) if constraints else {},
            "metadata": plain_copy(metadata) if metadata else {},
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
        "created_at",
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
        self.created_at = time.time()

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

    def whole_record(self, identifier: str) -> VariableRecord:
        return self.lookup(identifier).public()

    def get_versioned(self, identifier: str) -> tuple[Any, int]:
        record = self.lookup(identifier)
        return record.read_value(), record.version

    def info(self) -> SessionInfo:
        """The session as the table knows it (no store keeps it: no TTL)."""
        return SessionInfo(
            self.session_id,
            "",
            len(self.by_id),
            self.created_at,
            time.time(),
            None,
            plain_copy(self.metadata),
            self.next_event,
        )

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

    def listing(self, pattern: str | None = None) -> list[VariableRecord]:
        """The records whose names match ``pattern`` (a glob; None: all), in creation
        order (snapshotted in one step)."""
        return [
            record.public()
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

    def content_digest(self) -> bytes:
        """:func:`~dspex_actors.exports.columns_digest` of the current variables."""
        return columns_digest(self.columns(copies=False))


def _same(data: Any) -> Any:
    return data


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


new_record: Callable[[tuple[Any, ...]], Record] = partial(tuple.__new__, Record)
"""A Record from a tuple of its fields, built in C (``_make`` is several times slower)."""
