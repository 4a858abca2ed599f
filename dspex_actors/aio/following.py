"""Event streams for asyncio handles, and the one way they run a blocking step."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from dspex_actors.records import check_pattern
from dspex_actors.streaming import Event, EventLog, fulfil, meant_for

T = TypeVar("T")

__all__ = ["OPENED", "PROGRESSED", "EventStream", "follow", "in_thread"]


async def follow(
    log: EventLog, pattern: str | None, start: int | None, position: list[int | None]
) -> AsyncIterator[Event]:
    """The events of ``log`` whose names match ``pattern``, from ``start`` (None: from
    now), as :class:`~dspex_actors.streaming.LogSource` gives them to a thread: one
    ``overflow`` past the kept history (then on from the present), and a last
    ``closed`` once the session closed. Waiting costs no thread (``wait_async``).
    ``position[0]`` is kept past the last event its reader took (or skipped)."""
    glob = check_pattern(pattern)
    cursor = log.next_sequence if start is None else start
    position[0] = cursor
    yield OPENED
    moved = False  # past events the pattern skipped since the last one given
    while True:
        events, cursor = log.read(cursor)
        if not events:
            if moved:
                moved = False
                yield PROGRESSED
            await log.wait_async(cursor)
            continue
        for event in events:
            # Past it once its reader took it (read only after it did) or skipped it.
            position[0] = event.sequence + 1
            if meant_for(event, glob):
                moved = False
                yield event
            else:
                moved = True
            if event.kind == "closed":
                return


OPENED = Event("", -1, "overflow")
"""What an event source yields first, once it is open (never shown to a reader)."""

PROGRESSED = Event("", -2, "overflow")
"""What an event source yields when its position moved past events its pattern
skipped and it is about to wait (shown only to :meth:`EventStream.step`)."""


class EventStream:
    """Change events as an async iterator, open at once with ``async with``.

    ``async for event in state.events(pattern)`` opens the source at the first
    iteration; ``async with state.events(pattern) as events:`` opens it on entry, so
    a write made inside the block is never missed; leaving the block (or
    :meth:`aclose`) closes it.
    """

    def __init__(self, source: AsyncIterator[Event], position: Callable[[], int | None]) -> None:
        self._source = source
        self._position = position
        self._opened = False
        self._reader: asyncio.Task[Any] | None = None  # the task inside step() now
        self._closing = False

    @property
    def position(self) -> int | None:
        """The sequence past the last event this stream's reader took or its pattern
        skipped (None before it opened): what a drain waits for."""
        return self._position()

    async def _open(self) -> None:
        if not self._opened:
            self._opened = True
            first = await anext(self._source)
            assert first is OPENED, "an event source yields OPENED first"

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        while (event := await self.step()) is None:
            pass
        return event

    async def step(self) -> Event | None:
        """The next event, or None when the stream only moved past events its
        pattern skipped (its :attr:`position` says how far): what a reader that
        drains up to a position waits on."""
        if self._closing:
            raise StopAsyncIteration
        task = self._reader = asyncio.current_task()
        try:
            await self._open()
            event = await anext(self._source)
        except asyncio.CancelledError:
            if self._closing and task is not None and not task.cancelling() > 1:
                task.uncancel()  # cancelled by aclose(), not by its own caller
                raise StopAsyncIteration from None
            raise
        finally:
            self._reader = None
        return None if event is PROGRESSED else event

    async def __aenter__(self) -> EventStream:
        await self._open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop following (the source's stream or wait is cancelled); idempotent. A
        task reading it meanwhile ends its ``async for`` (``StopAsyncIteration``)."""
        reader = self._reader
        if reader is not None and reader is not asyncio.current_task():
            self._closing = True
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
        aclose = getattr(self._source, "aclose", None)
        if aclose is not None:
            await aclose()


async def in_thread(fn: Callable[[], T]) -> T:
    """``fn()`` run in a thread of its own that ends with it, awaited without blocking
    the loop: for the rare blocking step (stopping an actor, starting the embedded
    server). Not ``asyncio.to_thread``, whose pool keeps its threads after."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def run() -> None:
        try:
            result = fn()
        except BaseException as exc:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
                loop.call_soon_threadsafe(_fail, done, exc)
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(fulfil, done, result)

    worker = threading.Thread(target=run, name="dspex-aio-blocking-step", daemon=True)
    worker.start()
    return await asyncio.shield(done)  # cancelled, the step still runs to its end


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
