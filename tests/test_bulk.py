"""gc_paused: the collector is off inside the block and restored after it; off_loop:
bulk work in a thread, one piece at a time per loop, collector paused."""

from __future__ import annotations

import contextlib
import gc

import pytest

from dspex_actors.bulk import gc_paused, off_loop


def test_pauses_and_restores_the_collector() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_restores_even_when_the_block_raises() -> None:
    with pytest.raises(RuntimeError), gc_paused():
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_does_nothing_when_not_enabled_or_already_off() -> None:
    with gc_paused(enabled=False):
        assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the caller's choice is kept
    finally:
        gc.enable()


# -- off_loop: one piece of bulk work at a time per loop --------------------------------


def test_bulk_work_runs_one_at_a_time_off_the_loop() -> None:
    """Four pieces of bulk work: each in a thread other than the loop's, never two at
    once, in the order they came, with the collector paused while each runs."""
    import asyncio
    import threading

    running: list[int] = []
    seen: list[tuple[int, bool, bool]] = []
    guard = threading.Lock()
    others_waiting = threading.Event()

    def work(n: int) -> int:
        with guard:
            running.append(n)
            seen.append((n, len(running) == 1, gc.isenabled()))
        if n == 0:  # runs on until the others wait: one let in now would overlap it
            assert others_waiting.wait(30), "the other callers never ran"
        with guard:
            running.remove(n)
        return n * 10

    async def main() -> tuple[list[int], int]:
        loop_thread = threading.get_ident()
        threads = []

        def where(n: int) -> int:
            threads.append(threading.get_ident())
            return work(n)

        gathered = asyncio.gather(*(off_loop(where, n) for n in range(4)))
        for _ in range(2):  # a yield, not a wait: each caller runs to where it waits
            await asyncio.sleep(0)
        others_waiting.set()
        results = await gathered
        assert loop_thread not in threads
        return list(results), len(threads)

    results, calls = asyncio.run(main())
    assert results == [0, 10, 20, 30] and calls == 4
    assert seen == [(n, True, False) for n in range(4)]
    assert gc.isenabled()


def test_a_cancelled_caller_frees_the_lane_only_when_its_work_is_done() -> None:
    """The caller of a piece of work is cancelled while it runs: the next piece still
    waits until the first is really done (a thread cannot be stopped)."""
    import asyncio
    import threading

    first_started, first_may_end = threading.Event(), threading.Event()
    order: list[str] = []

    def first() -> None:
        first_started.set()
        first_may_end.wait(10)
        order.append("first done")

    def second() -> None:
        order.append("second ran")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        waiting = asyncio.ensure_future(off_loop(first))
        await loop.run_in_executor(None, first_started.wait, 10)
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        after = asyncio.ensure_future(off_loop(second))
        await asyncio.sleep(0)  # give `after` its chance to (wrongly) start
        order.append("cancelled")
        first_may_end.set()
        await after

    asyncio.run(main())
    assert order == ["cancelled", "first done", "second ran"]


def test_work_whose_deadline_passed_in_the_queue_is_not_started() -> None:
    """A listing abandoned by its caller while it waited behind another is never
    built: the lane goes to the next one."""
    import asyncio
    import threading
    import time

    from dspex_actors.errors import BridgeUnavailable

    first_started, first_may_end = threading.Event(), threading.Event()
    ran: list[str] = []

    def first() -> None:
        first_started.set()
        first_may_end.wait(10)
        ran.append("first")

    async def main() -> BaseException | None:
        loop = asyncio.get_running_loop()
        holding = asyncio.ensure_future(off_loop(first))
        await loop.run_in_executor(None, first_started.wait, 10)
        late = asyncio.ensure_future(
            off_loop(ran.append, "abandoned", deadline=time.monotonic())  # due at once
        )
        await asyncio.sleep(0)
        first_may_end.set()
        await holding
        outcome = (await asyncio.gather(late, return_exceptions=True))[0]
        await off_loop(ran.append, "next")
        return outcome if isinstance(outcome, BaseException) else None

    outcome = asyncio.run(main())
    assert isinstance(outcome, BridgeUnavailable)
    assert ran == ["first", "next"]
