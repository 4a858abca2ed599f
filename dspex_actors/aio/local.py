"""AsyncLocalState: a session in this process, awaited without blocking the loop.

The session is a :class:`~dspex_actors.local.LocalState`'s: the same actor, table
and rules. A read is answered from the table at once (lock-free, no await needed)
when no write overlaps it; a write, and a read that meets one, is handed to the
actor as a :class:`~dspex_actors.messages.Deliver` whose answer the actor's thread
puts on the loop (``call_soon_threadsafe``): the loop never waits on a thread.

A call that is cancelled, or whose deadline passes, before the actor took it is not
applied (the actor and the caller race for one claim token; exactly one wins); one
the actor took runs its bounded turn, and the cancelled caller is told
``CancelledError`` as asyncio expects, with a note saying it was applied.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from functools import partial
from typing import Any, Self, TypeVar

import pykka

from dspex_actors.actor import SEALED
from dspex_actors.aio.following import EventStream, follow, in_thread
from dspex_actors.aio.methods import AsyncSessionMethods
from dspex_actors.bulk import BULK_ITEMS
from dspex_actors.engine import DEFAULT_CALL_TIMEOUT, ActorSession
from dspex_actors.errors import SessionClosed, StateError
from dspex_actors.limits import DEFAULT_LIMITS, Limits
from dspex_actors.local import LocalState
from dspex_actors.messages import OpenEvents, Operation
from dspex_actors.session import MISSED
from dspex_actors.streaming import DEFAULT_HISTORY, Event, EventLog

__all__ = ["AsyncLocalState"]

R = TypeVar("R")


class AsyncLocalState(AsyncSessionMethods):
    """A session held by an actor in this process, for asyncio code (see above)."""

    def __init__(self, state: LocalState, /) -> None:
        """Internal: open one with ``await AsyncLocalState.init(...)``."""
        self._state = state
        self.session_id = state.session_id
        self._engine: ActorSession = state._engine

    @classmethod
    async def init(
        cls,
        *,
        session_id: str | None = None,
        existing_state: Mapping[str, Any] | None = None,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        limits: Limits = DEFAULT_LIMITS,
        event_history: int = DEFAULT_HISTORY,
    ) -> Self:
        """Start a session, as ``LocalState.init`` does (in a thread of its own, so
        seeding a large ``existing_state`` never holds the loop)."""
        state = await in_thread(
            lambda: LocalState.init(
                session_id=session_id,
                existing_state=existing_state,
                call_timeout=call_timeout,
                limits=limits,
                event_history=event_history,
            )
        )
        return cls(state)

    async def run(self, operation: Operation[R]) -> R:
        if operation.scans and len(self._engine.table.by_id) > BULK_ITEMS:
            # A listing or export of a large session is read in a thread of its own
            # (about 2.5 us a variable: thousands of them would hold the loop).
            state: Any = self._state
            whole: R = await in_thread(partial(state.run, operation))
            return whole
        if not operation.write:
            answer = self._engine.table.read(operation)  # type: ignore[arg-type]  # a read
            if answer is not MISSED:
                result: R = answer  # type: ignore[assignment]  # not MISSED: an R
                return result
        return await self._deliver(operation)

    async def _deliver(self, operation: Operation[R]) -> R:
        """Hand ``operation`` to the actor and await its answer (see the module doc)."""
        what = f"session {self.session_id!r}"
        try:
            answer, claim = self._engine.deliver(operation, asyncio.get_running_loop())
        except pykka.ActorDeadError:
            raise SessionClosed(f"{what}: its actor is not running") from None
        timeout = self._engine.call_timeout
        try:
            async with asyncio.timeout(timeout):  # (wait_for could drop a cancellation)
                result = await asyncio.shield(answer)
        except (TimeoutError, asyncio.CancelledError) as exc:
            try:
                claim.pop()  # taken here: the actor will never run it
            except IndexError:  # the actor has it: its turn is bounded
                result = await asyncio.shield(answer)
                if isinstance(exc, asyncio.CancelledError):
                    exc.add_note(f"{type(operation).__name__} in {what} was applied")
                    raise exc from None
            else:
                if isinstance(exc, asyncio.CancelledError):
                    exc.add_note(f"{type(operation).__name__} in {what} was not applied")
                    raise
                raise StateError(
                    f"{what}: the actor did not take {type(operation).__name__} within "
                    f"{timeout}s; it was not applied"
                ) from None
        if isinstance(result, StateError):
            raise result
        if result is SEALED:
            raise StateError(f"{what} is sealed; {type(operation).__name__} was not applied")
        done: R = result
        return done

    def events(self, pattern: str | None = None, start: int | None = None) -> EventStream:
        position: list[int | None] = [None]
        return EventStream(self._follow(pattern, start, position), lambda: position[0])

    async def _follow(
        self, pattern: str | None, start: int | None, position: list[int | None]
    ) -> AsyncIterator[Event]:
        log: EventLog = await self._deliver(OpenEvents())  # type: ignore[arg-type]
        async for event in follow(log, pattern, start, position):
            yield event

    async def aclose(self) -> None:
        """Close the session (its actor stops in a thread, not on the loop)."""
        await in_thread(self._state.cleanup)

    def __repr__(self) -> str:
        return f"<AsyncLocalState {self.session_id}>"
