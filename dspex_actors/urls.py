"""Bridge addresses, store specs and Redis URLs, read without loading any backend.

A bridge address is ``HOST:PORT`` (``[::1]:PORT`` for IPv6), or the same as a URL:
``dspex://HOST:PORT``, or ``dspexs://HOST:PORT`` for TLS. ``serve``, ``BridgedState``,
the Supervisor and ``$DSPEX_BRIDGE_ADDRESS`` all read it here, so each refuses the
same mistakes in the same words (a missing port, another scheme). Store specs: what
the Supervisor, ``serve(store=...)`` and the command line need to tell which store a
spec names, and to show a URL in a message without its password. A leaf: importing
it loads neither redis-py nor sqlite3 nor grpc.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "BRIDGE_ADDRESSES",
    "STORE_SPECS",
    "StoreKind",
    "bridge_address",
    "is_redis",
    "redacted",
    "store_kind",
]

BRIDGE_ADDRESSES = "HOST:PORT, dspex://HOST:PORT or dspexs://HOST:PORT (TLS)"
"""The forms a bridge address takes, as messages name them."""

StoreKind = Literal["memory", "sqlite", "redis"]

STORE_SPECS = "'memory', 'sqlite:PATH[?synchronous=normal|full]' or 'redis://HOST:PORT/DB'"
"""The spec forms a store accepts, as messages name them."""


def bridge_address(address: str, *, listening: bool = False) -> tuple[str, bool]:
    """The ``HOST:PORT`` a bridge address names, and whether it asks for TLS
    (``dspexs://``); ``ValueError`` naming the forms for anything else. Port 0 (any
    free port) only for an address to listen on."""
    if not isinstance(address, str):
        raise ValueError(f"a bridge address is a string ({BRIDGE_ADDRESSES}), got {address!r}")
    scheme, sep, rest = address.partition("://")
    if sep and scheme not in ("dspex", "dspexs"):
        raise ValueError(
            f"bridge address {address!r}: no scheme {scheme!r} here; give {BRIDGE_ADDRESSES}"
        )
    target = rest.removesuffix("/") if sep else address
    host, colon, port = target.rpartition(":")
    lowest = 0 if listening else 1
    if (
        not colon
        or not host
        or not port.isdigit()
        or not lowest <= int(port) <= 65535
        or host.startswith("[") != host.endswith("]")
        or any(c in host for c in "/@?# ")
    ):
        raise ValueError(
            f"bridge address {address!r} needs a host and a port: give {BRIDGE_ADDRESSES}, "
            "as in '127.0.0.1:50051'"
        )
    return f"{host}:{int(port)}", scheme == "dspexs"


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
