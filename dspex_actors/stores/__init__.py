"""Where a SessionStore server keeps its sessions (``serve(store=...)``).

* ``memory`` (:class:`~dspex_actors.stores.memory.MemoryStore`): one SessionActor
  per session in the server's process, the default; sessions end with it.
* ``sqlite:PATH`` (:class:`~dspex_actors.stores.sqlite.SqliteStore`): the memory
  store with every change journaled to a SQLite file first; a server started again
  on the file holds every session again. ``sqlite:PATH?synchronous=full`` fsyncs
  each write (see the module).
* ``redis://HOST:PORT/DB`` (or ``rediss://``; :class:`~dspex_actors.redis.store.
  RedisStore`): the sessions live in Redis, as ``RedisState`` keeps them; any number
  of servers (and ``RedisState`` handles) on the same Redis serve the same sessions,
  and a server restart loses nothing Redis kept. Needs the ``redis`` extra. Also
  ``redis+sentinel://HOST:PORT[,...]/SERVICE[/DB]`` and
  ``redis+cluster://HOST:PORT[,...]`` (:mod:`dspex_actors.urls`).

``base.py`` states the contract every store keeps; :func:`open_store` turns one of
the specs above (``--store``) into a store.
"""

from __future__ import annotations

from typing import Any, get_args

from dspex_actors.records import Opened, SessionInfo
from dspex_actors.stores.base import DEDUPE_WINDOW, Store
from dspex_actors.stores.memory import MemoryStore
from dspex_actors.stores.sqlite import SqliteStore, Synchronous
from dspex_actors.urls import STORE_SPECS, store_kind

__all__ = [
    "DEDUPE_WINDOW",
    "MemoryStore",
    "Opened",
    "SessionInfo",
    "SqliteStore",
    "Store",
    "open_store",
    "store_kind",
]

_REDIS_SETTINGS = ("limits", "session_ttl", "event_history")


def open_store(spec: str, **settings: Any) -> Store:
    """The store a spec names, built with ``settings`` (the memory store's keywords:
    limits, session_ttl, clock, policy, on_restart, on_give_up, event_history; a
    SQLite store also takes ``synchronous`` and ``busy_timeout``). A Redis store
    takes limits, session_ttl and event_history, and leaves the others aside: Redis
    expires sessions by its own clock, and no session actor runs here to restart.

    ``ValueError`` for a spec of no known form, ``OSError`` for a SQLite file that
    cannot be opened or a Redis that does not answer a PING, ``ImportError`` naming
    the extra for ``redis://`` without redis-py.
    """
    kind = store_kind(spec)
    if kind == "memory":
        return MemoryStore(**settings)
    if kind == "sqlite":
        path, _, query = spec.partition(":")[2].partition("?")
        if query:
            key, _, value = query.partition("=")
            if key != "synchronous" or value.lower() not in get_args(Synchronous):
                raise ValueError(
                    f"store {spec!r}: unknown option {query!r} (expected {STORE_SPECS})"
                )
            settings = {**settings, "synchronous": value.lower()}
        return SqliteStore(path, **settings)
    from dspex_actors.redis.connections import check_reachable, redis_module
    from dspex_actors.redis.session import DEFAULT_TIMEOUT
    from dspex_actors.redis.store import RedisStore  # redis-py only when asked for

    redis_module()  # the extra's ImportError now, not at the first call
    check_reachable(spec, DEFAULT_TIMEOUT)  # an unreachable Redis: now, not per call
    return RedisStore(spec, **{k: v for k, v in settings.items() if k in _REDIS_SETTINGS})
