"""Sessions in Redis: the engine (one Lua script per operation, a Stream of events per
session) and its two front ends, :class:`RedisState` (a handle in any process) and
the SessionStore's Redis store. redis-py (the ``redis`` extra) is loaded only when
a session is opened.

One module per job: ``connections`` (shared connections to one Redis, a Sentinel's
primary or a Cluster's nodes; one script call within a deadline), ``scripts`` (the
keys and Lua scripts), ``state`` (RedisState), ``events`` (the Stream's entries and
their readers), ``follower`` (one reader for every session a server watches),
``store`` (the server's store). The URL forms are :mod:`dspex_actors.urls`'.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dspex_actors.redis.state import RedisState

__all__ = ["RedisState"]


def __getattr__(name: str) -> Any:
    """Load RedisState on first use."""
    if name == "RedisState":
        from dspex_actors.redis.state import RedisState

        globals()[name] = RedisState
        return RedisState
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
