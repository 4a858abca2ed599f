"""The SQLite store (``sqlite:PATH``): the memory store with a durable journal.

**Shape.** Each session is still one SessionActor on a SessionTable in this process
(this class extends :class:`~dspex_actors.stores.memory.MemoryStore`), so reads,
validation, versions, events, deadlines, dedupe and restarts follow the memory
store's rules exactly. What this store adds is a :class:`~dspex_actors.session.
Journal` on every session's table. The actor calls it in its turn, before the
table changes: the change becomes one SQLite transaction (its records upserted or
deleted; the session's row too when variables come or go or its metadata changes),
and only after that commits does the actor publish the change and answer. A
change the file refuses is not applied: the journal raises ``BridgeUnavailable``
(which always means "not applied"; a retry may succeed, so its request id is
forgotten) and the table stays as it was. Why this shape rather than a store
answering from SQL: one session type keeps one set of rules (DESIGN.md), reads
stay lock-free dictionary lookups, and SQLite is only written, and read once, at
start.

**Durability.** WAL mode, one transaction per write, batch or import.
``synchronous=NORMAL`` is the default: a commit reaches the WAL file (the OS's page
cache) before the write is acknowledged, so a server killed with SIGKILL restarts
with every acknowledged write; an OS crash or power cut may lose the last
transactions. ``synchronous=FULL`` (``sqlite:PATH?synchronous=full``) fsyncs the
WAL at every commit, so "acknowledged" means "on disk" across those too, at the
cost of one fsync per write.

**Tables.** ``sessions`` (id, incarnation, created_at, metadata, next_event,
pending, creator) and ``variables`` (ordinal, session_id, id, name, type,
constraints, value, metadata, version, created_at, last_updated_at, event), with
``ordinal`` (the rowid) giving creation order and ``event`` the sequence of the
change that last wrote the row (so an update need not rewrite the session's row;
the event count loaded is the larger of the two). Values, constraints and metadata
are msgpack, never pickle; frozen values (embeddings and tensors as tuples) are
stored as arrays and frozen again when loaded, because loading rebuilds every
record through :func:`~dspex_actors.imported.records_from_columns` (the import
path: every name, definition, value, version and timestamp is checked again).

**Sessions.** A created session's row is written (in the loop's executor) before
its open is answered, and every call to that session waits for it, so no
acknowledged write can belong to a session the file does not hold. ``commit``
marks a pending session committed (and records the event count a migration's
import continued from) before it is answered; ``close`` deletes the rows before it
is answered (a write still queued behind then fails with ``SessionClosed``: the
journal finds no row of its incarnation); expiry and giving up on a crashing
session delete them after the actor stops. At start every session is loaded and
held again, pending ones included, with its incarnation, ids, versions, values,
constraints, metadata, timestamps and event count.

**Threads.** One connection, guarded by a lock and shared by every session
actor's thread and the executor: SQLite admits one writer at a time anyway, and a
Python lock hands it over at once where SQLite's busy handler would sleep and poll.
A file locked by another process is waited for ``busy_timeout`` seconds. A
set_variable is one guarded UPDATE in its own transaction: the journal adds about
30-70 us to it with NORMAL, and one fsync more with FULL (0.1-2 ms on a shared
virtual disk), measured in ``tests/test_store_sqlite.py``.

**One store per file.** The store holds ``PATH-lock`` (``flock``) while open: a
second server on the file would serve its own copy of the sessions and overwrite
the first one's acknowledged writes, so it is refused at start instead.

**Not kept across a restart:** the request-id dedupe window (a retry that crosses a
restart is applied again, unless it carries ``expected_version``, which then
conflicts; only the creating open's request id is kept, so a retried open still
hears ``created``), the event history (a watcher resuming from before the restart
gets ``overflow`` and resynchronises; sequences continue where they were), and idle
time (each session's TTL starts again at load).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import msgpack

from dspex_actors.errors import (
    BridgeUnavailable,
    InvalidExport,
    StateError,
)
from dspex_actors.exports import ExportColumns
from dspex_actors.imported import records_from_columns
from dspex_actors.messages import ReadOperation, WriteOperation
from dspex_actors.records import Opened
from dspex_actors.session import MISSED, Missed, SessionTable
from dspex_actors.stores.memory import MemoryStore
from dspex_actors.stores.sqlite_file import (
    EVENT,
    ROW_OVERHEAD,
    SCHEMA_VERSION,
    Database,
    FileJournal,
    SessionRow,
    Synchronous,
    pack,
    unpack,
)

__all__ = ["SCHEMA_VERSION", "SqliteStore", "Synchronous"]

logger = logging.getLogger(__name__)

_R = TypeVar("_R")
_T = TypeVar("_T")


class SqliteStore(MemoryStore):
    """Sessions in this process, each change journaled to a SQLite file first (see
    the module docstring); a new store on the same file holds them all again."""

    kind = "sqlite"

    def __init__(
        self,
        path: str,
        *,
        synchronous: Synchronous = "normal",
        busy_timeout: float = 5.0,
        **settings: Any,
    ) -> None:
        """Open (or create) the file at ``path`` and load every session in it.

        ``settings`` are the memory store's (limits, session_ttl, clock, policy,
        on_restart, on_give_up, event_history). ``OSError`` if the file cannot be
        opened as a store; ``InvalidExport`` if a session in it cannot be loaded
        under these limits (nothing is served then, and the file is not changed).
        """
        super().__init__(**settings)
        self.path = path
        self._saving: dict[str, asyncio.Future[None]] = {}
        try:
            self._db = Database(path, synchronous, busy_timeout)
        except BaseException:
            self._restarts.stop(60.0)
            raise
        try:
            self._load()
        except BaseException:
            self._abandon()
            raise

    # -- start and stop ---------------------------------------------------------------

    def _new_table(self, session_id: str, incarnation: str) -> SessionTable:
        table = SessionTable(session_id)
        table.journal = FileJournal(self._db, table, incarnation)
        return table

    def _load(self) -> None:
        """Hold every session of the file again, each on a new actor."""
        sessions, variables = self._db.load()
        rows = {row.session_id: row for row in sessions}
        orphans = 0
        loaded: set[str] = set()
        for session_id, records in variables:
            row = rows.get(session_id)
            if row is None:
                orphans += len(records)
                continue
            self._restore(row, records)
            loaded.add(session_id)
        for session_id, row in rows.items():
            if session_id not in loaded:
                self._restore(row, [])
        if orphans:
            logger.warning(
                "sqlite store %s: %d variables of no session removed", self.path, orphans
            )
            self._db.drop_orphans()
        logger.info("sqlite store %s: %d session(s) loaded", self.path, len(rows))

    def _restore(self, row: SessionRow, variables: list[tuple[Any, ...]]) -> None:
        """Rebuild one session's table from its rows and hold it."""
        table = self._new_table(row.session_id, row.incarnation)
        try:
            table.metadata = unpack(row.metadata)
            # A row keeps the event that last wrote it; the session row is not
            # rewritten for every update (see Database.record).
            table.next_event = max([row.next_event] + [v[EVENT] + 1 for v in variables])
            for columns in _slices(row.session_id, variables, self.limits.max_message_bytes // 2):
                records = records_from_columns(columns, table, self.limits)
                for record in records:
                    table.index[record.name] = table.index[record.id] = record
                    table.by_id[record.id] = record
        except (StateError, ValueError, TypeError, msgpack.UnpackException) as exc:
            raise InvalidExport(
                f"sqlite store {self.path!r}: session {row.session_id!r} cannot be loaded: {exc}",
                session_id=row.session_id,
            ) from exc
        entry = self._hold(
            table,
            row.incarnation,
            row.created_at,
            pending=row.pending,
            creator=row.creator,
            age=max(0.0, time.time() - row.created_at),
        )
        entry.forgotten_at = self._clock()  # answers before this start are not kept

    def _abandon(self) -> None:
        """Undo a start that failed: stop the sessions held so far and the file."""
        for entry in list(self._sessions.values()):
            with contextlib.suppress(Exception):
                entry.engine.close()
        self._sessions.clear()
        self._restarts.stop(60.0)
        self._db.close()

    async def aclose(self) -> None:
        """Close every session (their rows stay: they are loaded at the next start)."""
        try:
            await super().aclose()
        finally:
            self._db.close()

    # -- sessions -------------------------------------------------------------------

    async def _executor(self, work: Callable[..., _T], *args: Any) -> _T:
        """Run blocking file work off the loop."""
        return await asyncio.get_running_loop().run_in_executor(None, work, *args)

    async def _saved(self, session_id: str) -> None:
        """Wait until a session being created has its row (raises if it failed)."""
        saving = self._saving.get(session_id)
        if saving is not None:
            await asyncio.shield(saving)

    async def open(
        self,
        session_id: str | None,
        *,
        create: bool,
        metadata: dict[str, Any] | None,
        pending: bool = False,
        request_id: str | None = None,
    ) -> Opened:
        # The memory store's open never yields: nothing else sees a new session
        # before its row is on its way, and each call to it waits for the row.
        opened = await super().open(
            session_id, create=create, metadata=metadata, pending=pending, request_id=request_id
        )
        sid = opened.session_id
        if opened.created and sid not in self._saving:
            self._save(sid)
        try:
            await self._saved(sid)
        except StateError:
            if opened.created:
                with contextlib.suppress(StateError):  # gone already
                    await MemoryStore.close(self, sid, opened.incarnation)
            raise
        return opened

    def _save(self, session_id: str) -> None:
        """Start writing a created session's row (awaited through ``_saving``)."""
        entry = self._sessions[session_id]
        row = SessionRow(
            session_id,
            entry.incarnation,
            entry.created_at,
            pack(entry.table.metadata),
            entry.table.next_event,
            entry.pending,
            entry.creator,
        )
        saving = asyncio.ensure_future(self._executor(self._db.save_session, row))
        self._saving[session_id] = saving

        def done(future: asyncio.Future[None]) -> None:
            if self._saving.get(session_id) is future:
                del self._saving[session_id]
            if not future.cancelled():
                future.exception()  # retrieved: the waiters raise it

        saving.add_done_callback(done)

    async def commit(self, session_id: str, incarnation: str) -> None:
        await self._saved(session_id)
        entry = self._find(session_id, incarnation)
        if entry.pending:
            # A migration's import set the event count without a change: record it.
            await self._executor(
                self._db.commit_session, session_id, incarnation, entry.table.next_event
            )
        await super().commit(session_id, incarnation)

    async def close(self, session_id: str, incarnation: str | None) -> None:
        await self._saved(session_id)
        entry = self._find(session_id, incarnation)
        # Deleted before the close is answered; writes queued behind it then fail.
        await self._executor(self._db.drop_sessions, [(session_id, entry.incarnation)])
        await super().close(session_id, entry.incarnation)

    async def reap_expired(self) -> list[str]:
        held = {sid: entry.incarnation for sid, entry in self._sessions.items()}
        expired = await super().reap_expired()
        if expired:
            await self._forget(
                [(sid, held[sid]) for sid in expired if sid in held], "expired sessions"
            )
        return expired

    async def _remove_failed(self, session_id: str, error: StateError) -> None:
        entry = self._sessions.get(session_id)
        await super()._remove_failed(session_id, error)
        if entry is not None:
            await self._forget([(session_id, entry.incarnation)], "a session given up on")

    async def _forget(self, sessions: list[tuple[str, str]], what: str) -> None:
        """Delete rows of sessions already closed here; a failure is logged (they are
        loaded again at the next start, and expire again)."""
        try:
            await self._executor(self._db.drop_sessions, sessions)
        except StateError:
            logger.exception("sqlite store %s: could not delete the rows of %s", self.path, what)

    # -- operations -------------------------------------------------------------------

    def read_now(
        self, session_id: str, operation: ReadOperation[_R], incarnation: str | None = None
    ) -> _R | Missed:
        if session_id in self._saving:
            return MISSED  # run() waits for its row first
        return super().read_now(session_id, operation, incarnation)

    async def run(
        self,
        session_id: str,
        operation: ReadOperation[_R] | WriteOperation[_R],
        *,
        request_id: str | None,
        deadline: float | None,
        incarnation: str | None = None,
    ) -> _R:
        if self._saving:
            await self._saved(session_id)
        try:
            return await super().run(
                session_id,
                operation,
                request_id=request_id,
                deadline=deadline,
                incarnation=incarnation,
            )
        except BridgeUnavailable:
            if request_id:
                self._forget_refusal(session_id, request_id)
            raise

    def _forget_refusal(self, session_id: str, request_id: str) -> None:
        """A write the journal refused was not applied: a retry with its request id
        runs again rather than hearing the refusal repeated (unless a retry already
        runs: then its answer is the one remembered)."""
        entry = self._sessions.get(session_id)
        answer = entry.results.get(request_id) if entry is not None else None
        if (
            entry is not None
            and answer is not None
            and answer.done()
            and not answer.cancelled()
            and isinstance(answer.result(), BridgeUnavailable)
            and not answer.result().details.get("settled")  # a settled refusal stands
        ):
            del entry.results[request_id]


def _slices(session_id: str, rows: list[tuple[Any, ...]], budget: int) -> Iterator[ExportColumns]:
    """A session's variable rows as columns, in slices of about ``budget`` encoded
    bytes each, so each is an import the limits admit (a session may have grown
    larger than one message, a write at a time)."""
    start = 0
    while start < len(rows):
        end, size = start, 0
        while end < len(rows) and (end == start or size < budget):
            _, var_id, name, _, constraints, value, metadata, *_ = rows[end]
            size += len(var_id) + len(name) + len(constraints) + len(value) + len(metadata)
            size += ROW_OVERHEAD
            end += 1
        yield _columns(session_id, rows[start:end])
        start = end


def _columns(session_id: str, rows: list[tuple[Any, ...]]) -> ExportColumns:
    """Variable rows (``LOAD_VARIABLES``'s order) as ExportColumns."""
    slots: dict[tuple[str, bytes], int] = {}
    definitions: list[tuple[Any, Any]] = []
    definition: list[int] = []
    for row in rows:
        key = (row[3], row[4])
        slot = slots.get(key)
        if slot is None:
            slot = slots[key] = len(definitions)
            definitions.append((row[3], unpack(row[4])))
        definition.append(slot)
    return ExportColumns(
        session_id,
        {},
        [row[1] for row in rows],
        [row[2] for row in rows],
        definitions,
        definition,
        [unpack(row[5]) for row in rows],
        [row[7] for row in rows],
        [row[8] for row in rows],
        [row[9] for row in rows],
        [unpack(row[6]) for row in rows],
    )
