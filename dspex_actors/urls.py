"""Store specs and Redis URLs, read without loading any backend.

What the Supervisor, ``serve(store=...)`` and the command line need to tell which
store a spec names, and to show a URL in a message without its password. A leaf:
importing it loads neither redis-py nor sqlite3 nor grpc.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit, urlunsplit

__all__ = ["STORE_SPECS", "StoreKind", "is_redis", "redacted", "store_kind"]

StoreKind = Literal["memory", "sqlite", "redis"]

STORE_SPECS = "'memory', 'sqlite:PATH[?synchronous=normal|full]' or 'redis://HOST:PORT/DB'"
"""The spec forms a store accepts, as messages name them."""


def is_redis(spec: str) -> bool:
    """Whether a store spec is a Redis URL (``redis://``, ``rediss://``, ``unix://``)."""
    return spec.partition(":")[0] in ("redis", "rediss", "unix")


def store_kind(spec: str) -> StoreKind:
    """Which store a spec names (``ValueError`` for a spec of no known form)."""
    if spec == "memory":
        return "memory"
    kind, _, rest = spec.partition(":")
    if kind == "sqlite":
        if not rest.partition("?")[0]:
            raise ValueError(f"store {spec!r}: give a file, as in 'sqlite:sessions.db'")
        return "sqlite"
    if is_redis(spec):
        return "redis"
    raise ValueError(f"unknown store {spec!r}: expected {STORE_SPECS}")


def redacted(url: str) -> str:
    """``url`` with any password (in its user part or its query) replaced by ``***``:
    fit for messages, which reach clients."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        if ":" in user:
            netloc = f"{user.partition(':')[0]}:***@{host}"
    query = "&".join(
        f"{key}=***" if key.lower() == "password" else f"{key}={value}" if sep else key
        for key, sep, value in (item.partition("=") for item in parts.query.split("&"))
        if key
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))
