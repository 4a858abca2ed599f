"""Bulk work: pausing the cyclic garbage collector while many objects are built.

Decoding or importing a whole session allocates tens of thousands of containers;
each allocation burst triggers collections that rescan everything alive, which
more than doubled a 10,000-variable import here. msgpack's own documentation
recommends pausing the collector around large unpacks. The pause is scoped to one
call and restores the previous state; nothing is freed later than it would be,
only cycle detection waits until the block ends.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["BULK_ITEMS", "gc_paused"]

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
