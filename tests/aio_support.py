"""What the asyncio test files share: the one loop the blocking facades run on
(the ``aio_poller`` fixture, which keeps grpc.aio's poller up for a module, is in
``conftest.py``)."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

from dspex_actors.testing.aio import shared_loop

T = TypeVar("T")


def on_shared_loop(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on the facades' loop (one loop for the process: grpc.aio's
    poller keeps to it)."""
    result: T = shared_loop().run(coroutine)
    return result
