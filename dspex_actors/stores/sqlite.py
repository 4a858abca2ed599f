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
record through :func:`~dspex_actors.session.records_from_columns` (the import
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
import itertools
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any, Literal, TypeVar

import msgpack

try:
    import fcntl
except ImportError:  # Windows: see _claim
    fcntl = None  # type: ignore[assignment]

from dspex_actors.errors import (
    BridgeUnavailable,
    InvalidExport,
    SessionClosed,
    StateError,
    ValidationError,
)
from dspex_actors.exports import ExportColumns
from dspex_actors.imported import records_from_columns
from dspex_actors.messages import ReadOperation, WriteOperation
from dspex_actors.records import Opened
from dspex_actors.session import Record, SessionTable
from dspex_actors.stores.memory import MemoryStore, not_found

__all__ = ["SCHEMA_VERSION", "SqliteStore", "Synchronous"]

logger = logging.getLogger(__name__)

_R = TypeVar("_R")
_T = TypeVar("_T")

Synchronous = Literal["normal", "full"]
"""SQLite's ``synchronous`` setting for the store (see the module docstring)."""

SCHEMA_VERSION = 1
"""``PRAGMA user_version`` of a store file this module writes and reads."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    incarnation TEXT NOT NULL,
    created_at REAL NOT NULL,
    metadata BLOB NOT NULL,
    next_event INTEGER NOT NULL,
    pending INTEGER NOT NULL,
    creator TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS variables (
    ordinal INTEGER PRIMARY KEY,
    session_id TEXT NOT NULL,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    type TEXT NOT NULL,
    constraints BLOB NOT NULL,
    value BLOB NOT NULL,
    metadata BLOB NOT NULL,
    version INTEGER NOT NULL,
    created_at REAL NOT NULL,
    last_updated_at REAL NOT NULL,
    event INTEGER NOT NULL,
    UNIQUE (session_id, id)
);
"""

_INSERT = (
    "INSERT INTO variables (session_id, id, name, type, constraints, value, metadata,"
    " version, created_at, last_updated_at, event) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPDATE = (
    "UPDATE variables SET value = ?, version = ?, last_updated_at = ?,"
    " metadata = COALESCE(?, metadata), event = ? WHERE session_id = ? AND id = ?"
)
_UPDATE_ONE = _UPDATE + " AND EXISTS (SELECT 1 FROM sessions WHERE id = ? AND incarnation = ?)"
_DELETE = "DELETE FROM variables WHERE session_id = ? AND id = ?"
_TOUCH = (
    "UPDATE sessions SET next_event = ?, metadata = COALESCE(?, metadata)"
    " WHERE id = ? AND incarnation = ?"
)
_LOAD_VARIABLES = (
    "SELECT session_id, id, name, type, constraints, value, metadata, version,"
    " created_at, last_updated_at, event FROM variables ORDER BY session_id, ordinal"
)

_EVENT = 10
"""The ``event`` column's place in a row of ``_LOAD_VARIABLES``."""

_ROW_OVERHEAD = 64
"""Bytes counted per variable, beyond its blobs, when loading in slices."""


def _pack(data: Any) -> bytes:
    packed: bytes = msgpack.packb(data, use_bin_type=True)
    return packed


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, use_list=True)


@dataclass(frozen=True, slots=True)
class _SessionRow:
    """One row of ``sessions``, as loaded."""

    session_id: str
    incarnation: str
    created_at: float
    metadata: bytes
    next_event: int
    pending: bool
    creator: str | None


class _Database:
    """The store's file: one connection, one lock, and the one place where
    ``sqlite3`` errors become ``BridgeUnavailable`` (not applied)."""

    def __init__(self, path: str, synchronous: Synchronous, busy_timeout: float) -> None:
        if synchronous not in ("normal", "full"):
            raise ValueError(f"synchronous must be 'normal' or 'full', got {synchronous!r}")
        self.path = path
        self._lock = threading.Lock()
        self._claim = _claim(path)
        try:
            conn = sqlite3.connect(
                path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            _release(self._claim)
            raise OSError(f"cannot open the sqlite store {path!r}: {exc}") from exc
        self._conn = conn
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise OSError(f"the sqlite store {path!r} cannot use WAL (journal mode {mode})")
            conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise OSError(
                    f"the sqlite store {path!r} has schema version {version}; this version "
                    f"of dspex_actors reads {SCHEMA_VERSION}"
                )
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException as exc:
            conn.close()
            _release(self._claim)
            if isinstance(exc, sqlite3.Error):
                raise OSError(f"cannot open the sqlite store {path!r}: {exc}") from exc
            raise

    @contextlib.contextmanager
    def transaction(self, what: str, *, single: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction under the lock: ``BEGIN IMMEDIATE`` to ``COMMIT``,
        rolled back on any error; or, for a ``single`` statement, that statement's
        own. A ``sqlite3`` error is raised as ``BridgeUnavailable`` (not applied)."""
        with self._lock:
            conn = self._conn
            try:
                if single:
                    yield conn
                    return
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise BridgeUnavailable(
                    f"{what}: the sqlite store {self.path!r} could not record it "
                    f"({type(exc).__name__}: {exc}); not applied"
                ) from exc

    def record(
        self,
        session_id: str,
        incarnation: str,
        inserts: list[tuple[Any, ...]],
        updates: list[tuple[Any, ...]],
        removed: list[tuple[str, str]],
        metadata: bytes | None,
        next_event: int,
    ) -> None:
        """One session change as one transaction (see :class:`_Journal`).

        Updating one variable, the common write, is one guarded UPDATE in its own
        transaction: each row keeps the event that last wrote it, so the session's
        event count need not be written too (loading takes the larger).
        """
        what = f"a change to session {session_id!r}"
        if len(updates) == 1 and not inserts and not removed and metadata is None:
            with self.transaction(what, single=True) as conn:
                touched = conn.execute(_UPDATE_ONE, (*updates[0], session_id, incarnation))
                if touched.rowcount != 1:
                    raise SessionClosed(f"session {session_id!r} is closed", session_id=session_id)
            return
        with self.transaction(what) as conn:
            touched = conn.execute(_TOUCH, (next_event, metadata, session_id, incarnation))
            if touched.rowcount != 1:
                raise SessionClosed(f"session {session_id!r} is closed", session_id=session_id)
            if removed:
                conn.executemany(_DELETE, removed)
            if inserts:
                conn.executemany(_INSERT, inserts)
            if updates:
                conn.executemany(_UPDATE, updates)

    def save_session(self, row: _SessionRow) -> None:
        """Write a created session's row; a row of another incarnation (a session
        whose deletion failed) is replaced, its variables deleted."""
        with self.transaction(f"opening session {row.session_id!r}") as conn:
            held = conn.execute(
                "SELECT incarnation FROM sessions WHERE id = ?", (row.session_id,)
            ).fetchone()
            if held is not None and held[0] == row.incarnation:
                return  # the creator's retry: written already
            if held is not None:
                conn.execute("DELETE FROM variables WHERE session_id = ?", (row.session_id,))
            conn.execute(
                "INSERT OR REPLACE INTO sessions (id, incarnation, created_at, metadata,"
                " next_event, pending, creator) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    row.session_id,
                    row.incarnation,
                    row.created_at,
                    row.metadata,
                    row.next_event,
                    int(row.pending),
                    row.creator,
                ),
            )

    def commit_session(self, session_id: str, incarnation: str, next_event: int) -> None:
        """Mark a pending session committed; its event count is at least ``next_event``."""
        with self.transaction(f"committing session {session_id!r}") as conn:
            done = conn.execute(
                "UPDATE sessions SET pending = 0, next_event = MAX(next_event, ?)"
                " WHERE id = ? AND incarnation = ?",
                (next_event, session_id, incarnation),
            )
            if done.rowcount != 1:
                raise not_found(session_id)

    def drop_sessions(self, sessions: Sequence[tuple[str, str]]) -> None:
        """Delete the rows of these (session id, incarnation) pairs, where present."""
        with self.transaction(f"closing {len(sessions)} session(s)") as conn:
            for session_id, incarnation in sessions:
                gone = conn.execute(
                    "DELETE FROM sessions WHERE id = ? AND incarnation = ?",
                    (session_id, incarnation),
                )
                if gone.rowcount:
                    conn.execute("DELETE FROM variables WHERE session_id = ?", (session_id,))

    def load(self) -> tuple[list[_SessionRow], Iterator[tuple[str, list[tuple[Any, ...]]]]]:
        """Every session row, and each session's variable rows in creation order
        (``OSError`` if the file cannot be read)."""
        with self._lock:
            try:
                sessions = [
                    _SessionRow(sid, inc, created, meta, nxt, bool(pending), creator)
                    for sid, inc, created, meta, nxt, pending, creator in self._conn.execute(
                        "SELECT id, incarnation, created_at, metadata, next_event, pending,"
                        " creator FROM sessions"
                    )
                ]
                rows = self._conn.execute(_LOAD_VARIABLES).fetchall()
            except sqlite3.Error as exc:
                raise OSError(f"cannot read the sqlite store {self.path!r}: {exc}") from exc
        grouped = ((sid, list(group)) for sid, group in itertools.groupby(rows, _first))
        return sessions, grouped

    def drop_orphans(self) -> int:
        """Delete variables of no session (none are ever written; a safeguard)."""
        with self.transaction("removing variables of no session") as conn:
            gone = conn.execute(
                "DELETE FROM variables WHERE session_id NOT IN (SELECT id FROM sessions)"
            )
            count: int = gone.rowcount
            return count

    def close(self) -> None:
        """Close the connection and let another store open the file; idempotent."""
        with self._lock:
            self._conn.close()
            _release(self._claim)


def _claim(path: str) -> IO[bytes] | None:
    """Hold ``PATH-lock`` exclusively while the store is open (the kernel lets go
    if the process dies). Two servers on one file would each serve their own copy
    of its sessions and overwrite each other's acknowledged writes; the second is
    refused instead. Where ``fcntl`` is missing (Windows) nothing is held."""
    if fcntl is None:
        return None
    handle = open(f"{path}-lock", "ab")  # noqa: SIM115  # held open until close()
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.close()
        raise OSError(
            f"the sqlite store {path!r} is in use by another store or server "
            f"(it holds {path}-lock)"
        ) from exc
    return handle


def _release(claim: IO[bytes] | None) -> None:
    if claim is not None:
        claim.close()  # closing the descriptor releases the lock


def _first(row: tuple[Any, ...]) -> Any:
    return row[0]


class _Journal:
    """One session's journal: each change it is told of becomes one transaction.

    Runs in the session actor's turn, before the table changes (see
    :class:`~dspex_actors.session.Journal`), so the table still holds the previous
    records: a record it lacks is inserted, one it holds is updated (value,
    version, timestamp, and metadata only when the record's map changed).
    """

    __slots__ = ("_db", "_incarnation", "_table")

    def __init__(self, db: _Database, table: SessionTable, incarnation: str) -> None:
        self._db = db
        self._table = table
        self._incarnation = incarnation

    def write(
        self,
        session_id: str,
        upserts: Sequence[Record],
        removed: Sequence[Record],
        metadata: dict[str, Any] | None,
        next_event: int,
    ) -> None:
        held = self._table.by_id
        event = next_event - 1  # the last event this change makes (or made before it)
        inserts: list[tuple[Any, ...]] = []
        updates: list[tuple[Any, ...]] = []
        constraints: dict[int, bytes] = {}  # one Validator per definition: packed once
        record: Record | None = None
        try:
            for record in upserts:
                before = held.get(record.id)
                if before is None:
                    validator = record.validator
                    packed = constraints.get(id(validator))
                    if packed is None:
                        packed = constraints[id(validator)] = _pack(validator.constraints)
                    inserts.append(
                        (
                            session_id,
                            record.id,
                            record.name,
                            validator.type,
                            packed,
                            _pack(record.value),
                            _pack(record.metadata),
                            record.version,
                            record.created_at,
                            record.last_updated_at,
                            event,
                        )
                    )
                else:
                    updates.append(
                        (
                            _pack(record.value),
                            record.version,
                            record.last_updated_at,
                            None if record.metadata is before.metadata else _pack(record.metadata),
                            event,
                            session_id,
                            record.id,
                        )
                    )
            record = None
            meta = None if metadata is None else _pack(metadata)
        except (TypeError, ValueError, OverflowError) as exc:
            name = "<session>" if record is None else record.name
            raise ValidationError(
                f"variable {name!r}: cannot be stored as msgpack: {exc} (rule 'encoding')",
                variable=name,
                rule="encoding",
                value=None,
            ) from exc
        self._db.record(
            session_id,
            self._incarnation,
            inserts,
            updates,
            [(session_id, r.id) for r in removed],
            meta,
            next_event,
        )


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
            self._db = _Database(path, synchronous, busy_timeout)
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
        table.journal = _Journal(self._db, table, incarnation)
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

    def _restore(self, row: _SessionRow, variables: list[tuple[Any, ...]]) -> None:
        """Rebuild one session's table from its rows and hold it."""
        table = self._new_table(row.session_id, row.incarnation)
        try:
            table.metadata = _unpack(row.metadata)
            # A row keeps the event that last wrote it; the session row is not
            # rewritten for every update (see _Database.record).
            table.next_event = max([row.next_event] + [v[_EVENT] + 1 for v in variables])
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
        self._hold(
            table,
            row.incarnation,
            row.created_at,
            pending=row.pending,
            creator=row.creator,
            age=max(0.0, time.time() - row.created_at),
        )

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
        row = _SessionRow(
            session_id,
            entry.incarnation,
            entry.created_at,
            _pack(entry.table.metadata),
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
        entry = self._sessions.get(session_id)
        if entry is None or incarnation != entry.incarnation:
            raise not_found(session_id)
        if entry.pending:
            # A migration's import set the event count without a change: record it.
            await self._executor(
                self._db.commit_session, session_id, incarnation, entry.table.next_event
            )
        await super().commit(session_id, incarnation)

    async def close(self, session_id: str, incarnation: str | None) -> None:
        await self._saved(session_id)
        entry = self._sessions.get(session_id)
        if entry is None or (incarnation and incarnation != entry.incarnation):
            raise not_found(session_id)
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
            size += _ROW_OVERHEAD
            end += 1
        yield _columns(session_id, rows[start:end])
        start = end


def _columns(session_id: str, rows: list[tuple[Any, ...]]) -> ExportColumns:
    """Variable rows (``_LOAD_VARIABLES``'s order) as ExportColumns."""
    slots: dict[tuple[str, bytes], int] = {}
    definitions: list[tuple[Any, Any]] = []
    definition: list[int] = []
    for row in rows:
        key = (row[3], row[4])
        slot = slots.get(key)
        if slot is None:
            slot = slots[key] = len(definitions)
            definitions.append((row[3], _unpack(row[4])))
        definition.append(slot)
    return ExportColumns(
        session_id,
        {},
        [row[1] for row in rows],
        [row[2] for row in rows],
        definitions,
        definition,
        [_unpack(row[5]) for row in rows],
        [row[7] for row in rows],
        [row[8] for row in rows],
        [row[9] for row in rows],
        [_unpack(row[6]) for row in rows],
    )
