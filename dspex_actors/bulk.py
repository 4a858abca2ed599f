"""Bulk work: building large answers off the event loop, one at a time, and pausing
the cyclic garbage collector while many objects are built.

A listing or an export of a 100,000-variable session is seconds of Python work. On
a server's event loop it would stall every other session for all of it;
:func:`off_loop` runs it in the loop's executor instead, one piece of bulk work
at a time per loop: beside one busy thread the loop, whenever it wakes, waits at
most the interpreter's switch interval for the GIL (5 ms by default), where
several busy threads would each take their turn ahead of it. The work runs with
the cyclic collector paused: a full collection set off by the objects it builds
would scan the whole heap while holding the GIL (measured: 100-200 ms pauses of
the loop beside a 100,000-variable listing). Bulk calls beyond the first wait
their turn in order (their number is bounded by the server's admission of calls).

Decoding or importing a whole session allocates tens of thousands of containers;
each allocation burst triggers collections that rescan everything alive, which
more than doubled a 10,000-variable import here. msgpack's own documentation
recommends pausing the collector around large unpacks. The pause is scoped to one
call and restores the previous state; nothing is freed later than it would be,
only cycle detection waits until the block ends.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from dspex_actors.errors import BridgeUnavailable

__all__ = ["BULK_ITEMS", "gc_paused", "off_loop"]

_T = TypeVar("_T")

BULK_ITEMS = 1_000
"""From about this many variables (or decoded bytes / 1,000) the pause pays off."""


@contextmanager
def gc_paused(enabled: bool = True) -> Iterator[None]:
    """Run the block with the cyclic collector off (when ``enabled``), then restore it.

    Another thread that pauses at the same time at worst re-enables collection a
    little early: a performance matter, never a correctness one.
    """
    was_enabled = enabled and gc.isenabled()
    if was_enabled:
        gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


_LANES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)
"""Each event loop's one lane for bulk work (gone with its loop)."""


async def off_loop(
    work: Callable[..., _T],
    *args: Any,
    run_in: Callable[[Callable[[], _T]], Awaitable[_T]] | None = None,
    deadline: float | None = None,
) -> _T:
    """``work(*args)`` in a thread, after the bulk work queued before it on this
    loop (see the module docstring): in the loop's executor, or through ``run_in``
    (a store's own threads). Work whose ``deadline`` (monotonic) passed while it
    waited for its turn is not started (``BridgeUnavailable``: nobody waits for it
    any more). A caller cancelled meanwhile stops waiting, but the lane is free only
    once the work is done."""
    loop = asyncio.get_running_loop()
    lane = _LANES.get(loop)
    if lane is None:
        lane = _LANES[loop] = asyncio.Semaphore(1)
    await lane.acquire()
    try:
        if deadline is not None and time.monotonic() >= deadline:
            raise BridgeUnavailable(
                "bulk work waited past its deadline for its turn and was not started"
            )
        paused = functools.partial(_paused, work, *args)
        running = asyncio.ensure_future(
            run_in(paused) if run_in is not None else loop.run_in_executor(None, paused)
        )
    except BaseException:
        lane.release()
        raise
    running.add_done_callback(functools.partial(_done, lane))
    return await asyncio.shield(running)


def _done(lane: asyncio.Semaphore, work: asyncio.Future[Any]) -> None:
    """Free the lane; the work's outcome is read, so one nobody awaits any more (its
    caller was cancelled) is not logged as never retrieved."""
    lane.release()
    if not work.cancelled():
        work.exception()


def _paused(work: Callable[..., _T], *args: Any) -> _T:
    """``work(*args)`` with the collector paused: a full collection triggered by the
    objects it builds would scan the whole heap holding the GIL, the loop's too."""
    with gc_paused():
        return work(*args)
