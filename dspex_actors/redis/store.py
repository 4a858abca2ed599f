"""The Redis store: a SessionStore server's sessions live in Redis (``--store redis://``).

Each session runs on the Redis engine (:class:`~dspex_actors.redis.session.
RedisSession` and its table of operations), as ``RedisState`` does: the same keys and
Lua scripts, so a server, any other server on the same Redis, and any process using
``RedisState`` directly all see one session, decided by Redis. What a
client sees when two servers write one variable is what it sees with two
``RedisState`` handles: each write is one script, applied whole in the order Redis
runs them; versions grow by one per write whichever server sent it, and a
compare-and-set made against a version another server's write moved is refused
with ``VersionConflict``. A server restart loses nothing Redis kept (as durable as
the Redis server is configured: ``appendonly yes`` for a crash).

How it serves without blocking the event loop: redis-py is blocking, so each call
runs on one of this store's ``workers`` threads, taken from a queue bounded at 4,096
calls (a server's ``max_concurrent_calls`` keeps it far below). A call whose
deadline passed while it waited for a thread is never sent (``BridgeUnavailable``:
not applied); no read is answered without a thread (``read_now``). The store keeps
one attached engine per session it served lately (at most ``max_handles``; they
share one connection pool per Redis), so a definition is read from Redis once.

Exactly once across servers: a write's request id travels to Redis with it
(:func:`~dspex_actors.redis.connections.call_scope`), and Redis remembers the reply for
``dedupe_seconds``; a client's retry with the same id, through this server or
another, is answered with the first reply (also when the session changed since so
that the retry's own checks would now refuse it).

Watching: each watched session's Redis Stream is read into an
:class:`~dspex_actors.streaming.EventLog` shared by every watcher of that session
here; each watcher reads the log from its own cursor as a coroutine, so a slow
watcher gets ``overflow`` and never holds the reader. A watcher resuming from before
what the shared log holds gets a log of its own, read from Redis's history (or
``overflow``, past it). The store reads every such stream with one thread and one
connection (one per watched hash slot in a Redis Cluster:
:mod:`~dspex_actors.redis.follower`), only while one is watched; a log stops being
fed with its last watcher, and every log with the store. A failover that lost
events a log had given out makes it tell its watchers ``overflow``.

Sessions expire by Redis's own clock (each key's TTL); ``reap_expired`` has
nothing to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from dspex_actors.bulk import off_loop
from dspex_actors.errors import BridgeUnavailable, OutcomeUnknown, SessionNotFound, StateError
from dspex_actors.limits import DEFAULT_LIMITS, Limits, check_session_id
from dspex_actors.messages import ReadOperation, WriteOperation
from dspex_actors.records import Opened, SessionInfo, check_pattern
from dspex_actors.redis import operations, writes
from dspex_actors.redis.connections import call_scope
from dspex_actors.redis.follower import Followed, StreamFollower
from dspex_actors.redis.session import DEFAULT_TIMEOUT, RedisSession
from dspex_actors.session import MISSED, Missed, new_session_id
from dspex_actors.stores.base import EventStream
from dspex_actors.streaming import DEFAULT_HISTORY, Event, EventLog, Progress, follow

__all__ = ["DEDUPE_SECONDS", "RedisStore"]

_R = TypeVar("_R")
_T = TypeVar("_T")

DEDUPE_SECONDS = 120
"""Seconds Redis remembers a relayed write's reply (a client retries within its
deadline, far less)."""


@dataclass(slots=True, eq=False)
class _Feed:
    """One session's stream, read from Redis into a log for this server's watchers."""

    key: tuple[str, str]  # session id, incarnation
    log: EventLog
    watchers: int = 1
    followed: Followed | None = None

    def take(self, event: Event, cursor: int) -> None:
        """The follower's callback (its thread): append, or end the log at ``closed``;
        after the follower's overflow, the log goes on from where it does (``cursor``)."""
        log = self.log
        if event.kind == "closed":
            log.close()
        elif event.kind == "overflow":
            log.restart_at(cursor)
        else:
            if event.sequence != log.next_sequence:
                log.restart_at(event.sequence)
            log.append((event,))


class _Workers:
    """A fixed set of threads, started at once, taking calls from a bounded queue
    (a server's calls are bounded by its limits well below ``QUEUE``)."""

    QUEUE = 4096

    def __init__(self, count: int) -> None:
        self._lock = threading.Lock()
        self._stopping = False
        self._calls: queue.Queue[tuple[Callable[[], Any], Future[Any]] | None] = queue.Queue(
            self.QUEUE
        )
        self._threads = [
            threading.Thread(target=self._serve, name=f"dspex-redis-store-{n}", daemon=True)
            for n in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            work, future = call
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(work())
                except BaseException as exc:
                    future.set_exception(exc)

    async def run(self, work: Callable[[], _T]) -> _T:
        """``work``'s result, computed on a worker; ``BridgeUnavailable`` (not run)
        when the queue is full or the workers are stopping."""
        future: Future[_T] = Future()
        with self._lock:
            if self._stopping:
                raise BridgeUnavailable("the Redis store is closing; not applied")
            try:
                self._calls.put_nowait((work, future))
            except queue.Full:
                raise BridgeUnavailable(
                    f"the Redis store has {self.QUEUE} calls waiting; not applied"
                ) from None
        return await asyncio.wrap_future(future)

    def stop(self) -> None:
        """Finish the calls queued, then end every thread."""
        with self._lock:
            self._stopping = True
        for _ in self._threads:
            self._calls.put(None)  # blocks only while the queue is full: it drains
        for thread in self._threads:
            thread.join()


@dataclass(slots=True, eq=False)
class _Held:
    """An engine the store holds for a session, and how many calls use it now."""

    handle: RedisSession
    users: int = 0
    dropped: bool = False  # no longer held: let go once unused


class RedisStore:
    """Sessions in Redis, served by any number of servers (see the module docstring)."""

    kind = "redis"

    def __init__(
        self,
        url: str,
        *,
        limits: Limits = DEFAULT_LIMITS,
        session_ttl: float = 3600.0,
        event_history: int = DEFAULT_HISTORY,
        timeout: float = DEFAULT_TIMEOUT,
        workers: int = 16,
        max_handles: int = 4096,
        dedupe_seconds: int = DEDUPE_SECONDS,
    ) -> None:
        if not session_ttl > 0:
            raise ValueError(f"session_ttl must be positive, got {session_ttl!r}")
        if workers <= 0 or max_handles <= 0 or dedupe_seconds <= 0:
            raise ValueError("workers, max_handles and dedupe_seconds must be positive")
        self.url = url
        self.limits = limits
        self.session_ttl = session_ttl
        self.event_history = event_history
        self.timeout = timeout
        self.max_handles = max_handles
        self.dedupe_seconds = dedupe_seconds
        self._workers = _Workers(workers)
        self._lock = threading.Lock()
        self._handles: OrderedDict[str, _Held] = OrderedDict()
        self._feeds: dict[tuple[str, str], _Feed] = {}  # the shared log of each
        self._all_feeds: set[_Feed] = set()  # every log still fed
        self._follower = StreamFollower(url, timeout)
        self._leaving: set[asyncio.Task[None]] = set()
        self._closing = False

    async def _blocking(self, work: Callable[[], _T]) -> _T:
        """Run ``work`` in the store's threads; the loop only awaits it."""
        if self._closing:
            raise BridgeUnavailable("the store is closing; not applied")
        return await self._workers.run(work)

    # -- handles ------------------------------------------------------------------------

    def _attach(self, session_id: str, **options: Any) -> RedisSession:
        """A new engine on the session (blocking); ``options`` go to ``RedisSession.open``."""
        return RedisSession.open(
            session_id=session_id,
            url=self.url,
            ttl=self.session_ttl,
            timeout=self.timeout,
            limits=self.limits,
            event_history=self.event_history,
            **{"create": False, **options},
        )

    @contextlib.contextmanager
    def _using(self, session_id: str, incarnation: str | None) -> Iterator[RedisSession]:
        """The held handle on the session (that incarnation, when one is given),
        attached now if there is none; it is not let go while in use."""
        with self._lock:
            held = self._handles.get(session_id)
            if held is not None and incarnation in (None, held.handle.incarnation):
                held.users += 1
                self._handles.move_to_end(session_id)
            else:
                held = None
        if held is None:
            held = self._hold(self._attach(session_id, incarnation=incarnation), users=1)
        try:
            yield held.handle
        finally:
            with self._lock:
                held.users -= 1
                done = held.dropped and held.users == 0
            if done:
                _detach(held.handle)

    def _hold(self, handle: RedisSession, users: int = 0) -> _Held:
        """Hold ``handle`` as the session's, unless one on the same incarnation is held
        already (then that one is used); the handle replaced, and the least recently
        used past ``max_handles``, are let go once unused. It never deletes the
        session when it is let go: only :meth:`close` does."""
        dropped: list[_Held] = []
        with self._lock:
            current = self._handles.get(handle.session_id)
            if current is not None and current.handle.incarnation == handle.incarnation:
                current.users += users
                held, spare = current, handle
            else:
                held, spare = _Held(handle, users), None
                if current is not None:
                    dropped.append(current)
                self._handles[handle.session_id] = held
                while len(self._handles) > self.max_handles:
                    dropped.append(self._handles.popitem(last=False)[1])
            idle = []
            for old in dropped:
                old.dropped = True
                if old.users == 0:
                    idle.append(old.handle)
        if spare is not None:
            idle.append(spare)
        for gone in idle:
            _detach(gone)
        return held

    def _forget(self, session_id: str, handle: RedisSession) -> None:
        """Stop holding ``handle`` (its incarnation ended)."""
        with self._lock:
            held = self._handles.get(session_id)
            if held is None or held.handle is not handle:
                return
            del self._handles[session_id]
            held.dropped = True
            idle = held.users == 0
        if idle:
            _detach(handle)

    # -- sessions -------------------------------------------------------------------------

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
        sid = session_id or new_session_id()

        def work() -> Opened:
            handle = self._attach(
                sid, create=create, pending=pending, metadata=metadata, request_id=request_id
            )
            opened = Opened(sid, handle.created, handle.incarnation, handle.ttl_seconds)
            self._hold(handle)
            return opened

        return await self._blocking(work)

    async def commit(self, session_id: str, incarnation: str) -> None:
        def work() -> None:
            with self._using(session_id, incarnation) as handle:
                handle.drive(handle.commit_pending())

        await self._blocking(work)

    async def close(self, session_id: str, incarnation: str | None) -> None:
        def close(handle: RedisSession) -> None:
            try:
                handle.drive(handle.close(retry=True))
            finally:
                self._forget(session_id, handle)

        def work() -> None:
            if incarnation is None:
                self._current(session_id, close)
            else:
                with self._using(session_id, incarnation) as handle:
                    close(handle)

        await self._blocking(work)

    async def info(self, session_id: str, incarnation: str | None = None) -> SessionInfo:
        return await self._blocking(
            lambda: self._on(session_id, incarnation, lambda s: s.drive(s.info()))
        )

    async def heartbeat(self, session_id: str, incarnation: str | None = None) -> float:
        def work() -> float:
            info = self._on(session_id, incarnation, lambda s: s.drive(s.info(heartbeat=True)))
            return info.expires_at if info.expires_at is not None else float("inf")

        return await self._blocking(work)

    def _on(
        self, session_id: str, incarnation: str | None, call: Callable[[RedisSession], _T]
    ) -> _T:
        """``call`` on that incarnation of the session, or on it as it is now."""
        if incarnation is None:
            return self._current(session_id, call)
        with self._using(session_id, incarnation) as handle:
            return call(handle)

    def _current(self, session_id: str, call: Callable[[RedisSession], _T]) -> _T:
        """``call`` on the session as it is now: a held handle whose incarnation has
        ended is replaced by one on the current incarnation, once."""
        with self._using(session_id, None) as handle:
            try:
                return call(handle)
            except SessionNotFound:
                self._forget(session_id, handle)
        with self._using(session_id, None) as handle:
            return call(handle)

    def read_now(
        self, session_id: str, operation: ReadOperation[_R], incarnation: str | None = None
    ) -> _R | Missed:
        return MISSED

    async def run(
        self,
        session_id: str,
        operation: ReadOperation[_R] | WriteOperation[_R],
        *,
        request_id: str | None,
        deadline: float | None,
        incarnation: str | None = None,
    ) -> _R:
        def work() -> _R:
            if deadline is not None and time.monotonic() >= deadline:
                raise BridgeUnavailable(
                    f"session {session_id!r}: {type(operation).__name__} did not start "
                    "before the deadline and was not applied"
                )
            with call_scope(request_id, deadline, self.dedupe_seconds):
                return self._on(
                    session_id, incarnation, lambda handle: _apply(handle, operation, request_id)
                )

        if operation.scans:  # in the loop's bulk lane: one at a time, beside the loop
            return await off_loop(work, run_in=self._blocking, deadline=deadline)
        return await self._blocking(work)

    async def settle(
        self, session_id: str, request_id: str, age: float, incarnation: str | None = None
    ) -> bool:
        chain = RedisSession.chain(request_id)  # every id one relayed write may send
        return await self._blocking(
            lambda: self._on(
                session_id,
                incarnation,
                lambda session: session.drive(
                    writes.settle_writes(session, chain, age, self.dedupe_seconds)
                ),
            )
        )

    # -- watching -----------------------------------------------------------------------

    async def watch(
        self,
        session_id: str,
        patterns: list[str],
        start: int | None,
        incarnation: str | None = None,
        *,
        progress: bool = False,
    ) -> EventStream:
        globs = [check_pattern(pattern) for pattern in patterns]
        info = await self._blocking(lambda: self._current(session_id, lambda s: s.drive(s.info())))
        if incarnation and incarnation != info.incarnation:
            raise SessionNotFound(
                f"session {session_id!r} not found (that incarnation is gone)",
                session_id=session_id,
            )
        cursor = info.next_sequence if start is None else start
        # Joined now, before the caller says the stream is up: the session may close
        # right after, and its events up to the close are still read.
        feed = await self._enter(session_id, info.incarnation, cursor)
        events = follow(feed.log, cursor, globs, progress=progress)
        return _Watch(self, feed, events, cursor, info.incarnation)

    async def _enter(self, session_id: str, incarnation: str, cursor: int) -> _Feed:
        """Join a reader of the session; a reader joined for a caller cancelled
        meanwhile is left again once the join completes."""
        joining = asyncio.ensure_future(
            self._workers.run(lambda: self._join(session_id, incarnation, cursor))
        )
        try:
            return await asyncio.shield(joining)
        except asyncio.CancelledError:
            loop = asyncio.get_running_loop()

            def leave(done: asyncio.Future[_Feed]) -> None:
                if not done.cancelled() and done.exception() is None:
                    task = loop.create_task(self.leave(done.result()))
                    self._leaving.add(task)  # held until done (the loop keeps weak refs)
                    task.add_done_callback(self._leaving.discard)

            joining.add_done_callback(leave)
            raise

    def _join(self, session_id: str, incarnation: str, cursor: int) -> _Feed:
        """The log a watcher from ``cursor`` shares (blocking): this server's log of
        that incarnation if it still holds ``cursor``, else a new one, followed."""
        key = (session_id, incarnation)
        with self._lock:
            feed = self._feeds.get(key)
            if feed is not None and not feed.log.closed and cursor >= feed.log.first_sequence:
                feed.watchers += 1
                return feed
        with self._using(session_id, incarnation) as handle:
            trimmed = cursor < handle.drive(
                handle.history_start()
            )  # then overflow, and the present
            begin = handle.drive(handle.info()).next_sequence if trimmed else cursor
        fresh = _Feed(key, EventLog(session_id, begin, self.event_history))
        with self._lock:
            closing = self._closing
            if not closing:
                self._all_feeds.add(fresh)
                current = self._feeds.get(key)
                if current is None or current.log.closed:
                    self._feeds[key] = fresh
        closed = BridgeUnavailable("the store is closing; the watch was not started")
        if closing:
            raise closed
        try:
            fresh.followed = self._follower.follow(session_id, incarnation, begin, fresh.take)
        except RuntimeError:  # the follower closed with the store meanwhile
            raise closed from None
        return fresh

    async def leave(self, feed: _Feed) -> None:
        """A watcher is done; the last one stops its log's feed (which stays counted in
        ``_all_feeds`` until stopped, so closing the store stops it otherwise)."""
        with self._lock:
            feed.watchers -= 1
            if feed.watchers > 0:
                return
            if self._feeds.get(feed.key) is feed:
                del self._feeds[feed.key]

        def stop() -> None:
            _stop(self._follower, feed)
            with self._lock:
                self._all_feeds.discard(feed)

        with contextlib.suppress(BridgeUnavailable):  # closing: aclose stops it
            await asyncio.shield(self._workers.run(stop))

    async def end_watches(self) -> None:
        with self._lock:
            feeds = list(self._all_feeds)
        for feed in feeds:
            feed.log.close()

    async def reap_expired(self) -> list[str]:
        return []  # Redis expires each session's keys by itself

    async def aclose(self) -> None:
        """Let go of every handle and reader; the sessions stay in Redis."""
        with self._lock:
            self._closing = True

        def release() -> None:
            self._workers.stop()  # the calls queued finish first; none is taken after
            with self._lock:
                feeds = list(self._all_feeds)
                self._all_feeds.clear()
                self._feeds.clear()
                handles = [held.handle for held in self._handles.values()]
                self._handles.clear()
            for feed in feeds:
                feed.log.close()
            self._follower.close()
            for handle in handles:
                _detach(handle)

        await asyncio.get_running_loop().run_in_executor(None, release)


class _Watch:
    """One watcher's events; closing it (read or not) leaves its reader."""

    def __init__(
        self,
        store: RedisStore,
        feed: _Feed,
        events: AsyncGenerator[Event | Progress, None],
        start: int,
        incarnation: str,
    ):
        self.start = start
        self.incarnation = incarnation
        self._store = store
        self._feed: _Feed | None = feed
        self._events = events

    def __aiter__(self) -> _Watch:
        return self

    async def __anext__(self) -> Event | Progress:
        try:
            return await self._events.__anext__()
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        feed, self._feed = self._feed, None
        if feed is not None:
            await self._events.aclose()
            await self._store.leave(feed)


def _apply(
    session: RedisSession,
    operation: ReadOperation[_R] | WriteOperation[_R],
    request_id: str | None,
) -> _R:
    """Run one operation on an engine (in a ``call_scope``).

    A relayed write is checked here against what Redis holds now, before it is
    sent; if that check fails but Redis remembers this request id applied (a retry
    of a write whose reply was lost, the session changed since), the caller gets
    the first answer, not the error the check would give.
    """
    try:
        return operations.run(session, operation)
    except OutcomeUnknown:
        raise  # not a refusal: what Redis remembers cannot answer it (a WAIT fell short)
    except StateError:
        if not (operation.write and request_id):
            raise
        replies = session.drive(session.replies(request_id))
        if not replies or replies[-1][0] != "ok":
            raise  # never applied: this error is the answer
        return operations.replayed(session, operation, replies[-1])


def _detach(session: RedisSession) -> None:
    """Let go of an engine; never delete its session (other servers serve it too)."""
    with contextlib.suppress(Exception):
        session.release()


def _stop(follower: StreamFollower, feed: _Feed) -> None:
    """Stop feeding a log: no event reaches it once this returns."""
    if feed.followed is not None:
        follower.unfollow(feed.followed)
