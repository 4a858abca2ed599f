"""The SQLite file behind the SQLite store: its schema, its one connection, and the
journal each session's actor writes through (see :mod:`dspex_actors.stores.sqlite`).

A change becomes one SQLite transaction (records upserted or deleted; the session's
row too when variables come or go or its metadata changes) before the session
publishes it; a change the file refuses is not applied (``BridgeUnavailable``). One
connection, guarded by a lock and shared by every session actor's thread and the
loop's executor: SQLite admits one writer at a time anyway, and a Python lock hands
it over at once where SQLite's busy handler would sleep and poll. The store holds
``PATH-lock`` (``flock``) while open, so a second server on the file is refused.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any, Literal

import msgpack

try:
    import fcntl
except ImportError:  # Windows: see claim_file
    fcntl = None  # type: ignore[assignment]

from dspex_actors.errors import BridgeUnavailable, SessionClosed, ValidationError
from dspex_actors.session import Record, SessionTable
from dspex_actors.stores.base import not_found

__all__ = [
    "EVENT",
    "LOAD_VARIABLES",
    "ROW_OVERHEAD",
    "SCHEMA_VERSION",
    "Database",
    "FileJournal",
    "SessionRow",
    "Synchronous",
    "claim_file",
    "pack",
    "release_file",
    "unpack",
]

logger = logging.getLogger(__name__)

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
LOAD_VARIABLES = (
    "SELECT session_id, id, name, type, constraints, value, metadata, version,"
    " created_at, last_updated_at, event FROM variables ORDER BY session_id, ordinal"
)

EVENT = 10
"""The ``event`` column's place in a row of ``LOAD_VARIABLES``."""

ROW_OVERHEAD = 64
"""Bytes counted per variable, beyond its blobs, when loading in slices."""


def pack(data: Any) -> bytes:
    packed: bytes = msgpack.packb(data, use_bin_type=True)
    return packed


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, use_list=True)


@dataclass(frozen=True, slots=True)
class SessionRow:
    """One row of ``sessions``, as loaded."""

    session_id: str
    incarnation: str
    created_at: float
    metadata: bytes
    next_event: int
    pending: bool
    creator: str | None


def _empty_file(path: str) -> bool:
    """Whether ``path`` is a file of 0 bytes (SQLite takes one for a new database)."""
    try:
        return os.stat(path).st_size == 0 and os.path.isfile(path)
    except OSError:
        return False


class Database:
    """The store's file: one connection, one lock, and the one place where
    ``sqlite3`` errors become ``BridgeUnavailable`` (not applied)."""

    def __init__(self, path: str, synchronous: Synchronous, busy_timeout: float) -> None:
        if synchronous not in ("normal", "full"):
            raise ValueError(f"synchronous must be 'normal' or 'full', got {synchronous!r}")
        self.path = path
        self._lock = threading.Lock()
        try:
            self._claim = claim_file(path)
        except OSError as exc:
            raise OSError(f"cannot open the sqlite store {path!r}: {exc.strerror or exc}") from exc
        if _empty_file(path):
            logger.warning(
                "the sqlite store %r is an empty file (0 bytes): starting a new store in "
                "it; any sessions it held before it was emptied are gone",
                path,
            )
        try:
            conn = sqlite3.connect(
                path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            release_file(self._claim)
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
            release_file(self._claim)
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
        """One session change as one transaction (see :class:`FileJournal`).

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

    def save_session(self, row: SessionRow) -> None:
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

    def load(self) -> tuple[list[SessionRow], Iterator[tuple[str, list[tuple[Any, ...]]]]]:
        """Every session row, and each session's variable rows in creation order
        (``OSError`` if the file cannot be read)."""
        with self._lock:
            try:
                sessions = [
                    SessionRow(sid, inc, created, meta, nxt, bool(pending), creator)
                    for sid, inc, created, meta, nxt, pending, creator in self._conn.execute(
                        "SELECT id, incarnation, created_at, metadata, next_event, pending,"
                        " creator FROM sessions"
                    )
                ]
                rows = self._conn.execute(LOAD_VARIABLES).fetchall()
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
            release_file(self._claim)


def claim_file(path: str) -> IO[bytes] | None:
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


def release_file(claim: IO[bytes] | None) -> None:
    if claim is not None:
        claim.close()  # closing the descriptor releases the lock


def _first(row: tuple[Any, ...]) -> Any:
    return row[0]


class FileJournal:
    """One session's journal: each change it is told of becomes one transaction.

    Runs in the session actor's turn, before the table changes (see
    :class:`~dspex_actors.session.Journal`), so the table still holds the previous
    records: a record it lacks is inserted, one it holds is updated (value,
    version, timestamp, and metadata only when the record's map changed).
    """

    __slots__ = ("_db", "_incarnation", "_table")

    def __init__(self, db: Database, table: SessionTable, incarnation: str) -> None:
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
                        packed = constraints[id(validator)] = pack(validator.constraints)
                    inserts.append(
                        (
                            session_id,
                            record.id,
                            record.name,
                            validator.type,
                            packed,
                            pack(record.value),
                            pack(record.metadata),
                            record.version,
                            record.created_at,
                            record.last_updated_at,
                            event,
                        )
                    )
                else:
                    updates.append(
                        (
                            pack(record.value),
                            record.version,
                            record.last_updated_at,
                            None if record.metadata is before.metadata else pack(record.metadata),
                            event,
                            session_id,
                            record.id,
                        )
                    )
            record = None
            meta = None if metadata is None else pack(metadata)
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
