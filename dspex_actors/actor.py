"""SessionActor: the one owner of a session's variables, versions and validation.

The actor (a Pykka ``ThreadingActor``, the Elixir Agent's counterpart) applies every
write in its own thread, one message at a time, so writes are serialized and
versioned in one place; it publishes them in its :class:`~dspex_actors.session.
SessionTable`, which readers read without a round trip. The engine the two front ends
share, LocalState and the memory store, is :class:`~dspex_actors.engine.ActorSession`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import pykka

from dspex_actors import vartypes
from dspex_actors.bulk import BULK_ITEMS, gc_paused
from dspex_actors.errors import (
    PartialFailure,
    SessionClosed,
    StateError,
    ValidationError,
    VariableExists,
    VersionConflict,
)
from dspex_actors.exports import ExportColumns, check_shape
from dspex_actors.imported import records_from_columns
from dspex_actors.limits import (
    DEFAULT_LIMITS,
    Limits,
    check_batch_size,
    check_metadata_size,
    check_variable_count,
)
from dspex_actors.messages import (
    Control,
    Deliver,
    ReadOperation,
    SessionOperation,
    WriteOperation,
)
from dspex_actors.session import (
    CLOSED,
    LOCK_FREE_READS,
    SEQ_STEP,
    Record,
    SessionTable,
    new_record,
    new_var_id,
)
from dspex_actors.streaming import DEFAULT_HISTORY, Event, EventKind, EventLog
from dspex_actors.vartypes import check_metadata, describe_value, plain_copy, sized_metadata

__all__ = ["SEALED", "ExitHook", "Sealed", "SessionActor"]

logger = logging.getLogger(__name__)


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

Message = (
    ReadOperation[Any] | WriteOperation[Any] | SessionOperation[Any] | Control[Any] | Deliver[Any]
)
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
            table.seq += SEQ_STEP

    # -- pykka hooks -------------------------------------------------------------

    def on_receive(self, message: Message) -> Any:
        if isinstance(message, Deliver):  # first: its answer goes to its reply, even
            return self._deliver(message)  # when that answer is that the session closed
        if self._closed_error is not None:
            return self._closed_error()  # a fresh error each time: callers raise it
        try:
            if isinstance(message, ReadOperation | SessionOperation):  # a reader met a write
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
        table.seq += SEQ_STEP
        for record in removed:
            del index[record.name], index[record.id], by_id[record.id]
        for record in records:
            index[record.name] = index[record.id] = by_id[record.id] = record
        if metadata is not None:
            # Replaced, never mutated: a reader may be copying the old dict.
            table.metadata = metadata
        table.seq += SEQ_STEP
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
        record = Record(new_var_id(), name, value, 0, meta, now, now, validator, validator.thaw)
        self._publish("registered", (record,))
        return record.id

    @staticmethod
    def _next(record: Record, value: Any, meta: dict[str, Any] | None, now: float) -> Record:
        """The record's next version (built directly: ``_replace`` is several times slower)."""
        return new_record(
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

    def update(self, updates: Mapping[str, Any], metadata: Any) -> int:
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
            new = new_record
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
        return self.table.next_event

    def delete(self, identifier: str) -> None:
        record = self.table.lookup(identifier)
        self._publish("deleted", (), removed=(record,))

    def add_columns(self, columns: ExportColumns, continue_from: int | None = None) -> int:
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

    def content_digest(self) -> bytes:
        """The digest of the session as it is in this turn (an import's verification)."""
        return self.table.content_digest()

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
