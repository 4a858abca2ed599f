"""The asyncio handle's coherent cache: a task that follows the handle's own Watch
stream and keeps its :class:`~dspex_actors.bridge.client.cache.SessionCopy`.

The same copy, the same consistency model as the sync handle's cache (read your
writes; others' writes once their events arrive, in order; nothing served while
the stream is down or the copy reloads; nothing ever again once the session
closed): only the feed differs. Where the sync handle's copy loads itself from the
Watch subscription's thread with blocking calls, this feed is one task on the
loop: each time the stream is up it awaits the handle's own listing (taken after
the stream started, so events met meanwhile go on top by version), applies each
event as it comes, awaits the record of a variable it holds only partly, and
re-reads the session after an ``overflow``. No thread, and the handle's cached
reads never await anything that suspends.

The feed starts over (a fresh stream and listing, after the one backoff policy)
when the server cannot be reached or a listing fails; it ends for good, the copy
with it, when the session is gone. Closing the handle cancels the task and waits
for it, so nothing of the feed outlives the handle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from typing import Any

from dspex_actors.aio.following import OPENED, PROGRESSED
from dspex_actors.backoff import Backoff
from dspex_actors.bridge.client.cache import RELOAD, SessionCopy
from dspex_actors.errors import BridgeUnavailable, StateError
from dspex_actors.records import VariableRecord
from dspex_actors.streaming import Event

__all__ = ["CacheFeed", "Follow", "OnConnect", "told"]

logger = logging.getLogger(__name__)

OnConnect = Callable[[int], Awaitable[None]]
Follow = Callable[[OnConnect, Callable[[], None]], AsyncGenerator[Event, None]]
"""The handle's Watch stream of every event, from now: ``follow(on_connect,
on_disconnect)`` awaits ``on_connect(start)`` each time the stream is up (before
any event of it) and calls ``on_disconnect()`` each time it breaks after."""


class CacheFeed:
    """Keeps ``copy`` fed from the handle's Watch stream, in a task (see the module
    docstring). ``load`` is the handle's listing, ``fetch`` its ``get_record`` and
    ``next_sequence`` what the session's next event will be numbered; all three
    are the handle's own calls, which go to the server while the copy cannot
    answer."""

    def __init__(
        self,
        copy: SessionCopy,
        follow: Follow,
        load: Callable[[], Awaitable[Sequence[Mapping[str, Any]]]],
        fetch: Callable[[str], Awaitable[VariableRecord]],
        next_sequence: Callable[[], Awaitable[int]],
    ) -> None:
        self.copy = copy
        self._follow = follow
        self._load = load
        self._fetch = fetch
        self._next_sequence = next_sequence
        self._waiters: list[asyncio.Future[None]] = []  # woken whenever the copy moves
        self._task: asyncio.Task[None] | None = None
        self.failure: StateError | None = None
        """What ended the feed for good (the session gone, the watch refused), if an
        error did."""

    def start(self) -> None:
        """Start following (on the running loop)."""
        if self._task is None:
            self._task = asyncio.create_task(
                self._run(), name=f"dspex-aio-cache-{self.copy.session_id}"
            )

    @property
    def running(self) -> bool:
        """Whether the feed's task is still under way."""
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        """Follow until the session is gone (or the task is cancelled), starting over
        after a failure the server may recover from."""
        backoff = Backoff()
        copy = self.copy
        try:
            while not copy.ended:
                try:
                    # aclosing: a stream left at a yield (this body raised, or was
                    # cancelled) is cancelled now, not when the generator is collected.
                    events = self._follow(self._connected, self._disconnected)
                    async with contextlib.aclosing(events):
                        async for event in events:
                            backoff.reset()
                            if event is not OPENED and event is not PROGRESSED:
                                await self._take(event)
                    if not copy.ended:  # the handle was closed under the stream
                        break
                except BridgeUnavailable as exc:
                    logger.info("cache of %s: %s; following again", copy.session_id, exc)
                    self._disconnected()
                    await asyncio.sleep(backoff.next())
        except StateError as exc:  # the session is gone, or the server refuses us
            logger.warning("cache of %s ended: %s", copy.session_id, exc)
            self.failure = exc
        except Exception:
            logger.exception("cache of %s ended", copy.session_id)
        finally:
            copy.end()
            self._moved()

    async def _connected(self, start: int) -> None:
        """The stream is up from ``start``: re-read the session, then serve."""
        await self._reload(start, start - 1)

    async def _reload(self, start: int | None, through: int | None) -> None:
        """Load the copy from a listing taken now (the stream is up); a listing that
        fails is raised as ``BridgeUnavailable``, so the feed starts over."""
        if not self.copy.reloading(start):
            return
        try:
            if through is None:  # after an overflow: what the listing will hold
                through = await self._next_sequence() - 1
            listing = await self._load()
        except StateError as exc:
            self.copy.reload_failed(exc)
            self._moved()
            raise BridgeUnavailable(f"reloading the session failed: {exc}") from exc
        self.copy.reloaded(listing, through)
        self._moved()

    def _disconnected(self) -> None:
        self.copy.disconnected()
        self._moved()

    async def _take(self, event: Event) -> None:
        follow = self.copy.take(event)
        self._moved()
        if follow is RELOAD:
            await self._reload(None, None)  # fell behind: re-read, as after an outage
        elif follow is not None:
            try:
                whole = await self._fetch(follow)
            except StateError:  # deleted meanwhile, or unreachable: stays partial
                return
            self.copy.completed(follow, whole)

    # -- waited on by tasks ----------------------------------------------------------

    def _moved(self) -> None:
        """The copy changed state: wake every task waiting on it (they check again)."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _wait_for(self, ready: Callable[[], bool], timeout: float | None) -> bool:
        """Wait until ``ready()``; False on timeout."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                while not ready():
                    waiter = loop.create_future()
                    self._waiters.append(waiter)
                    await waiter
        except TimeoutError:
            return ready()
        return True

    async def wait_until(self, sequence: int, timeout: float | None) -> bool:
        """Wait until the copy serves and has taken in every event before
        ``sequence``; False on timeout (or once the feed ended)."""
        caught_up = await self._wait_for(lambda: self.copy.caught_up(sequence), timeout)
        return caught_up and not self.copy.ended

    async def wait_down(self, timeout: float | None) -> bool:
        """Wait until the copy serves nothing (its stream broke, or it ended); False
        on timeout."""
        return await self._wait_for(lambda: not self.copy.serving, timeout)

    async def aclose(self) -> None:
        """Stop following: the task is cancelled and awaited (a listing or fetch it
        awaits is cancelled with it); the copy serves nothing from then on."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])  # (a cancel of our own caller still propagates)
            if not task.cancelled():
                with contextlib.suppress(BaseException):
                    task.result()
        self.copy.end()
        self._moved()


async def told(
    events: AsyncGenerator[Event, None], copy: SessionCopy
) -> AsyncGenerator[Event, None]:
    """``events``, each told to the handle's copy before it is handed on (as the sync
    handle's :class:`~dspex_actors.bridge.client.cache.Told`): a caller reading back
    never finds the copy older than the event it was given."""
    try:
        async for event in events:
            copy.told(event.sequence)
            yield event
    finally:
        await events.aclose()
