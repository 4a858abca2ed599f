"""RedisState: a StateProvider whose session lives in Redis, shared by every process.

Any process that can reach the Redis server opens the same session by its id
(``RedisState.init(session_id=..., url="redis://host:port/db")``, or the URL in
``$DSPEX_REDIS_URL``) and sees one set of variables, versions and change events.
redis-py is an extra (``pip install 'dspex_actors[redis]'``); without it ``init``
raises ``ImportError`` naming the extra, and ``import dspex_actors`` never needs it.

**Where a session lives.** A fixed set of keys per session under one hash tag (a
hash of names, a sorted set giving creation order, a hash of the variables' fields,
the remembered replies of recent writes, and a Stream of change events), changed
only by Lua scripts: :mod:`dspex_actors.redis.scripts` lays them out. Values,
metadata and constraints are msgpack, never pickle.

**Validation, then one atomic step.** Every value is checked in this process by the
variable's compiled type (:mod:`dspex_actors.vartypes`, with the same
:mod:`dspex_actors.limits`), against the definition read from Redis, before
anything is sent; the errors are LocalState's, with the same attributes and, where
several rules are broken at once, the same one reported first. The write itself
is one Lua script per kind (register, set, batch update, delete, import): it checks
that the session is the same incarnation, that each variable exists (and is the one
whose definition was used: a client caches definitions per variable id and
ordinal, and a variable deleted and registered again under the same name is
caught), compares versions (``expected_version``) and counts, applies, and appends
the change events to the session's stream, all in one step no other client can
interleave. Measured against ``WATCH`` + ``MULTI``/``EXEC`` for a versioned set with
its event (redis-py, loopback, one core): 123 us against 378 us at p50, and with
four writers on one variable 3,945 against 452 writes/s (``WATCH`` aborts and
retries under contention; a script never does). Metadata is merged in Python on a
copy of the variable's metadata of a known version, and the script refuses the
write if the version moved meanwhile; the handle then reads it again and retries.

**Versions and timestamps** come from the script: versions grow by one per write
(``HINCRBY``, exact to 2**63 - 1), timestamps are the Redis server's clock, so every
process's writes are stamped by one clock.

**Change events** (:class:`~dspex_actors.streaming.Event`) are appended to a Redis
Stream by the same script as the change, with the session's sequence as the entry
id: a subscriber in any process reads them in order from its cursor with ``XREAD``,
resumes from any sequence (``subscribe(..., start=n)``), and, when the stream was
trimmed past its cursor (it keeps at least ``event_history`` events; Redis trims
whole stream nodes, so a few hundred more may stay), gets one ``overflow`` event and
goes on from the present. Each subscription is one thread with its own connection,
blocked in ``XREAD BLOCK``; ``unsubscribe`` wakes it with ``CLIENT UNBLOCK`` and
returns once no event is being delivered. The owner's :meth:`RedisState.cleanup`
deletes the session's keys and appends a final ``closed`` entry (the stream stays
as a tombstone for a minute), so subscribers everywhere end with ``closed``; a
session that expires ends its subscribers' streams with ``closed`` too, noticed
within a second.

**Ownership and TTL.** The handle that creates a session owns it: its ``cleanup``
deletes the session; a handle that attached (``create=False``, or the id existed)
only detaches. A session lives ``ttl`` seconds (default 3600; None: forever) after
its last use: every operation, and :meth:`RedisState.heartbeat`, refreshes the expiry
of all its keys, which Redis then enforces (a read refreshes them once a hundredth
of the TTL has run down, so the session expires 0.99 to 1 TTL after its last use).
``SessionNotFound`` once it is gone (closed by its owner, expired, or opened again
since: each creation is a new incarnation, and a handle only ever works on its own).

**Failures.** A call is bounded by ``timeout`` (default 5 s). Redis not reachable:
``BridgeUnavailable`` (never applied; the handle retries with backoff within the
deadline). A write carries a request id, and the script remembers each reply for
a while (twice the timeout, at least 10 s): a write whose reply was lost is sent
again with the same id and answered with the first reply, so it is applied once.
Only when no attempt was answered within the deadline and one of them may have
reached Redis does a write raise ``OutcomeUnknown`` (read the variable's version
before writing again). These are :class:`~dspex_actors.bridge.BridgedState`'s
meanings. A session's data is as durable as the Redis server makes it: with
neither RDB snapshots nor AOF a restart loses it; with ``appendonly yes`` and
``appendfsync always`` an acknowledged write survives a crash. Run Redis with
``maxmemory-policy noeviction``: every session key carries a TTL, so a
``volatile-*`` policy could evict part of a session.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Self

import msgpack

from dspex_actors import failpoints, vartypes
from dspex_actors.errors import (
    BridgeUnavailable,
    LimitExceeded,
    OutcomeUnknown,
    PartialFailure,
    SessionClosed,
    SessionNotFound,
    StateError,
    Unauthenticated,
    ValidationError,
    VariableExists,
    VersionConflict,
)
from dspex_actors.exports import ExportColumns, check_shape, columns_digest, columns_of
from dspex_actors.limits import (
    DEFAULT_LIMITS,
    Limits,
    check_batch_size,
    check_metadata_size,
    check_session_id,
    check_variable_count,
)
from dspex_actors.provider import StateProvider
from dspex_actors.records import VariableRecord, check_pattern, name_matches, variable_not_found
from dspex_actors.redis import scripts
from dspex_actors.redis.connections import (
    Connections,
    Unanswered,
    acquire_connections,
    current_scope,
    evaluate,
    release_connections,
)
from dspex_actors.redis.events import RedisSubscription
from dspex_actors.redis.scripts import Script, session_keys
from dspex_actors.session import (
    Record,
    SessionTable,
    new_session_id,
    records_from_columns,
)
from dspex_actors.streaming import (
    DEFAULT_HISTORY,
    Subscriber,
    check_subscriber,
)
from dspex_actors.urls import redacted
from dspex_actors.vartypes import (
    Validator,
    check_expected_version,
    check_metadata,
    compile_type,
    describe_value,
    sized_metadata,
    utf8_encodable,
)

if TYPE_CHECKING:
    pass

__all__ = [
    "DEFAULT_TTL",
    "DEFAULT_URL",
    "URL_ENV",
    "RedisState",
]

logger = logging.getLogger(__name__)

URL_ENV = "DSPEX_REDIS_URL"
"""Environment variable naming the Redis a handle uses when given no ``url``."""

DEFAULT_URL = "redis://localhost:6379/0"
DEFAULT_TTL = 3600.0
"""Seconds an unused session lives (the SessionStore's default)."""
DEFAULT_TIMEOUT = 5.0
TOMBSTONE_SECONDS = 60.0
"""How long a closed session's stream stays, so its subscribers read ``closed``."""
STREAM_BLOCK_MS = 1000
"""How long a stream reader waits in one ``XREAD``; then it checks the session lives."""
STREAM_READ_COUNT = 512
"""Entries one ``XREAD`` takes from a stream."""
_IMPORT_SECONDS = 300e-6
_FIRST_PAUSE = 0.01
_MAX_PAUSE = 0.25
_MAX_IDLE_CONNECTIONS = 32
_MAX_VERSION = str(vartypes.MAX_VERSION)
PENDING_TTL = 60.0
"""Seconds a migration's uncommitted copy lives (the SessionStore's, too)."""
_MISSING_EXTRA = (
    "RedisState needs redis-py, which comes with the extra: pip install 'dspex_actors[redis]'"
)


def _pack(data: Any) -> bytes:
    packed: bytes = msgpack.packb(data, use_bin_type=True)
    return packed


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)


def _text(data: bytes) -> str:
    return data.decode()


def _stamp(seconds: float) -> str:
    """A timestamp as stored: ``repr`` reads back as the same float."""
    return repr(float(seconds))


# -- the provider ---------------------------------------------------------------------


class _Definition(NamedTuple):
    """What a client keeps of a variable to validate its writes: it never changes
    for one (id, ordinal), so it may be cached; the scripts check both."""

    id: str
    name: str
    ordinal: int
    validator: Validator


class _Retry(Exception):
    """The write met a change its plan did not know of: plan it again from Redis."""


class RedisState(StateProvider):
    """A session held in Redis (see the module docstring); one instance is one handle.

    The handle that created the session owns it (``owner``): its :meth:`cleanup`
    deletes the session everywhere. A handle that attached only detaches. After
    cleanup every call raises ``SessionClosed`` without a round trip.
    """

    kind: ClassVar[str] = "redis"

    def __init__(
        self,
        *,
        connections: Connections,
        url: str,
        session_id: str,
        timeout: float,
        limits: Limits,
        event_history: int,
    ) -> None:
        """Wrap shared connections; use :meth:`init`, which opens the session."""
        self.session_id = session_id
        self.url = url
        self.where = redacted(url)  # the URL for messages: no password
        self.owner = False
        self.incarnation = ""
        self.ttl_seconds: float | None = None
        self._connections = connections
        self._timeout = timeout
        self._limits = limits
        self._history = str(event_history)
        self._keys: tuple[str, ...] = ()
        self._closed = False
        self._lock = threading.Lock()
        self._definitions: dict[str, _Definition] = {}
        self._metadata: dict[str, tuple[int, dict[str, Any]]] = {}
        self._validators: dict[bytes, Validator] = {}
        self._packed_definitions: dict[int, tuple[Validator, bytes]] = {}
        self._subscriptions: list[RedisSubscription] = []

    @classmethod
    def init(
        cls,
        *,
        session_id: str | None = None,
        existing_state: Mapping[str, Any] | None = None,
        url: str | None = None,
        ttl: float | None = DEFAULT_TTL,
        timeout: float = DEFAULT_TIMEOUT,
        create: bool = True,
        limits: Limits = DEFAULT_LIMITS,
        event_history: int = DEFAULT_HISTORY,
        pending: bool = False,
        **backend_opts: Any,
    ) -> Self:
        """Open ``session_id`` in the Redis at ``url``, creating it if absent (``create``).

        ``url`` defaults to ``$DSPEX_REDIS_URL``, else ``redis://localhost:6379/0``.
        Creating makes this handle the owner, with ``ttl`` seconds of life after each
        use (None: no expiry); attaching keeps the session's own TTL, and with
        ``create=False`` a missing session is ``SessionNotFound``. ``existing_state``
        is imported before returning (if that fails, a session this call created is
        deleted again). ``event_history`` is how many events the stream keeps at
        least. ``pending`` creates a migration's copy: no other handle can open it
        until :meth:`commit`, and it expires after :data:`PENDING_TTL` seconds unless
        committed (``SessionClosed`` if the id is taken). ``BridgeUnavailable`` when
        Redis cannot be reached within ``timeout``; ``ImportError`` without redis-py
        (the ``redis`` extra).
        """
        if backend_opts:
            raise TypeError(f"RedisState.init got unknown options: {', '.join(backend_opts)}")
        handle = cls.open(
            session_id=session_id,
            url=url,
            ttl=ttl,
            timeout=timeout,
            create=create,
            limits=limits,
            event_history=event_history,
            pending=pending,
        )
        return handle._seeded(existing_state)

    @classmethod
    def open(
        cls,
        *,
        session_id: str | None,
        url: str | None,
        ttl: float | None,
        timeout: float,
        create: bool,
        limits: Limits,
        event_history: int,
        pending: bool = False,
        metadata: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        incarnation: str | None = None,
    ) -> Self:
        """:meth:`init` without the import, with what a SessionStore server also
        needs: the new session's ``metadata``; the ``request_id`` of the open (a
        retry of the open that created the session is told it created it); and
        ``incarnation``, to attach to exactly that one, even pending
        (``SessionNotFound`` if the session is another one now)."""
        if session_id is not None:
            check_session_id(session_id, limits)
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        if ttl is not None and not ttl > 0:
            raise ValueError(f"ttl must be positive or None, got {ttl!r}")
        if event_history <= 0:
            raise ValueError(f"event_history must be positive, got {event_history!r}")
        url = url or os.environ.get(URL_ENV) or DEFAULT_URL
        connections = acquire_connections(url, timeout)
        handle = cls(
            connections=connections,
            url=url,
            session_id=session_id or new_session_id(),
            timeout=timeout,
            limits=limits,
            event_history=event_history,
        )
        try:
            meta = check_metadata("<session>", metadata, limits) if create else {}
            handle._open(create, ttl, pending, meta, request_id or "", incarnation)
            if incarnation is not None and handle.incarnation != incarnation:
                raise handle._gone()
        except BaseException:
            handle.cleanup()
            raise
        return handle

    def _open(
        self,
        create: bool,
        ttl: float | None,
        pending: bool,
        metadata: dict[str, Any],
        request_id: str,
        incarnation: str | None = None,
    ) -> None:
        exact = incarnation is not None
        incarnation = incarnation or uuid.uuid4().hex
        ttl_ms = 0 if ttl is None else max(1, round(ttl * 1000))
        keys = session_keys(self.session_id, incarnation)
        args: list[Any] = [
            incarnation,
            "1" if create else "0",
            ttl_ms,
            "1" if pending else "0",
            request_id,
            round(PENDING_TTL * 1000),
            "1" if exact else "0",
        ]
        for key, value in metadata.items():
            args += [key, _pack(value)]
        reply = self._run(scripts.OPEN, keys[:-1], args)
        if reply[0] == -1:
            raise SessionNotFound(
                f"session {self.session_id!r} not found in Redis at {self.where} "
                "(never opened, closed or expired)",
                session_id=self.session_id,
            )
        if reply[0] == -2:
            raise SessionClosed(
                f"session {self.session_id!r} already exists in Redis at {self.where}"
                + (" (being created by a migration; retry later)" if reply[1] == b"1" else ""),
                session_id=self.session_id,
            )
        self.owner = reply[0] == 1
        self.incarnation = _text(reply[1])
        self.ttl_seconds = int(reply[2]) / 1000 or None
        self._keys = session_keys(self.session_id, self.incarnation)

    # -- plumbing -------------------------------------------------------------------------

    def _run(
        self,
        script: Script,
        keys: Sequence[str],
        args: Sequence[Any],
        *,
        write: bool = False,
        retry: bool = True,
        extra_time: float = 0.0,
    ) -> Any:
        """Run one script within the deadline; the one place Redis errors are translated.

        An attempt that got no answer is retried with backoff until the deadline (a
        write with the same request id, so Redis applies it once); then
        ``OutcomeUnknown`` for a write some attempt may have delivered, else
        ``BridgeUnavailable``. ``extra_time`` lengthens the deadline, and each
        attempt's wait for its reply, for a script that runs long.
        """
        errors = self._connections.errors
        deadline = time.monotonic() + self._timeout + extra_time
        scope = current_scope()
        if scope is not None and scope.deadline is not None:
            if time.monotonic() >= scope.deadline:  # not one attempt after the deadline
                raise BridgeUnavailable(
                    f"session {self.session_id!r}: the caller's deadline passed before "
                    f"{script.name} was sent; not applied",
                    session_id=self.session_id,
                )
            deadline = min(deadline, scope.deadline)
        read_timeout = self._timeout + extra_time if extra_time else None
        pause = _FIRST_PAUSE
        maybe_sent = False
        failure: Exception
        while True:
            try:
                return evaluate(self._connections, script, keys, args, read_timeout)
            except Unanswered as exc:
                maybe_sent = maybe_sent or exc.maybe_sent
                failure = exc.cause
            except (errors.AuthenticationError, errors.AuthorizationError) as exc:
                raise Unauthenticated(
                    f"Redis at {self.where} refused the credentials: {exc}"
                ) from exc
            except errors.ResponseError as exc:
                if not str(exc).startswith("BUSY"):  # BUSY: another script runs; not run
                    raise self._refused(script, exc) from exc
                failure = exc
            if not retry or deadline - time.monotonic() <= pause:
                raise self._failed(write, maybe_sent, failure) from failure
            time.sleep(pause)  # a retry's backoff, bounded by the call's deadline
            pause = min(pause * 2, _MAX_PAUSE)

    def _failed(self, write: bool, maybe_sent: bool, error: Exception) -> StateError:
        if write and maybe_sent:
            return OutcomeUnknown(
                f"Redis at {self.where} did not answer within {self._timeout}s; the write to "
                f"session {self.session_id!r} may or may not have been applied (last "
                f"failure: {error})",
                session_id=self.session_id,
            )
        return BridgeUnavailable(
            f"Redis at {self.where} could not be reached within {self._timeout}s "
            f"(not applied): {error}",
            session_id=self.session_id,
        )

    def _refused(self, script: Script, exc: Exception) -> StateError:
        """What a Redis error reply means to the caller (nothing was applied)."""
        text = str(exc)
        errors = self._connections.errors
        if "DSPEX_GONE" in text:
            return self._gone()
        if isinstance(exc, errors.NoPermissionError) or text.startswith(("NOAUTH", "NOPERM")):
            return Unauthenticated(f"Redis at {self.where} refused {script.name}: {text}")
        if text.startswith("OOM"):
            return LimitExceeded(
                f"Redis at {self.where} is out of memory (its maxmemory): {text}",
                limit="redis_maxmemory",
            )
        return StateError(f"Redis at {self.where} refused {script.name}: {text}")

    def _gone(self) -> SessionNotFound:
        return SessionNotFound(
            f"session {self.session_id!r} not found in Redis at {self.where} "
            "(closed, expired, or opened again since)",
            session_id=self.session_id,
        )

    def _check_open(self) -> None:
        if self._closed:
            raise SessionClosed(f"session {self.session_id!r}: this handle is cleaned up")

    def _read(self, script: Script, *args: Any) -> Any:
        self._check_open()
        return self._run(script, self._keys, [self.incarnation, *args])

    def _write(self, script: Script, args: Sequence[Any], extra_time: float = 0.0) -> list[Any]:
        """Run a write script with a fresh request id; its reply, decoded."""
        self._check_open()
        retain = max(10, int(2 * (self._timeout + extra_time)) + 1)
        scope = current_scope()
        if scope is not None and scope.request_id:
            request_id = f"{scope.request_id}.{scope.attempts}"
            scope.attempts += 1
            retain = max(retain, scope.retain)
        else:
            scope = None
            request_id = uuid.uuid4().hex
        request = [self.incarnation, request_id, self._history, retain]
        try:
            packed = self._run(
                script, self._keys, [*request, *args], write=True, extra_time=extra_time
            )
        except SessionNotFound:
            if scope is not None:  # "gone" is not remembered: the number is unused
                scope.attempts -= 1
            raise
        reply: list[Any] = _unpack(packed)
        return reply

    def _missing(self, identifier: Any) -> StateError:
        return variable_not_found(identifier, self.session_id)

    def _validator(self, name: str, definition: bytes) -> Validator:
        """The compiled type of a stored definition (cached by its bytes)."""
        validator = self._validators.get(definition)
        if validator is None:
            type_name, constraints = _unpack(definition)
            validator = compile_type(name, type_name, constraints, self._limits)
            if len(self._validators) >= 1024:
                self._validators.clear()
            self._validators[definition] = validator
        return validator

    def _definition_bytes(self, validator: Validator) -> bytes:
        entry = self._packed_definitions.get(id(validator))
        if entry is not None and entry[0] is validator:
            return entry[1]
        packed = _pack([validator.type, validator.constraints])
        if len(self._packed_definitions) >= 1024:
            self._packed_definitions.clear()
        self._packed_definitions[id(validator)] = (validator, packed)
        return packed

    def _remember(self, definition: _Definition) -> None:
        if len(self._definitions) >= 4 * self._limits.max_variables_per_session:
            self._definitions.clear()
            self._metadata.clear()
        self._definitions[definition.id] = self._definitions[definition.name] = definition

    def _forget(self, identifier: str) -> None:
        definition = self._definitions.pop(identifier, None)
        if definition is not None:
            self._definitions.pop(definition.id, None)
            self._definitions.pop(definition.name, None)
            self._metadata.pop(definition.id, None)

    def _describe(self, identifiers: list[str]) -> dict[str, _Definition]:
        """Definitions (and current metadata) of the identifiers present, from Redis."""
        reply = self._read(scripts.DESCRIBE, *identifiers)
        found: dict[str, _Definition] = {}
        for n, identifier in enumerate(identifiers):
            var_id, ordinal, name, definition, version, metadata = reply[6 * n : 6 * n + 6]
            self._forget(identifier)
            if var_id is None:
                continue
            text = _text(name)
            found[identifier] = entry = _Definition(
                _text(var_id), text, int(float(ordinal)), self._validator(text, definition)
            )
            self._remember(entry)
            self._metadata[entry.id] = (int(version), _unpack(metadata))
        return found

    def _definitions_for(
        self, identifiers: Iterable[str], fresh: bool, with_metadata: bool
    ) -> dict[str, _Definition]:
        """Definitions of the identifiers present: cached ones unless ``fresh``, the
        rest (and those whose metadata is needed and not known) read in one call."""
        found: dict[str, _Definition] = {}
        wanted: list[str] = []
        for identifier in dict.fromkeys(identifiers):
            cached = None if fresh else self._definitions.get(identifier)
            if cached is not None and (not with_metadata or cached.id in self._metadata):
                found[identifier] = cached
            else:
                wanted.append(identifier)
        if wanted:
            found.update(self._describe(wanted))
        return found

    @staticmethod
    def _identifies(identifier: Any) -> bool:
        """Whether ``identifier`` could name a variable at all (and can be sent)."""
        return isinstance(identifier, str) and utf8_encodable(identifier)

    # -- reads ----------------------------------------------------------------------------

    def get_variable(self, identifier: str) -> Any:
        self._check_open()
        if not self._identifies(identifier):
            raise self._missing(identifier)
        value = self._run(scripts.GET, self._keys, [self.incarnation, identifier])
        if value is None:
            raise self._missing(identifier)
        return _unpack(value)

    def get_variables(self, identifiers: Iterable[str]) -> dict[str, Any]:
        self._check_open()
        wanted = list(dict.fromkeys(i for i in identifiers if self._identifies(i)))
        if not wanted:
            return {}
        values = self._read(scripts.GET_MANY, *wanted)
        return {
            identifier: _unpack(value)
            for identifier, value in zip(wanted, values, strict=True)
            if value is not None
        }

    def get_record(self, identifier: str) -> VariableRecord:
        self._check_open()
        if not self._identifies(identifier):
            raise self._missing(identifier)
        row = self._read(scripts.RECORD, identifier)
        if row is None:
            raise self._missing(identifier)
        return VariableRecord.from_dict(self._record(row, 0))

    @staticmethod
    def _record(row: list[Any], at: int) -> dict[str, Any]:
        """The record of the 8 fields ``row`` holds from ``at`` (the scripts' ``row``)."""
        var_id, name, definition, value, version, metadata, created, updated = row[at : at + 8]
        type_name, constraints = _unpack(definition)
        return {
            "id": _text(var_id),
            "name": _text(name),
            "type": type_name,
            "value": _unpack(value),
            "constraints": constraints,
            "metadata": _unpack(metadata),
            "version": int(version),
            "created_at": float(created),
            "last_updated_at": float(updated),
        }

    def _dump(self) -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
        """The session at one moment: next sequence, metadata, records in order."""
        reply = self._read(scripts.DUMP)
        pairs = int(reply[1])
        metadata = {_text(reply[2 + 2 * i]): _unpack(reply[3 + 2 * i]) for i in range(pairs)}
        start = 2 + 2 * pairs
        records = [self._record(reply, at) for at in range(start, len(reply), 8)]
        return int(reply[0]), metadata, records

    def list_variables(self, pattern: str | None = None) -> list[dict[str, Any]]:
        """Every record in creation order (one moment); ``pattern`` globs names here."""
        glob = check_pattern(pattern)
        records = self._dump()[2]
        if glob is None:
            return records
        return [r for r in records if name_matches(r["name"], glob)]

    def export_state(self) -> dict[str, Any]:
        _, metadata, records = self._dump()
        return {
            "session_id": self.session_id,
            "variables": {r["id"]: r for r in records},
            "variable_index": {r["name"]: r["id"] for r in records},
            "metadata": metadata,
        }

    def export_columns(self) -> ExportColumns:
        """The export as columns, built from one read; ``sequence`` is the session's
        next event sequence."""
        sequence, metadata, records = self._dump()
        slots: dict[tuple[str, bytes], int] = {}
        definitions: list[tuple[Any, Any]] = []
        definition: list[int] = []
        for record in records:
            key = (record["type"], _pack(record["constraints"]))
            slot = slots.get(key)
            if slot is None:
                slot = slots[key] = len(definitions)
                definitions.append((record["type"], record["constraints"]))
            definition.append(slot)
        return ExportColumns(
            self.session_id,
            metadata,
            [r["id"] for r in records],
            [r["name"] for r in records],
            definitions,
            definition,
            [r["value"] for r in records],
            [r["version"] for r in records],
            [r["created_at"] for r in records],
            [r["last_updated_at"] for r in records],
            [r["metadata"] for r in records],
            sequence,
        )

    def session_info(self, *, heartbeat: bool = False) -> dict[str, Any]:
        """The session as Redis holds it: variable count, creation, TTL, when it
        expires, next event sequence, metadata. ``heartbeat`` resets every key's TTL
        first."""
        reply = self._read(scripts.INFO, "1" if heartbeat else "0", "1")
        next_seq, count, created, ttl_ms, pttl = reply[:5]
        return {
            "session_id": self.session_id,
            "incarnation": self.incarnation,
            "variable_count": int(count),
            "created_at": float(created),
            "ttl_seconds": int(ttl_ms) / 1000 or None,
            "expires_at": time.time() + int(pttl) / 1000 if int(pttl) >= 0 else None,
            "next_sequence": int(next_seq),
            "metadata": {
                _text(reply[at]): _unpack(reply[at + 1]) for at in range(5, len(reply), 2)
            },
        }

    # -- writes ---------------------------------------------------------------------------

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
        self._check_open()
        vartypes.check_name(name)
        limits = self._limits
        try:
            validator = compile_type(name, type, constraints, limits)
            value = validator.check(name, initial_value)
            meta = check_metadata(name, metadata, limits)
            if vartypes.check_description(name, description) is not None:
                meta["description"] = description
                check_metadata_size(name, meta, limits)
        except StateError:
            self._register_preconditions(name)  # the session actor checks those first
            raise
        while True:
            var_id = f"var_{uuid.uuid4().hex}"
            reply = self._write(
                scripts.REGISTER,
                [
                    name,
                    var_id,
                    self._definition_bytes(validator),
                    _pack(value),
                    _pack(meta),
                    limits.max_variables_per_session,
                ],
            )
            if reply[0] != "id_taken":  # a generated id that is someone's name: again
                break
        if reply[0] == "exists":
            raise self._exists(name)
        if reply[0] == "limit":
            check_variable_count(self.session_id, int(reply[1]), 1, limits)
        var_id = str(reply[3])  # a retry's reply names the first attempt's id
        self._remember(_Definition(var_id, name, int(reply[1]), validator))
        self._metadata[var_id] = (0, meta)
        return var_id

    def _exists(self, name: str) -> VariableExists:
        return VariableExists(
            f"variable {name!r} already exists in session {self.session_id!r}", variable=name
        )

    def _register_preconditions(self, name: str) -> None:
        """Raise what the session actor checks before a registration's type and value
        (a taken name, the variable limit), on the failure path only."""
        if self._describe([name]):
            raise self._exists(name)
        held = int(self._read(scripts.INFO, "0")[1])
        check_variable_count(self.session_id, held, 1, self._limits)

    def set_variable(
        self,
        identifier: str,
        new_value: Any,
        metadata: Mapping[str, Any] | None = None,
        *,
        expected_version: int | None = None,
    ) -> int:
        self._check_open()
        if not self._identifies(identifier):
            raise self._missing(identifier)
        deadline = time.monotonic() + self._timeout
        fresh = False
        while True:
            try:
                return self._set_once(identifier, new_value, metadata, expected_version, fresh)
            except _Retry:
                fresh = True
                self._forget(identifier)
                if time.monotonic() > deadline:
                    raise StateError(
                        f"session {self.session_id!r}: {identifier!r} kept changing under "
                        f"set_variable for {self._timeout}s; not applied"
                    ) from None

    def _set_once(
        self,
        identifier: str,
        new_value: Any,
        metadata: Mapping[str, Any] | None,
        expected_version: int | None,
        fresh: bool,
    ) -> int:
        found = self._definitions_for([identifier], fresh, with_metadata=metadata is not None)
        definition = found.get(identifier)
        if definition is None:
            raise self._missing(identifier)
        name = definition.name
        base = 0
        merged: dict[str, Any] | None = None
        try:
            check_expected_version(name, expected_version)
            checked = definition.validator.check(name, new_value)
            if metadata is not None:
                meta = check_metadata(name, metadata, self._limits)
                if meta:
                    base, current = self._metadata[definition.id]
                    merged = {**current, **meta}
                    if current:
                        check_metadata_size(name, merged, self._limits)
        except StateError:
            if not fresh:
                raise _Retry from None  # decide on what Redis holds now
            # The session actor's order: a bad expected_version, then a conflict, then
            # the value and the metadata (a fresh definition comes with the version).
            check_expected_version(name, expected_version)
            version = self._metadata[definition.id][0]
            if expected_version is not None and expected_version != version:
                raise self._conflict(name, expected_version, version) from None
            raise
        reply = self._write(
            scripts.SET,
            [
                identifier,
                definition.id,
                definition.ordinal,
                "" if expected_version is None else str(expected_version),
                "" if merged is None else str(base),
                _pack(checked),
                b"" if merged is None else _pack(merged),
            ],
        )
        code = reply[0]
        if code == "ok":
            version = int(reply[1])
            self._wrote(definition.id, version, None if merged is None else (base, merged))
            return version
        if code == "conflict":
            raise self._conflict(name, expected_version, int(reply[1]))
        if code == "overflow":
            raise self._overflow(name)
        if code == "not_found" and fresh:
            raise self._missing(identifier)
        raise _Retry  # stale, moved, or not found in a cached definition

    def _conflict(self, name: str, expected: int | None, actual: int) -> VersionConflict:
        return VersionConflict(
            f"variable {name!r}: expected version {expected!r} but it is at version {actual}",
            variable=name,
            expected=expected,
            actual=actual,
        )

    def _overflow(self, name: str) -> LimitExceeded:
        return LimitExceeded(
            f"variable {name!r} is at version {_MAX_VERSION}, the largest there is: "
            "it cannot be written again",
            limit="max_version",
            variable=name,
        )

    def update_variables(
        self, updates: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
    ) -> None:
        """Apply every update or none, in one script; ``PartialFailure`` names each
        failing entry (checked here against the definitions in Redis)."""
        if not isinstance(updates, Mapping):
            raise TypeError(f"updates must be a mapping, got {type(updates).__name__}")
        self._check_open()
        batch = dict(updates)
        deadline = time.monotonic() + self._timeout
        fresh = False
        while True:
            try:
                self._update_once(batch, metadata, fresh)
                return
            except _Retry:
                fresh = True
                if time.monotonic() > deadline:
                    raise StateError(
                        f"session {self.session_id!r}: the batch's variables kept changing "
                        f"for {self._timeout}s; not applied"
                    ) from None

    def _update_once(self, batch: dict[Any, Any], metadata: Any, fresh: bool) -> None:
        staged, merged = self._plan_batch(batch, metadata, fresh)
        if not staged:
            return
        args: list[Any] = [len(staged), "1" if merged else "0"]
        for definition, checked, identifier in staged.values():
            entry = merged.get(definition.id)
            args += [
                identifier,
                definition.id,
                definition.ordinal,
                "" if entry is None else str(entry[0]),
                _pack(checked),
                b"" if entry is None else _pack(entry[1]),
            ]
        reply = self._write(scripts.UPDATE, args)
        code = reply[0]
        if code == "ok":
            for (definition, _, _), version in zip(staged.values(), reply[1], strict=True):
                self._wrote(definition.id, int(version), merged.get(definition.id))
            return
        if code == "overflow":
            name = next(d.name for d, _, given in staged.values() if given == reply[1])
            raise PartialFailure.for_batch({reply[1]: self._overflow(name)}, len(batch))
        for identifier in reply[1] if code in ("not_found", "stale") else batch:
            if isinstance(identifier, str):
                self._forget(identifier)
        raise _Retry

    def _plan_batch(
        self, batch: dict[Any, Any], metadata: Any, fresh: bool
    ) -> tuple[dict[str, tuple[_Definition, Any, str]], dict[str, tuple[int, dict[str, Any]]]]:
        """Check a batch as the session actor does: the entries to write (id ->
        definition, checked value, identifier as given) and, for a batch with
        metadata, each one's merged metadata and the version it was merged on."""
        limits = self._limits
        definitions = self._definitions_for(
            [i for i in batch if self._identifies(i)], fresh, with_metadata=metadata is not None
        )
        errors: dict[str, StateError] = {}
        staged: dict[str, tuple[_Definition, Any, str]] = {}
        for identifier, new_value in batch.items():
            definition = definitions.get(identifier) if isinstance(identifier, str) else None
            try:
                if definition is None:
                    raise self._missing(identifier)
                if definition.id in staged:
                    raise ValidationError(
                        f"variable {definition.name!r} appears twice in one batch "
                        f"(rule 'unique', value {describe_value(identifier)})",
                        variable=definition.name,
                        rule="unique",
                        value=identifier,
                    )
                checked = definition.validator.check(definition.name, new_value)
                staged[definition.id] = (definition, checked, identifier)
            except StateError as exc:
                errors[str(identifier)] = exc
        merged: dict[str, tuple[int, dict[str, Any]]] = {}
        meta_size = 0
        if metadata is not None:
            try:
                meta, meta_size = sized_metadata("<batch>", metadata, limits)
                if meta:
                    for definition, _, _ in staged.values():
                        base, current = self._metadata[definition.id]
                        merged[definition.id] = (base, {**current, **meta})
                        if current:
                            check_metadata_size(definition.name, merged[definition.id][1], limits)
            except StateError as exc:
                errors["<metadata>"] = exc
        if errors:
            if not fresh:
                raise _Retry  # decide on what Redis holds now
            raise PartialFailure.for_batch(errors, len(batch))
        if staged:
            check_batch_size(
                "<batch>",
                list(batch),
                [checked for _, checked, _ in staged.values()],
                limits,
                extra_bytes=meta_size,
            )
        return staged, merged

    def _wrote(self, var_id: str, version: int, merged: tuple[int, dict[str, Any]] | None) -> None:
        """Keep the metadata a write left (known when it merged some, or when the
        version it wrote follows the one kept), so the next merge needs no read."""
        known = self._metadata.get(var_id)
        if merged is not None:
            self._metadata[var_id] = (version, merged[1])
        elif known is not None and known[0] == version - 1:
            self._metadata[var_id] = (version, known[1])
        else:
            self._metadata.pop(var_id, None)

    def delete_variable(self, identifier: str) -> None:
        self._check_open()
        if not self._identifies(identifier):
            raise self._missing(identifier)
        reply = self._write(scripts.DELETE, [identifier])
        self._forget(identifier)
        if reply[0] == "not_found":
            raise self._missing(identifier)

    def import_state(self, exported: Mapping[str, Any]) -> None:
        self.import_columns(columns_of(exported))

    def import_columns(self, columns: ExportColumns, *, continue_from: int | None = None) -> None:
        """Import every variable or none: checked here as the session actor checks an
        import, then added (names and ids new to the session, the variable limit
        kept) with their change events in one script. With ``continue_from`` (a
        migration's copy) it yields no events and the session's event sequence
        continues from that number, as the session actor's does."""
        self._check_open()
        check_shape(columns)
        limits = self._limits
        try:
            records = records_from_columns(columns, SessionTable(self.session_id), limits)
            session_meta = check_metadata("<session>", columns.metadata, limits)
        except StateError:
            self._import_preconditions(columns)  # the session actor's order of checks
            raise
        pairs = list(session_meta.items())
        args: list[Any] = [
            "" if continue_from is None else str(continue_from),
            limits.max_variables_per_session,
            len(records),
            len(pairs),
        ]
        for key, value in pairs:
            args += [key, _pack(value)]
        for record in records:
            args += [
                record.id,
                record.name,
                self._definition_bytes(record.validator),
                _pack(record.value),
                str(record.version),
                _pack(record.metadata),
                _stamp(record.created_at),
                _stamp(record.last_updated_at),
            ]
        # An import runs in Redis for about 30 us a variable; allow ten times that.
        reply = self._write(scripts.IMPORT, args, extra_time=_IMPORT_SECONDS * len(records))
        if reply[0] == "limit":
            check_variable_count(self.session_id, int(reply[1]), len(records), limits)
        if reply[0] == "exists":
            _, key, how, existing = reply
            raise VariableExists(
                f"variable {key!r} already exists in session {self.session_id!r} "
                f"(as {how} of {existing!r})",
                variable=key,
            )
        for record in records:
            self._forget(record.id)
            self._forget(record.name)

    def import_with_digest(self, columns: ExportColumns, *, migrating: bool = False) -> bytes:
        """Import like :meth:`import_columns`, then return the digest of what Redis
        holds (read back), to compare with ``exports.columns_digest(columns)``.
        ``migrating``: the copy continues the columns' event sequence and yields no
        events of its own (a subscriber moving with the session misses nothing)."""
        self.import_columns(columns, continue_from=columns.sequence if migrating else None)
        failpoints.hit("migration.import_reply")
        return columns_digest(self.export_columns())

    def commit(self) -> None:
        """Make a session opened ``pending`` visible to others, with its whole TTL
        (idempotent)."""
        self._check_open()
        ttl_ms = int(self._run(scripts.COMMIT, self._keys, [self.incarnation]))
        self.ttl_seconds = ttl_ms / 1000 or None

    def close_remote(self) -> None:
        """Delete the session in Redis whoever created it (a migration removing its
        half-made copy); ``SessionNotFound`` if it is gone already. The handle stays
        open: :meth:`cleanup` it after."""
        self._check_open()
        self._run(scripts.CLOSE, self._keys, [self.incarnation, round(TOMBSTONE_SECONDS * 1000)])

    def replies(self, request_id: str, count: int = 16) -> list[list[Any]]:
        """The remembered replies of a relayed write's scripts (``call_scope``), in
        the order they were sent: what a retry of that write was answered with."""
        self._check_open()
        ids = [f"{request_id}.{n}" for n in range(count)]
        found = self._read(scripts.REPLIES, *ids)
        replies: list[list[Any]] = []
        for packed in found:
            if packed is None:
                break
            replies.append(_unpack(packed))
        return replies

    def history_start(self) -> int:
        """The oldest event sequence the session's stream still holds (its next
        sequence when it holds none)."""
        self._check_open()
        return int(self._read(scripts.FIRST_EVENT))  # one script: no write between

    def _import_preconditions(self, columns: ExportColumns) -> None:
        """Check ``columns`` as the session actor would, against the session's names
        and ids (read now): raises the error it would raise first."""
        flat = self._read(scripts.NAMES)
        table = SessionTable(self.session_id)
        placeholder = compile_type("<placeholder>", "integer", None)
        for at in range(0, len(flat), 2):
            name, var_id = _text(flat[at]), _text(flat[at + 1])
            record = Record(var_id, name, 0, 0, {}, 0.0, 0.0, placeholder, None)
            table.index[name] = table.index[var_id] = table.by_id[var_id] = record
        check_variable_count(
            self.session_id, len(table.by_id), columns.variable_count, self._limits
        )
        records_from_columns(columns, table, self._limits)

    # -- session --------------------------------------------------------------------------

    def heartbeat(self) -> float | None:
        """Refresh the expiry of every key of the session; return when it would expire
        (epoch seconds), or None for a session without a TTL."""
        expires: float | None = self.session_info(heartbeat=True)["expires_at"]
        return expires

    def subscribe(
        self, pattern: str | None, subscriber: Subscriber, *, start: int | None = None
    ) -> RedisSubscription:
        """Deliver each change to variables whose names match ``pattern`` (a glob;
        None: all) to ``subscriber``, a callable or a Pykka actor, from the session's
        stream, whichever process wrote it; returns the subscription.

        Starts at the session's next sequence, read in this call (or at ``start``:
        past the stream's history, one ``overflow`` event first).
        """
        self._check_open()
        glob = check_pattern(pattern)
        check_subscriber(subscriber)
        if start is None:
            start = int(self._read(scripts.INFO, "0")[0])
        subscription = RedisSubscription(
            self._connections,
            self.session_id,
            self.incarnation,
            self._keys,
            glob,
            subscriber,
            start,
        )
        with self._lock:
            self._subscriptions = [s for s in self._subscriptions if s.active]
            self._subscriptions.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Any) -> None:
        """Stop a subscription; no event is delivered once this returns."""
        if not isinstance(subscription, RedisSubscription):
            raise TypeError(f"not a subscription of a RedisState: {subscription!r}")
        subscription.close()

    @classmethod
    def requires_bridge(cls) -> bool:
        return False

    @classmethod
    def capabilities(cls) -> dict[str, bool]:
        return {
            "atomic_updates": True,  # one Lua script per write
            "streaming": True,  # Redis Streams, written by the same script
            "persistence": True,  # outlives every process; as durable as Redis is set up
            "distribution": True,  # any process reaching the Redis shares the session
        }

    def cleanup(self) -> None:
        """Delete the session if this handle owns it, else detach; idempotent.

        Subscriptions end with a ``closed`` event: the owner's appends it to the
        stream for every subscriber everywhere; a detaching handle ends its own. A
        Redis that cannot be reached is logged, not raised (the session then expires
        with its TTL).
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            subscriptions, self._subscriptions = self._subscriptions, []
        try:
            closed = False
            if self.owner and self._keys:
                try:
                    self._run(
                        scripts.CLOSE,
                        self._keys,
                        [self.incarnation, round(TOMBSTONE_SECONDS * 1000)],
                        retry=False,
                    )
                    closed = True
                except SessionNotFound:
                    pass  # expired (or closed) already
                except StateError as exc:
                    logger.warning("closing session %s failed: %s", self.session_id, exc)
            if not closed:
                for subscription in subscriptions:
                    subscription.finish()
        finally:
            self._definitions.clear()
            self._metadata.clear()
            release_connections(self._connections)

    def __repr__(self) -> str:
        role = "owner" if self.owner else "attached"
        state = "closed" if self._closed else role
        return f"<RedisState {self.session_id} at {self.where} ({state})>"
