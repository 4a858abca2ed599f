"""Named failpoints: places where a test can make the code fail, stall or lose a reply.

Off unless a test turns one on, and then only in that process: production code
passes a failpoint at the cost of one dict lookup. A test enables one with an
action — a function that raises (the step fails), returns (a side effect, such as
noting that the step was reached), or, for the async points the SessionStore
passes, a coroutine function that awaits (the step stalls without blocking the
server's loop)::

    with failpoints.enabled("migration.verify", failpoints.fail(StateError("boom"))):
        ...

The points, each named for where it sits:

``migration.export`` ``migration.import`` ``migration.import_reply``
``migration.verify`` ``migration.commit`` ``migration.swap`` ``migration.retire``
    Context's switch to the bridge: before each step (``import_reply``: after the
    import was applied, before its answer is used, i.e. a lost reply).
``store.apply`` ``store.reply`` ``store.close``
    The memory store's handling of a write: before it is handed to the session
    actor, and after it was applied, before the answer goes back; and of a
    CloseSession, before anything is closed.
``watch.event``
    The SessionStore's Watch, before it sends an event (a failure breaks the stream
    there, as a dropped connection would).
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

__all__ = ["NAMES", "enabled", "fail", "hit", "reached"]

NAMES = frozenset(
    {
        "migration.export",
        "migration.import",
        "migration.import_reply",
        "migration.verify",
        "migration.commit",
        "migration.swap",
        "migration.retire",
        "store.apply",
        "store.reply",
        "store.close",
        "watch.event",
    }
)

Action = Callable[[], Any]
_active: dict[str, Action] = {}
_lock = threading.Lock()


def hit(name: str) -> None:
    """Pass failpoint ``name`` (sync code): run its action if a test enabled one."""
    action = _active.get(name)
    if action is not None:
        action()


async def reached(name: str) -> None:
    """Pass failpoint ``name`` (async code): run or await its action if enabled."""
    action = _active.get(name)
    if action is not None:
        result = action()
        if inspect.isawaitable(result):
            await result


@contextlib.contextmanager
def enabled(name: str, action: Action | Callable[[], Awaitable[Any]]) -> Iterator[None]:
    """Turn failpoint ``name`` on with ``action`` for the block."""
    if name not in NAMES:
        raise ValueError(f"unknown failpoint {name!r}; known: {', '.join(sorted(NAMES))}")
    with _lock:
        if name in _active:
            raise ValueError(f"failpoint {name!r} is already enabled")
        _active[name] = action
    try:
        yield
    finally:
        with _lock:
            del _active[name]


def fail(error: BaseException, times: int | None = None) -> Action:
    """An action raising ``error`` (each time, or only the first ``times`` times)."""
    left = [times]

    def action() -> None:
        if left[0] is None or left[0] > 0:
            if left[0] is not None:
                left[0] -= 1
            raise error

    return action
