"""AsyncContext: a supervised Context, for asyncio code.

``AsyncContext(ctx)`` is the asyncio face of a :class:`~dspex_actors.supervision.
Context`: the same session, supervisor, write gate and switch. Each call runs on the
asyncio twin of the backend that holds the session now — an
:class:`~dspex_actors.aio.local.AsyncLocalState` over the Context's own LocalState
(the same actor), then, once the session moved, an
:class:`~dspex_actors.aio.bridged.AsyncBridgedState` attached to it on the bridge, or
an :class:`~dspex_actors.aio.redis.AsyncRedisState` attached to it in Redis (a
supervisor's ``store="redis://..."``). A write
enters the Context's write gate (counted as a writer while it is awaited, so a
switch waits for it to land); while a switch runs, it waits for the switch in a
thread of its own, not on the loop. The switch itself (``ensure_bridged``) runs in
a thread of its own, awaited.

A backend of another kind has no asyncio twin: its calls run the Context's own
methods in a thread of their own. Events come from the Context's own subscription
(which follows the session across a switch), handed to the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from dspex_actors.aio.bridged import AsyncBridgedState
from dspex_actors.aio.following import OPENED, PROGRESSED, EventStream, in_thread
from dspex_actors.aio.local import AsyncLocalState
from dspex_actors.aio.methods import AsyncSessionMethods
from dspex_actors.bridge.client.bridged import BridgedState
from dspex_actors.errors import SessionClosed
from dspex_actors.local import LocalState
from dspex_actors.messages import Operation
from dspex_actors.methods import run_on
from dspex_actors.provider import StateProvider
from dspex_actors.records import check_pattern
from dspex_actors.redis.state import RedisState
from dspex_actors.streaming import Event, meant_for
from dspex_actors.supervision import Context

__all__ = ["AsyncContext"]

R = TypeVar("R")

_EVENTS = 10_000
"""Events waiting for the loop on one stream; past it, ``overflow`` (then the stream
goes on from the present, as a slow subscriber's does)."""


class AsyncContext(AsyncSessionMethods):
    """A Context's asyncio face (see the module docstring)."""

    def __init__(self, context: Context) -> None:
        """The asyncio face of ``context`` (of a supervisor's ``start_context``)."""
        self.context = context
        self.session_id = context.session_id
        self._owned = False
        self._twins: dict[int, AsyncSessionMethods] = {}  # id(backend) -> its twin
        self._twin_lock = asyncio.Lock()

    @classmethod
    async def init(cls, **options: Any) -> AsyncContext:
        """A Context on a supervisor of its own (``Context.init``, started in a thread
        of its own), which :meth:`aclose` stops."""
        face = cls(await in_thread(lambda: Context.init(**options)))
        face._owned = True
        return face

    async def run(self, operation: Operation[R]) -> R:
        if not operation.write:
            failure = self.context._failure
            if failure is not None:
                raise failure
            return await self._on(self.context.backend, operation)
        backend = await self._enter()
        try:
            return await self._on(backend, operation)
        finally:
            self.context._leave()

    async def _enter(self) -> StateProvider:
        """Enter the write gate: at once when no switch runs, else once it is over
        (waited for in a thread of its own)."""
        gate = self.context._gate
        with gate:  # held only for moments by anyone: waits release it
            if not self.context._fenced:
                if self.context._failure is not None:
                    raise self.context._failure
                if self.context._stopped:
                    raise SessionClosed(f"context {self.session_id!r} is stopped")
                self.context._writers += 1
                return self.context.backend
        return await in_thread(self.context._enter)

    async def _on(self, backend: StateProvider, operation: Operation[R]) -> R:
        twin = await self._twin(backend)
        if twin is None:  # no asyncio twin (a RedisState): its own method, in a thread
            return await in_thread(lambda: run_on(backend, operation))
        return await twin.run(operation)

    async def _twin(self, backend: StateProvider) -> AsyncSessionMethods | None:
        twin = self._twins.get(id(backend))
        if twin is not None or not isinstance(backend, LocalState | BridgedState | RedisState):
            return twin
        async with self._twin_lock:
            twin = self._twins.get(id(backend))
            if twin is None:
                if isinstance(backend, LocalState):
                    twin = AsyncLocalState(backend)
                elif isinstance(backend, RedisState):
                    from dspex_actors.aio.redis import AsyncRedisState  # the redis extra

                    twin = await AsyncRedisState.init(
                        url=backend.url, session_id=self.session_id, create=False
                    )
                else:
                    twin = await AsyncBridgedState.init(
                        address=backend.address,
                        token=self.context._supervisor.sharing.token,
                        session_id=self.session_id,
                        create=False,
                    )
                self._twins = {id(backend): twin}  # the old backend's twin is done
        return twin

    async def ensure_bridged(self) -> None:
        """Move the session where other processes reach it (the Context's switch,
        run in a thread of its own)."""
        await in_thread(self.context.ensure_bridged)

    def backend_info(self) -> dict[str, Any]:
        return self.context.backend_info()

    def events(self, pattern: str | None = None, start: int | None = None) -> EventStream:
        follower = _Following(self.context, pattern, start)
        return EventStream(follower.events(), follower.position)

    async def aclose(self) -> None:
        """Detach the asyncio twins. A Context of :meth:`init` is stopped with its
        supervisor; any other stays its supervisor's (stop it there)."""
        twins, self._twins = self._twins, {}
        for twin in twins.values():
            if not isinstance(twin, AsyncLocalState):  # detaches (it owns nothing)
                await twin.aclose()
        if self._owned:
            self._owned = False
            await in_thread(self.context.cleanup)

    def __repr__(self) -> str:
        return f"<AsyncContext {self.session_id} on {type(self.context.backend).__name__}>"


class _Following:
    """The Context's subscription (it follows the session across a switch), its
    events handed to the loop through a bounded queue. It takes every event and
    filters them here, so that it can tell how far it read past the ones its
    pattern skips (what a drain waits for)."""

    def __init__(self, context: Context, pattern: str | None, start: int | None) -> None:
        self._context = context
        self._pattern = check_pattern(pattern)
        self._start = start
        self._ready: asyncio.Queue[Event] = asyncio.Queue(_EVENTS)
        self._overflowed = False
        self._position: int | None = None

    def position(self) -> int | None:
        """Past the last event the reader took or the pattern skipped."""
        return self._position

    async def events(self) -> AsyncIterator[Event]:
        loop = asyncio.get_running_loop()

        def put(event: Event) -> None:
            try:
                self._ready.put_nowait(event)
            except asyncio.QueueFull:
                self._overflowed = True

        def hand(event: Event) -> None:  # in the subscription's thread
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody reads
                loop.call_soon_threadsafe(put, event)

        context = self._context
        subscription = await in_thread(lambda: context.subscribe(None, hand, start=self._start))
        # Where the subscription starts: a drain before any event came knows that
        # nothing before it is owed (None would end a drain at once, owing nothing).
        self._position = subscription.position
        try:
            yield OPENED
            moved = False
            while True:
                if moved and self._ready.empty():
                    moved = False
                    yield PROGRESSED
                event = await self._ready.get()
                if self._overflowed:  # the reader fell behind: say so, go on from now
                    self._overflowed = False
                    while not self._ready.empty():
                        self._ready.get_nowait()
                    event = Event(event.session_id, event.sequence - 1, "overflow")
                self._position = event.sequence + 1  # read after its reader took it
                if meant_for(event, self._pattern):
                    moved = False
                    yield event
                else:
                    moved = True
                if event.kind == "closed":
                    return
        finally:
            await in_thread(lambda: context.unsubscribe(subscription))
