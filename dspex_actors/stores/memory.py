"""The memory store: each session one SessionActor in this process (the default).

The same actor LocalState uses owns a session's variables, validation and versions,
so a bridged session behaves exactly as a local one. The store runs on the
server's event loop and never blocks it on a session's work:

* reads run lock-free on the session's published table, and only when they meet a
  write in progress go to the actor; those that scan a large session (a listing,
  an export) run off the loop (:func:`~dspex_actors.bulk.off_loop`);
* writes are delivered to the actor with ``tell`` (:class:`~dspex_actors.messages.
  Deliver`), which answers through a callback into the loop: a waiting call costs a
  pending future, not a thread. If the caller's deadline passes before the actor
  took the write, the store takes it back (one claim token decides), so it never
  runs and the caller hears ``BridgeUnavailable`` (not applied);
* a write's request id is remembered with its answer (the last
  :data:`~dspex_actors.stores.base.DEDUPE_WINDOW` ids per session); a repeat gets
  the first answer, or waits for it while it is still running.

Actors that die are restarted through the shared supervision policy
(:mod:`dspex_actors.restarts`). Work that blocks (starting and stopping actor
threads) is short and bounded; closing sessions runs in the loop's executor.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pykka

from dspex_actors import failpoints
from dspex_actors.bulk import BULK_ITEMS, off_loop
from dspex_actors.engine import ActorSession
from dspex_actors.errors import (
    BridgeUnavailable,
    LimitExceeded,
    OutcomeUnknown,
    SessionClosed,
    StateError,
)
from dspex_actors.limits import DEFAULT_LIMITS, Limits, check_session_id
from dspex_actors.messages import Control, OpenEvents, ReadOperation, WriteOperation
from dspex_actors.records import Opened, SessionInfo, check_pattern
from dspex_actors.restarts import GiveUpHook, RestartHook, RestartPolicy, RestartSupervisor
from dspex_actors.session import MISSED, Missed, SessionTable, new_session_id
from dspex_actors.stores.base import DEDUPE_WINDOW, PENDING_TTL, Watching, not_found
from dspex_actors.streaming import DEFAULT_HISTORY, EventLog, follow, fulfil
from dspex_actors.vartypes import check_metadata, plain_copy

__all__ = ["MemoryStore"]

logger = logging.getLogger(__name__)

_R = TypeVar("_R")

DEFAULT_DEADLINE = 60.0
"""Seconds a write may wait for its actor when the caller set no deadline."""


@dataclass(slots=True)
class _Session:
    """A session held by the store; also the restart supervisor's child."""

    engine: ActorSession
    table: SessionTable
    incarnation: str
    created_at: float  # epoch seconds
    opened: float  # the store's clock at created_at
    last_active: float  # the store's clock
    give_up_hook: Callable[[str, StateError], None]
    pending: bool = False
    creator: str | None = None  # the request id of the open that created it
    results: OrderedDict[str, asyncio.Future[Any]] = field(default_factory=OrderedDict)
    forgotten_at: float = -math.inf
    """The store's clock when the last answer was forgotten (or, for a session a
    durable store loaded, when it was loaded): a write sent before then may have
    been applied with no trace left here."""

    @property
    def session_id(self) -> str:
        return self.table.session_id

    def needs_restart(self) -> bool:
        return not self.engine.alive

    def restart(self) -> None:
        self.engine.restart()

    def give_up(self, error: StateError) -> None:
        self.give_up_hook(self.session_id, error)

    def remember(self, request_id: str, answer: asyncio.Future[Any], now: float) -> None:
        self.results[request_id] = answer
        while len(self.results) > DEDUPE_WINDOW:
            self.results.popitem(last=False)
            self.forgotten_at = now


class MemoryStore:
    """Sessions in this process's memory (see the module docstring)."""

    kind = "memory"

    def __init__(
        self,
        *,
        limits: Limits = DEFAULT_LIMITS,
        session_ttl: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        policy: RestartPolicy | None = None,
        on_restart: RestartHook | None = None,
        on_give_up: GiveUpHook | None = None,
        event_history: int = DEFAULT_HISTORY,
    ) -> None:
        if not session_ttl > 0:
            raise ValueError(f"session_ttl must be positive, got {session_ttl!r}")
        self.limits = limits
        self.session_ttl = session_ttl
        self.event_history = event_history
        self._clock = clock
        self._sessions: dict[str, _Session] = {}
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None  # the one it serves on
        self.dedupe_hits = 0
        """Writes answered from the request-id window, not applied again (the
        server's metrics read it)."""
        self._restarts = RestartSupervisor.start_supervisor(
            policy or RestartPolicy(),
            on_restart=on_restart,
            on_give_up=on_give_up,
            clock=clock,
            what="session",
        )

    # -- sessions -------------------------------------------------------------------

    def _find(self, session_id: str, incarnation: str | None = None) -> _Session:
        """The session (that incarnation, when one is given); SessionNotFound if
        absent or another incarnation holds the id now."""
        entry = self._sessions.get(session_id)
        if entry is None or (incarnation and incarnation != entry.incarnation):
            raise not_found(session_id)
        return entry

    def _live(self, session_id: str, incarnation: str | None = None) -> _Session:
        """The session as :meth:`_find` gives it, marked active now."""
        entry = self._find(session_id, incarnation)
        entry.last_active = self._clock()
        return entry

    def census(self) -> tuple[int, int]:
        """Sessions held and the variables in them, now (the server's metrics call it
        from their scrape's thread: the map is copied in one step under the GIL)."""
        entries = list(self._sessions.values())
        return len(entries), sum(len(entry.table.by_id) for entry in entries)

    def session_engine(self, session_id: str) -> ActorSession:
        """The engine holding a session (for supervision tools and tests)."""
        entry = self._sessions.get(session_id)
        if entry is None:
            raise not_found(session_id)
        return entry.engine

    async def open(
        self,
        session_id: str | None,
        *,
        create: bool,
        metadata: dict[str, Any] | None,
        pending: bool = False,
        request_id: str | None = None,
    ) -> Opened:
        if session_id is not None:
            check_session_id(session_id, self.limits)
        if self._closing:
            raise BridgeUnavailable("the store is closing; the session was not opened")
        self._loop = asyncio.get_running_loop()
        sid = session_id or new_session_id()
        entry = self._sessions.get(sid)
        if entry is not None and request_id and request_id == entry.creator:
            entry.last_active = self._clock()  # the creator's retry: still its creation
            return Opened(sid, True, entry.incarnation, self._ttl(entry))
        if entry is not None:
            if pending or entry.pending:
                if not create and entry.pending:
                    raise not_found(sid)
                raise SessionClosed(
                    f"session {sid!r} already exists"
                    + (" (being created by a migration; retry later)" if entry.pending else ""),
                    session_id=sid,
                )
            entry.last_active = self._clock()
            return Opened(sid, False, entry.incarnation, self.session_ttl)
        if not create:
            raise not_found(sid)
        if len(self._sessions) >= self.limits.max_sessions:
            raise LimitExceeded(
                f"the store holds {len(self._sessions)} sessions, the limit; cannot open "
                f"{sid!r} (rule 'max_sessions')",
                limit="max_sessions",
            )
        incarnation = uuid.uuid4().hex
        table = self._new_table(sid, incarnation)
        # No actor runs on the table yet: its creator writes the session metadata.
        table.metadata = check_metadata("<session>", metadata)
        entry = self._hold(table, incarnation, time.time(), pending=pending, creator=request_id)
        return Opened(sid, True, entry.incarnation, self._ttl(entry))

    def _new_table(self, session_id: str, incarnation: str) -> SessionTable:
        """A new session's table (a durable store gives it a journal)."""
        return SessionTable(session_id)

    def _hold(
        self,
        table: SessionTable,
        incarnation: str,
        created_at: float,
        *,
        pending: bool,
        creator: str | None,
        age: float = 0.0,
    ) -> _Session:
        """Start an actor on ``table`` and hold the session (new, or reloaded by a
        durable store: then ``age`` is the seconds since ``created_at``); its event
        log starts at the table's next event, so a watcher can resume from the first
        event."""
        table.events = EventLog(table.session_id, table.next_event, self.event_history)
        engine = ActorSession(
            table, on_exit=self._restarts.exited, limits=self.limits, history=self.event_history
        )
        now = self._clock()
        entry = _Session(
            engine=engine,
            table=table,
            incarnation=incarnation,
            created_at=created_at,
            opened=now - age,  # the store's clock at created_at
            last_active=now,
            give_up_hook=self._give_up,
            pending=pending,
            creator=creator,
        )
        self._sessions[table.session_id] = entry
        self._restarts.watch(entry)
        return entry

    def _ttl(self, entry: _Session) -> float:
        return min(self.session_ttl, PENDING_TTL) if entry.pending else self.session_ttl

    async def commit(self, session_id: str, incarnation: str) -> None:
        entry = self._find(session_id, incarnation)
        entry.pending = False
        entry.last_active = self._clock()

    async def close(self, session_id: str, incarnation: str | None) -> None:
        await failpoints.reached("store.close")
        entry = self._find(session_id, incarnation)
        del self._sessions[session_id]
        self._restarts.forget(session_id)
        await asyncio.get_running_loop().run_in_executor(None, _close, entry, "closed")

    async def info(self, session_id: str, incarnation: str | None = None) -> SessionInfo:
        entry = self._find(session_id, incarnation)
        # The activity before this call (which counts as activity too), on the wall
        # clock: the store's clock only measures intervals.
        last_active_at = entry.created_at + (entry.last_active - entry.opened)
        entry.last_active = self._clock()
        return SessionInfo(
            session_id=session_id,
            incarnation=entry.incarnation,
            variable_count=len(entry.table.by_id),
            created_at=entry.created_at,
            last_active_at=last_active_at,
            ttl_seconds=self._ttl(entry),
            metadata=plain_copy(entry.table.metadata),
            next_sequence=entry.table.next_event,
            expires_at=time.time() + self._ttl(entry),
        )

    async def heartbeat(self, session_id: str, incarnation: str | None = None) -> float:
        return time.time() + self._ttl(self._live(session_id, incarnation))

    async def watch(
        self,
        session_id: str,
        patterns: list[str],
        start: int | None,
        incarnation: str | None = None,
        *,
        progress: bool = False,
    ) -> Watching:
        globs = [check_pattern(pattern) for pattern in patterns]
        entry = self._live(session_id, incarnation)
        log = await self._deliver(entry, OpenEvents(), None)
        begin = log.next_sequence if start is None else start
        return Watching(follow(log, begin, globs, progress=progress), begin, entry.incarnation)

    async def settle(
        self, session_id: str, request_id: str, age: float, incarnation: str | None = None
    ) -> bool:
        entry = self._live(session_id, incarnation)
        now = self._clock()
        earlier = entry.results.get(request_id)
        if earlier is None:
            if now - max(age, 0.0) <= entry.forgotten_at:
                raise OutcomeUnknown(
                    f"session {session_id!r}: write {request_id!r} was sent {age:.3g}s ago, "
                    "before the oldest answer this server still remembers; it can no "
                    "longer tell whether it was applied",
                    session_id=session_id,
                )
            fence: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            fence.set_result(
                BridgeUnavailable(
                    f"session {session_id!r}: write {request_id!r} was settled as not "
                    "applied; it never will be (send it again with a new request id)",
                    session_id=session_id,
                    settled=True,
                )
            )
            entry.remember(request_id, fence, now)
            return False
        answer = await asyncio.shield(earlier)  # a write still running: its own deadline
        return not isinstance(answer, StateError)

    async def end_watches(self) -> None:
        for entry in list(self._sessions.values()):
            if entry.table.events is not None:
                entry.table.events.close()

    async def reap_expired(self) -> list[str]:
        now = self._clock()
        expired = [
            entry
            for entry in self._sessions.values()
            if now - entry.last_active >= self._ttl(entry)
        ]
        for entry in expired:
            del self._sessions[entry.session_id]
            self._restarts.forget(entry.session_id)
        loop = asyncio.get_running_loop()
        for entry in expired:
            if await loop.run_in_executor(None, _close, entry, "expired"):
                logger.info(
                    "session %s expired after %.3gs without activity",
                    entry.session_id,
                    self.session_ttl,
                )
        return [entry.session_id for entry in expired]

    def _give_up(self, session_id: str, error: StateError) -> None:
        """A session whose actor died too often is closed (called in the restart
        supervisor's thread; the map belongs to the loop, so it is removed there)."""
        loop = self._loop
        if loop is None:
            return
        try:  # removed before on_give_up runs, so callers see it gone
            asyncio.run_coroutine_threadsafe(self._remove_failed(session_id, error), loop).result(
                timeout=30.0
            )
        except (RuntimeError, TimeoutError):  # the loop closed or stalled: nothing is served
            logger.warning("session %s: could not be removed after repeated crashes", session_id)

    async def _remove_failed(self, session_id: str, error: StateError) -> None:
        entry = self._sessions.pop(session_id, None)
        if entry is not None:
            loop = asyncio.get_running_loop()
            loop.run_in_executor(None, _close, entry, f"closed after repeated crashes: {error}")

    async def aclose(self) -> None:
        """Stop the restart supervisor, then close every session."""
        self._closing = True
        loop = asyncio.get_running_loop()
        # In the executor: the supervisor may be waiting on this loop (_give_up).
        await loop.run_in_executor(None, self._restarts.stop, 60.0)
        entries = list(self._sessions.values())
        self._sessions.clear()
        for entry in entries:
            await loop.run_in_executor(None, _close, entry, "closed at shutdown")

    # -- operations -------------------------------------------------------------------

    def read_now(
        self, session_id: str, operation: ReadOperation[_R], incarnation: str | None = None
    ) -> _R | Missed:
        entry = self._live(session_id, incarnation)
        if _read_apart(entry, operation):
            return MISSED  # run() reads it there
        return entry.table.read(operation)

    async def run(
        self,
        session_id: str,
        operation: ReadOperation[_R] | WriteOperation[_R],
        *,
        request_id: str | None,
        deadline: float | None,
        incarnation: str | None = None,
    ) -> _R:
        entry = self._live(session_id, incarnation)
        if isinstance(operation, ReadOperation):
            if _read_apart(entry, operation):
                answer: _R | Missed = await off_loop(
                    entry.table.read, operation, deadline=deadline
                )
            else:
                answer = entry.table.read(operation)
            if answer is not MISSED:
                result: _R = answer  # type: ignore[assignment]  # not MISSED: an _R
                return result
            return await self._deliver(entry, operation, deadline)
        await failpoints.reached("store.apply")
        if request_id:
            # No await from here until _deliver remembers the id: a Settle between
            # the check and the delivery would otherwise be overtaken.
            earlier = entry.results.get(request_id)
            if earlier is not None:
                self.dedupe_hits += 1
                repeated: _R = _outcome(await asyncio.shield(earlier))
                return repeated
        if deadline is not None and time.monotonic() >= deadline:
            raise BridgeUnavailable(
                f"session {session_id!r}: {type(operation).__name__} arrived after its "
                "deadline (delayed in transit, or the client's clock is behind this "
                "server's by more than its timeout) and was not applied",
                session_id=session_id,
            )
        applied = await self._deliver(entry, operation, deadline, request_id)
        await failpoints.reached("store.reply")
        return applied

    async def _deliver(
        self,
        entry: _Session,
        operation: ReadOperation[_R] | WriteOperation[_R] | Control[_R],
        deadline: float | None,
        request_id: str | None = None,
    ) -> _R:
        """Hand ``operation`` to the session's actor and await its answer (see above)."""
        try:
            answer, claim = entry.engine.deliver(operation, asyncio.get_running_loop())
        except pykka.ActorDeadError:
            raise BridgeUnavailable(
                f"session {entry.session_id!r}: its actor is restarting; "
                f"{type(operation).__name__} was not applied"
            ) from None
        if request_id:
            entry.remember(request_id, answer, self._clock())
        left = (deadline if deadline is not None else time.monotonic() + DEFAULT_DEADLINE) - (
            time.monotonic()
        )
        try:
            result = await asyncio.wait_for(asyncio.shield(answer), max(left, 0.0))
        except TimeoutError:
            try:
                claim.pop()
            except IndexError:
                result = await answer  # the actor has it: its turn is bounded
            else:
                if request_id:
                    entry.results.pop(request_id, None)
                refused = BridgeUnavailable(
                    f"session {entry.session_id!r} was busy: {type(operation).__name__} "
                    "did not start before the deadline and was not applied"
                )
                fulfil(answer, refused)  # a retry already waiting on it hears it too
                raise refused from None
        outcome: _R = _outcome(result)
        return outcome


def _read_apart(entry: _Session, operation: ReadOperation[Any]) -> bool:
    """Whether ``operation`` scans a session so large that it is read off the loop."""
    return operation.scans and len(entry.table.by_id) >= BULK_ITEMS


def _outcome(answer: Any) -> Any:
    """The actor's answer as the caller gets it: a StateError is raised."""
    if isinstance(answer, StateError):
        raise answer
    return answer


def _close(entry: _Session, why: str) -> bool:
    """Stop a session's actor; a failure is logged, not raised (others still close)."""
    try:
        entry.engine.close()
    except Exception:
        logger.exception("session %s (%s): closing its actor failed", entry.session_id, why)
        return False
    return True
