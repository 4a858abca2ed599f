"""asyncio handles: the same sessions, operations and errors as the sync API, awaited.

``AsyncLocalState`` awaits a session actor in this process; ``AsyncBridgedState``
talks to a SessionStore server with ``grpc.aio``; ``AsyncRedisState`` runs
RedisState's engine on ``redis.asyncio`` (imported when first named, so that
``import dspex_actors.aio`` never needs redis-py); ``AsyncContext`` is a supervised
Context's asyncio face, across its switch. They share every public method, written
once in :mod:`dspex_actors.aio.methods` over the operations the sync API runs
(:mod:`dspex_actors.messages`).
"""

from typing import TYPE_CHECKING, Any

from dspex_actors.aio.bridged import AsyncBridgedState
from dspex_actors.aio.context import AsyncContext
from dspex_actors.aio.local import AsyncLocalState
from dspex_actors.aio.methods import AsyncSessionMethods

if TYPE_CHECKING:
    from dspex_actors.aio.redis import AsyncRedisState

__all__ = [
    "AsyncBridgedState",
    "AsyncContext",
    "AsyncLocalState",
    "AsyncRedisState",
    "AsyncSessionMethods",
]


def __getattr__(name: str) -> Any:
    """``AsyncRedisState``, imported on first use (it needs the redis extra)."""
    if name == "AsyncRedisState":
        from dspex_actors.aio.redis import AsyncRedisState

        globals()[name] = AsyncRedisState
        return AsyncRedisState
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
