"""Where a SessionStore server keeps its sessions (``serve(store=...)``).

* ``memory`` (:class:`~dspex_actors.stores.memory.MemoryStore`): one SessionActor
  per session in the server's process, the default; sessions end with it.
* ``sqlite:PATH`` (:class:`~dspex_actors.stores.sqlite.SqliteStore`): the memory
  store with every change journaled to a SQLite file first; a server started again
  on the file holds every session again. ``sqlite:PATH?synchronous=full`` fsyncs
  each write (see the module).
* ``redis://...``: not available yet.

``base.py`` states the contract every store keeps; :func:`open_store` turns one of
the specs above (``--store``) into a store.
"""

from __future__ import annotations

from typing import Any, get_args

from dspex_actors.errors import NotSupported
from dspex_actors.stores.base import DEDUPE_WINDOW, Opened, SessionInfo, Store
from dspex_actors.stores.memory import MemoryStore
from dspex_actors.stores.sqlite import SqliteStore, Synchronous

__all__ = [
    "DEDUPE_WINDOW",
    "MemoryStore",
    "Opened",
    "SessionInfo",
    "SqliteStore",
    "Store",
    "open_store",
]

_SPECS = "'memory', 'sqlite:PATH' or 'sqlite:PATH?synchronous=normal|full'"


def open_store(spec: str, **settings: Any) -> Store:
    """The store a spec names, built with ``settings`` (the memory store's keywords:
    limits, session_ttl, clock, policy, on_restart, on_give_up, event_history; a
    SQLite store also takes ``synchronous`` and ``busy_timeout``).

    ``ValueError`` for a spec of no known form, ``NotSupported`` for ``redis://``
    (not available yet), ``OSError`` for a SQLite file that cannot be opened.
    """
    if spec == "memory":
        return MemoryStore(**settings)
    kind, _, rest = spec.partition(":")
    if kind == "sqlite":
        path, _, query = rest.partition("?")
        if not path:
            raise ValueError(f"store {spec!r}: give a file, as in 'sqlite:sessions.db'")
        if query:
            key, _, value = query.partition("=")
            if key != "synchronous" or value.lower() not in get_args(Synchronous):
                raise ValueError(f"store {spec!r}: unknown option {query!r} (expected {_SPECS})")
            settings = {**settings, "synchronous": value.lower()}
        return SqliteStore(path, **settings)
    if kind in ("redis", "rediss"):
        raise NotSupported(f"store {spec!r}: the Redis store is not available yet")
    raise ValueError(f"unknown store {spec!r}: expected {_SPECS}")
