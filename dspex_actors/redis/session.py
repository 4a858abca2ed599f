"""The Redis engine: one session's keys in one Redis, and the calls of its scripts.

:class:`SessionEngine` is the bottom layer every Redis front end stands on:
:class:`~dspex_actors.redis.state.RedisState` (a handle in any process), the
SessionStore's Redis store (:mod:`dspex_actors.redis.store`), both on
:class:`RedisSession` (redis-py, blocking), and ``AsyncRedisState``
(``redis.asyncio``). It does no I/O itself: each method that talks to Redis is a
step, a generator that asks for requests (:mod:`dspex_actors.redis.steps`), run by
the front end's driver, so retries, settling and errors are written once. It opens a session
(each creation of an id is a new incarnation, and an engine only ever works on its
own), calls the session's Lua scripts (:mod:`dspex_actors.redis.scripts`) within a
deadline, classes every failure, and keeps what a writer needs to check a value in
this process: each variable's compiled type, cached per (id, ordinal), which the
scripts check again. What each operation runs is its table,
:mod:`dspex_actors.redis.operations`.

**Failures.** A call is bounded by ``timeout``. Redis not reachable:
``BridgeUnavailable`` (never applied; the engine retries with backoff within the
deadline). A write carries a request id, and the script remembers each reply for
a while (twice the timeout, at least 30 s): a write whose reply was lost is sent
again with the same id and answered with the first reply, so it is applied once.
A write that got no answer within the deadline is settled
(:func:`dspex_actors.redis.writes.send`); only when that fails too does it raise
``OutcomeUnknown``. A caller from outside (a SessionStore server) fixes the request
id and deadline with :func:`~dspex_actors.redis.connections.call_scope`.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

import msgpack

from dspex_actors.backoff import Backoff
from dspex_actors.errors import (
    BridgeUnavailable,
    LimitExceeded,
    OutcomeUnknown,
    SessionClosed,
    SessionNotFound,
    StateError,
    Unauthenticated,
    VariableExists,
    VersionConflict,
)
from dspex_actors.limits import Limits, check_session_id
from dspex_actors.records import SessionInfo, VariableRecord, variable_not_found
from dspex_actors.redis import scripts
from dspex_actors.redis.connections import (
    CHAIN_LENGTH,
    Connections,
    acquire_connections,
    current_scope,
    drive,
    redis_module,
    release_connections,
)
from dspex_actors.redis.scripts import Script, session_keys
from dspex_actors.redis.steps import Attempt, Pause, Steps, Unanswered
from dspex_actors.session import new_session_id
from dspex_actors.urls import redacted
from dspex_actors.vartypes import (
    MAX_VERSION,
    Validator,
    check_metadata,
    compile_type,
    utf8_encodable,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "PENDING_TTL",
    "TOMBSTONE_SECONDS",
    "Definition",
    "RedisSession",
    "Retry",
    "SessionEngine",
    "pack",
    "text",
    "unpack",
]

DEFAULT_TIMEOUT = 5.0
"""Seconds a call may take, retries included, unless said otherwise."""
PENDING_TTL = 60.0
"""Seconds a migration's uncommitted copy lives (the SessionStore's, too)."""
TOMBSTONE_SECONDS = 60.0
"""How long a closed session's stream stays, so its subscribers read ``closed``."""
_MAX_VERSION = str(MAX_VERSION)

R = TypeVar("R")


def pack(data: Any) -> bytes:
    packed: bytes = msgpack.packb(data, use_bin_type=True)
    return packed


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)


def text(data: bytes) -> str:
    return data.decode()


class Definition(NamedTuple):
    """What a writer keeps of a variable to validate its writes: it never changes
    for one (id, ordinal), so it may be cached; the scripts check both."""

    id: str
    name: str
    ordinal: int
    validator: Validator


class Retry(Exception):
    """The write met a change its plan did not know of: plan it again from Redis."""


class SessionEngine:
    """One incarnation of one session in one Redis: the engine, with no I/O of its own.

    Every method that talks to Redis is a step (:mod:`dspex_actors.redis.steps`): a
    generator a driver runs. :class:`RedisSession` drives them on redis-py;
    ``AsyncRedisSession`` (:mod:`dspex_actors.aio.redis`) on ``redis.asyncio``.
    """

    def __init__(
        self,
        *,
        url: str,
        session_id: str,
        timeout: float,
        limits: Limits,
        event_history: int,
    ) -> None:
        self.session_id = session_id
        self.url = url
        self.where = redacted(url)  # the URL for messages: no password
        self.created = False
        self.incarnation = ""
        self.ttl_seconds: float | None = None
        self.errors = redis_module().exceptions  # redis.asyncio raises the same classes
        self.timeout = timeout
        self.limits = limits
        self.history = str(event_history)
        self.keys: tuple[str, ...] = ()
        self.definitions: dict[str, Definition] = {}
        self.metadata: dict[str, tuple[int, dict[str, Any]]] = {}
        self._validators: dict[bytes, Validator] = {}
        self._packed_definitions: dict[int, tuple[Validator, bytes]] = {}
        self._closed = False
        self._lock = threading.Lock()

    @staticmethod
    def check_options(
        session_id: str | None,
        ttl: float | None,
        timeout: float,
        event_history: int,
        limits: Limits,
    ) -> None:
        """What opening a session checks before it talks to Redis."""
        if session_id is not None:
            check_session_id(session_id, limits)
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        if ttl is not None and not ttl > 0:
            raise ValueError(f"ttl must be positive or None, got {ttl!r}")
        if event_history <= 0:
            raise ValueError(f"event_history must be positive, got {event_history!r}")

    def settler(self, steps: Callable[[], Steps[bool]]) -> Callable[[], bool] | None:
        """How an ``OutcomeUnknown`` of this engine settles itself later (a blocking
        call of ``steps``), or None where a blocking call cannot be made (an asyncio
        handle: its ``await settle(request_id, age)`` does it)."""
        return None

    def _closing(self) -> bool:
        """Mark the engine closed: whether it was open (the caller then lets go of
        its connections); later calls raise ``SessionClosed``."""
        with self._lock:
            if self._closed:
                return False
            self._closed = True
        self.definitions.clear()
        self.metadata.clear()
        return True

    @property
    def closed(self) -> bool:
        return self._closed

    def opening(
        self,
        create: bool,
        ttl: float | None,
        pending: bool,
        metadata: Mapping[str, Any] | None,
        request_id: str | None,
        incarnation: str | None,
    ) -> Steps[None]:
        """Open the session (see :meth:`RedisSession.open`, whose arguments these are)."""
        meta = check_metadata("<session>", metadata, self.limits) if create else {}
        yield from self._open(create, ttl, pending, meta, request_id or "", incarnation)
        if incarnation is not None and self.incarnation != incarnation:
            raise self.gone()

    def _open(
        self,
        create: bool,
        ttl: float | None,
        pending: bool,
        metadata: dict[str, Any],
        request_id: str,
        incarnation: str | None = None,
    ) -> Steps[None]:
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
            args += [key, pack(value)]
        reply = yield from self.call(scripts.OPEN, keys[:-1], args)
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
        self.created = reply[0] == 1
        self.incarnation = text(reply[1])
        self.ttl_seconds = int(reply[2]) / 1000 or None
        self.keys = session_keys(self.session_id, self.incarnation)

    def call(
        self,
        script: Script,
        keys: Sequence[str],
        args: Sequence[Any],
        *,
        write: bool = False,
        retry: bool = True,
        extra_time: float = 0.0,
        budget: float | None = None,
        request_id: str = "",
    ) -> Steps[Any]:
        """Run one script within the deadline; the one place Redis errors are translated.

        An attempt that got no answer is retried with backoff until the deadline (a
        write with the same request id, so Redis applies it once); then
        ``OutcomeUnknown`` for a write some attempt may have delivered, else
        ``BridgeUnavailable``. A ``write`` under ``?wait=N`` that fewer replicas
        acknowledged raises :class:`~dspex_actors.redis.connections.Unreplicated`
        (its sender decides). ``extra_time`` lengthens the deadline, and each
        attempt's wait for its reply, for a script that runs long; ``budget``
        replaces the timeout (a settle's short bound); ``request_id`` names a write.
        """
        errors = self.errors
        allowed = self.timeout + extra_time if budget is None else budget
        deadline = time.monotonic() + allowed
        scope = current_scope()
        if scope is not None and scope.deadline is not None:
            if time.monotonic() >= scope.deadline:  # not one attempt after the deadline
                raise BridgeUnavailable(
                    f"session {self.session_id!r}: the caller's deadline passed before "
                    f"{script.name} was sent; not applied",
                    session_id=self.session_id,
                )
            deadline = min(deadline, scope.deadline)
        read_timeout = allowed if extra_time or budget is not None else None
        backoff = Backoff(Backoff.RETRY)
        maybe_sent = False
        failure: Exception
        while True:
            attempt = Attempt(script, keys, args, read_timeout, write, request_id)
            try:
                return (yield attempt)
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
            pause = backoff.next()
            if not retry or deadline - time.monotonic() <= pause:
                raise self._failed(write, maybe_sent, failure) from failure
            yield Pause(pause)  # a retry's backoff, bounded by the call's deadline

    def _failed(self, write: bool, maybe_sent: bool, error: Exception) -> StateError:
        if write and maybe_sent:
            return OutcomeUnknown(
                f"Redis at {self.where} did not answer within {self.timeout}s; the write to "
                f"session {self.session_id!r} may or may not have been applied (last "
                f"failure: {error})",
                session_id=self.session_id,
            )
        return BridgeUnavailable(
            f"Redis at {self.where} could not be reached within {self.timeout}s "
            f"(not applied): {error}",
            session_id=self.session_id,
        )

    def _refused(self, script: Script, exc: Exception) -> StateError:
        """What a Redis error reply means to the caller (nothing was applied)."""
        text = str(exc)
        errors = self.errors
        if "DSPEX_GONE" in text:
            return self.gone()
        if isinstance(exc, errors.NoPermissionError) or text.startswith(("NOAUTH", "NOPERM")):
            return Unauthenticated(f"Redis at {self.where} refused {script.name}: {text}")
        if text.startswith("OOM"):
            return LimitExceeded(
                f"Redis at {self.where} is out of memory (its maxmemory): {text}",
                limit="redis_maxmemory",
            )
        return StateError(f"Redis at {self.where} refused {script.name}: {text}")

    def gone(self) -> SessionNotFound:
        return SessionNotFound(
            f"session {self.session_id!r} not found in Redis at {self.where} "
            "(closed, expired, or opened again since)",
            session_id=self.session_id,
        )

    def check_open(self) -> None:
        if self._closed:
            raise SessionClosed(f"session {self.session_id!r}: this handle is cleaned up")

    def read(self, script: Script, *args: Any) -> Steps[Any]:
        self.check_open()
        return (yield from self.call(script, self.keys, [self.incarnation, *args]))

    def missing(self, identifier: Any) -> StateError:
        return variable_not_found(identifier, self.session_id)

    def validator(self, name: str, definition: bytes) -> Validator:
        """The compiled type of a stored definition (cached by its bytes)."""
        validator = self._validators.get(definition)
        if validator is None:
            type_name, constraints = unpack(definition)
            validator = compile_type(name, type_name, constraints, self.limits)
            if len(self._validators) >= 1024:
                self._validators.clear()
            self._validators[definition] = validator
        return validator

    def definition_bytes(self, validator: Validator) -> bytes:
        entry = self._packed_definitions.get(id(validator))
        if entry is not None and entry[0] is validator:
            return entry[1]
        packed = pack([validator.type, validator.constraints])
        if len(self._packed_definitions) >= 1024:
            self._packed_definitions.clear()
        self._packed_definitions[id(validator)] = (validator, packed)
        return packed

    def remember(self, definition: Definition) -> None:
        if len(self.definitions) >= 4 * self.limits.max_variables_per_session:
            self.definitions.clear()
            self.metadata.clear()
        self.definitions[definition.id] = self.definitions[definition.name] = definition

    def forget(self, identifier: str) -> None:
        definition = self.definitions.pop(identifier, None)
        if definition is not None:
            self.definitions.pop(definition.id, None)
            self.definitions.pop(definition.name, None)
            self.metadata.pop(definition.id, None)

    def describe(self, identifiers: list[str]) -> Steps[dict[str, Definition]]:
        """Definitions (and current metadata) of the identifiers present, from Redis."""
        reply = yield from self.read(scripts.DESCRIBE, *identifiers)
        found: dict[str, Definition] = {}
        for n, identifier in enumerate(identifiers):
            var_id, ordinal, name, definition, version, metadata = reply[6 * n : 6 * n + 6]
            self.forget(identifier)
            if var_id is None:
                continue
            named = text(name)
            found[identifier] = entry = Definition(
                text(var_id), named, int(float(ordinal)), self.validator(named, definition)
            )
            self.remember(entry)
            self.metadata[entry.id] = (int(version), unpack(metadata))
        return found

    def definitions_for(
        self, identifiers: Iterable[str], fresh: bool, with_metadata: bool
    ) -> Steps[dict[str, Definition]]:
        """Definitions of the identifiers present: cached ones unless ``fresh``, the
        rest (and those whose metadata is needed and not known) read in one call."""
        found: dict[str, Definition] = {}
        wanted: list[str] = []
        for identifier in dict.fromkeys(identifiers):
            cached = None if fresh else self.definitions.get(identifier)
            if cached is not None and (not with_metadata or cached.id in self.metadata):
                found[identifier] = cached
            else:
                wanted.append(identifier)
        if wanted:
            found.update((yield from self.describe(wanted)))
        return found

    @staticmethod
    def identifies(identifier: Any) -> bool:
        """Whether ``identifier`` could name a variable at all (and can be sent)."""
        return isinstance(identifier, str) and utf8_encodable(identifier)

    @staticmethod
    def record_of(row: list[Any], at: int) -> VariableRecord:
        """The record of the 8 fields ``row`` holds from ``at`` (the scripts' ``row``)."""
        var_id, name, definition, value, version, metadata, created, updated = row[at : at + 8]
        type_name, constraints = unpack(definition)
        return VariableRecord(
            id=text(var_id),
            name=text(name),
            type=type_name,
            value=unpack(value),
            constraints=constraints,
            metadata=unpack(metadata),
            version=int(version),
            created_at=float(created),
            last_updated_at=float(updated),
        )

    def commit_pending(self) -> Steps[None]:
        """Make a session opened ``pending`` visible to others, with its whole TTL."""
        ttl_ms = int((yield from self.call(scripts.COMMIT, self.keys, [self.incarnation])))
        self.ttl_seconds = ttl_ms / 1000 or None

    def close(self, *, retry: bool = False) -> Steps[None]:
        """Delete the session in Redis whoever created it, leaving a ``closed`` entry
        for its watchers; ``SessionNotFound`` if it is gone already. One attempt
        unless ``retry``: a session left by a lost reply expires with its TTL."""
        yield from self.call(
            scripts.CLOSE,
            self.keys,
            [self.incarnation, round(TOMBSTONE_SECONDS * 1000)],
            retry=retry,
        )

    def info(self, *, heartbeat: bool = False) -> Steps[SessionInfo]:
        """The session as Redis holds it (``heartbeat``: every key's TTL reset first).

        Redis keeps no "last used": the TTL left tells it, to a hundredth of the TTL.
        """
        reply = yield from self.read(scripts.INFO, "1" if heartbeat else "0", "1")
        next_seq, count, created, ttl_ms, pttl = reply[:5]
        now = time.time()
        ttl = int(ttl_ms) / 1000 or None
        expires = now + int(pttl) / 1000 if int(pttl) >= 0 else None
        return SessionInfo(
            self.session_id,
            self.incarnation,
            int(count),
            float(created),
            expires - ttl if expires is not None and ttl else now,
            ttl,
            {text(reply[at]): unpack(reply[at + 1]) for at in range(5, len(reply), 2)},
            int(next_seq),
            expires,
        )

    @staticmethod
    def chain(request_id: str) -> list[str]:
        """The request ids of a relayed write's scripts (``call_scope``), in order."""
        return [f"{request_id}.{n}" for n in range(CHAIN_LENGTH)]

    def replies(self, request_id: str) -> Steps[list[list[Any]]]:
        """The remembered replies of a relayed write's scripts, in the order they
        were sent: what a retry of that write was answered with."""
        self.check_open()
        found = yield from self.read(scripts.REPLIES, *self.chain(request_id))
        replies: list[list[Any]] = []
        for packed in found:
            if packed is None:
                break
            replies.append(unpack(packed))
        return replies

    def history_start(self) -> Steps[int]:
        """The oldest event sequence the session's stream still holds (its next
        sequence when it holds none)."""
        self.check_open()
        return int((yield from self.read(scripts.FIRST_EVENT)))  # one script: no write between

    def exists_error(self, name: str) -> VariableExists:
        return VariableExists(
            f"variable {name!r} already exists in session {self.session_id!r}", variable=name
        )

    def conflict(self, name: str, expected: int | None, actual: int) -> VersionConflict:
        return VersionConflict(
            f"variable {name!r}: expected version {expected!r} but it is at version {actual}",
            variable=name,
            expected=expected,
            actual=actual,
        )

    def overflow(self, name: str) -> LimitExceeded:
        return LimitExceeded(
            f"variable {name!r} is at version {_MAX_VERSION}, the largest there is: "
            "it cannot be written again",
            limit="max_version",
            variable=name,
        )


class RedisSession(SessionEngine):
    """The engine on redis-py, blocking: its steps run by
    :func:`~dspex_actors.redis.connections.drive` on connections shared per URL."""

    def __init__(self, *, connections: Connections, **engine: Any) -> None:
        """Wrap shared connections; use :meth:`open`, which opens the session."""
        super().__init__(**engine)
        self.connections = connections

    @classmethod
    def open(
        cls,
        *,
        session_id: str | None,
        url: str,
        ttl: float | None,
        timeout: float,
        create: bool,
        limits: Limits,
        event_history: int,
        pending: bool = False,
        metadata: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        incarnation: str | None = None,
    ) -> RedisSession:
        """Open ``session_id`` (a fresh one when None), creating it if absent and
        ``create`` (the creator's ``ttl``, None: no expiry), ``pending`` (a
        migration's copy, invisible until committed), with the new session's
        ``metadata``; ``request_id`` tells a retry of the open that created the
        session that it did; ``incarnation`` attaches to exactly that one, even
        pending (``SessionNotFound`` if the session is another one now)."""
        cls.check_options(session_id, ttl, timeout, event_history, limits)
        session = cls(
            connections=acquire_connections(url, timeout),
            url=url,
            session_id=session_id or new_session_id(),
            timeout=timeout,
            limits=limits,
            event_history=event_history,
        )
        try:
            session.drive(session.opening(create, ttl, pending, metadata, request_id, incarnation))
        except BaseException:
            session.release()
            raise
        return session

    def drive(self, steps: Steps[R]) -> R:
        """Run one of the engine's steps here, blocking."""
        return drive(self.connections, steps)

    def settler(self, steps: Callable[[], Steps[bool]]) -> Callable[[], bool] | None:
        return lambda: self.drive(steps())

    def release(self) -> None:
        """Let go of the connections; later calls raise ``SessionClosed``; idempotent."""
        if self._closing():
            release_connections(self.connections)
