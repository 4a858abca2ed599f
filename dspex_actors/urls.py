"""Bridge addresses, store specs and Redis URLs, read without loading any backend.

A bridge address is ``HOST:PORT`` (``[::1]:PORT`` for IPv6), or the same as a URL:
``dspex://HOST:PORT``, or ``dspexs://HOST:PORT`` for TLS. ``serve``, ``BridgedState``,
the Supervisor and ``$DSPEX_BRIDGE_ADDRESS`` all read it here, so each refuses the
same mistakes in the same words (a missing port, another scheme). Store specs: what
the Supervisor, ``serve(store=...)`` and the command line need to tell which store a
spec names, and to show a URL in a message without its password. A leaf: importing
it loads neither redis-py nor sqlite3 nor grpc.

A Redis URL (``RedisState``'s ``url``, a Redis store's spec) takes one of three forms,
read by :func:`redis_target`:

- ``redis://[USER:PASSWORD@]HOST:PORT/DB`` (``rediss://`` for TLS,
  ``unix:///path/to.sock``): one Redis, as redis-py reads the URL;
- ``redis+sentinel://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB]``: the
  primary that these Sentinels name ``SERVICE`` (redis-py's ``Sentinel.master_for``),
  found again after a failover; the user and password are the Redis nodes', a
  ``sentinel_password`` option the Sentinels' own; a port left out is 26379;
- ``redis+cluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]``: a Redis Cluster
  found from these nodes (redis-py's ``RedisCluster``); database 0 only, the only
  one a cluster has; a port left out is 6379.

Each form takes ``?wait=N`` (after each write, Redis ``WAIT`` until N replicas hold
it; 0, the default, waits for none) and ``wait_timeout=MS`` (how long a ``WAIT``
may take; 1000 by default). A URL of no such form is refused by the same
:func:`bad_redis_url` words wherever it is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

__all__ = [
    "BRIDGE_ADDRESSES",
    "REDIS_SCHEMES",
    "REDIS_URLS",
    "STORE_SPECS",
    "RedisTarget",
    "StoreKind",
    "bad_redis_url",
    "bridge_address",
    "is_redis",
    "redacted",
    "redis_target",
    "store_kind",
]

BRIDGE_ADDRESSES = "HOST:PORT, dspex://HOST:PORT or dspexs://HOST:PORT (TLS)"
"""The forms a bridge address takes, as messages name them."""

StoreKind = Literal["memory", "sqlite", "redis"]

STORE_SPECS = (
    "'memory', 'sqlite:PATH[?synchronous=normal|full]', 'redis://HOST:PORT/DB', "
    "'redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE[/DB]' or "
    "'redis+cluster://HOST:PORT[,HOST:PORT...]'"
)
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


REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster")
"""The schemes of a Redis URL: one Redis (three), Sentinel, Cluster."""

REDIS_URLS = (
    "give one as in 'redis://127.0.0.1:6379/0' (rediss:// for TLS, unix:///path/to.sock), "
    "'redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster/0' or "
    "'redis+cluster://127.0.0.1:7000,127.0.0.1:7001' (each may add '?wait=1')"
)
"""What a message refusing a Redis URL suggests instead."""

_WAIT_TIMEOUT_MS = 1000


def is_redis(spec: str) -> bool:
    """Whether a store spec is a Redis URL (:data:`REDIS_SCHEMES`)."""
    return spec.partition(":")[0] in REDIS_SCHEMES


def bad_redis_url(url: str, problem: str) -> ValueError:
    """The one refusal of a Redis URL: which URL (no password), what is wrong, and
    the forms that work."""
    return ValueError(f"Redis URL {redacted(url)!r}: {problem}; {REDIS_URLS}")


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """What a Redis URL names (:func:`redis_target`).

    ``kind`` "single": ``url`` is the URL redis-py reads (without our options);
    "sentinel": ``nodes`` are the Sentinels and ``service`` the primary's name;
    "cluster": ``nodes`` are where the cluster is first asked for its layout.
    ``wait_replicas``/``wait_timeout_ms``: the ``WAIT`` after each write (0: none).
    """

    kind: Literal["single", "sentinel", "cluster"]
    url: str
    nodes: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None
    wait_replicas: int = 0
    wait_timeout_ms: int = _WAIT_TIMEOUT_MS


def redis_target(url: str) -> RedisTarget:
    """Read a Redis URL (the forms in the module docstring); ``ValueError`` in the
    words of :func:`bad_redis_url` for any other. A one-Redis URL's own parts are
    left for redis-py to read (its words, with ours around them)."""
    if not isinstance(url, str):
        raise ValueError(f"a Redis URL is a string, got {url!r}; {REDIS_URLS}")
    scheme, sep, _ = url.partition("://")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # an unbalanced IPv6 bracket
        raise bad_redis_url(url, str(exc)) from None
    sentinel = scheme == "redis+sentinel"
    items = [item for item in parts.query.split("&") if item]
    ours = [i for i in items if unquote(i.partition("=")[0]) in _OPTIONS[sentinel]]
    rest = [i for i in items if i not in ours]
    options = _our_options(url, ours)
    wait = int(options.pop("wait", 0))
    wait_timeout = int(options.pop("wait_timeout", _WAIT_TIMEOUT_MS))
    if not sep or scheme not in ("redis+sentinel", "redis+cluster"):
        # One Redis: redis-py reads the rest (and names a bad scheme in its words).
        single = urlunsplit(parts._replace(query="&".join(rest))) if ours else url
        return RedisTarget("single", single, wait_replicas=wait, wait_timeout_ms=wait_timeout)
    if rest:
        key = unquote(rest[0].partition("=")[0])
        takes = ", ".join(_OPTIONS[sentinel])
        raise bad_redis_url(url, f"unknown option {key!r} (a {scheme}:// URL takes {takes})")
    userinfo, at, hosts = parts.netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    default_port = 26379 if scheme == "redis+sentinel" else 6379
    nodes = tuple(_node(url, item, default_port) for item in hosts.split(","))
    path = [unquote(p) for p in parts.path.split("/")[1:]]
    service, db = "", 0
    if scheme == "redis+sentinel":
        if not path or not path[0] or len(path) > 2 or (len(path) == 2 and not path[1]):
            raise bad_redis_url(url, "a Sentinel URL names its service: /SERVICE or /SERVICE/DB")
        service = path[0]
        if len(path) == 2:
            db = _number(url, "database", path[1])
    elif path not in ([], [""], ["0"]):
        raise bad_redis_url(url, "a Redis Cluster has database 0 only: give no path")
    sentinel_password = options.get("sentinel_password")
    return RedisTarget(
        "sentinel" if scheme == "redis+sentinel" else "cluster",
        url,
        nodes,
        service,
        db,
        username,
        password,
        None if sentinel_password is None else str(sentinel_password),
        wait,
        wait_timeout,
    )


_OPTIONS = {
    False: ("wait", "wait_timeout"),
    True: ("wait", "wait_timeout", "sentinel_password"),
}
"""The query options read here, without and with Sentinel."""


def _our_options(url: str, items: list[str]) -> dict[str, int | str]:
    """The query options read here (:data:`_OPTIONS`), checked."""
    ours: dict[str, int | str] = {}
    for key, value in parse_qsl("&".join(items), keep_blank_values=True):
        if key == "sentinel_password":
            ours[key] = value
            continue
        number = _number(url, key, value)
        if key == "wait_timeout" and number == 0:
            raise bad_redis_url(url, "wait_timeout is in milliseconds, above 0")
        ours[key] = number
    return ours


def _number(url: str, what: str, value: str) -> int:
    if not value.isdigit() or len(value) > 9:
        raise bad_redis_url(url, f"{what} must be a whole number, got {value!r}")
    return int(value)


def _node(url: str, item: str, default_port: int) -> tuple[str, int]:
    """One ``HOST[:PORT]`` of a node list (``[::1]:PORT`` for IPv6)."""
    if item.startswith("["):
        host, bracket, tail = item[1:].partition("]")
        port = tail.removeprefix(":") if bracket and tail.startswith(":") else None
        good = bool(bracket and host) and (not tail or port is not None)
    else:
        host, colon, port_text = item.partition(":")
        port = port_text if colon else None
        good = bool(host) and ":" not in port_text
    if port is not None and not (port.isdigit() and 1 <= int(port) <= 65535):
        good = False
    if not good or any(c in host for c in "/?# "):
        raise bad_redis_url(url, f"a node is HOST:PORT, got {item!r}")
    return host, default_port if port is None else int(port)


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
        redis_target(spec)  # a malformed Sentinel or Cluster URL: refused now, in its words
        return "redis"
    raise ValueError(f"unknown store {spec!r}: expected {STORE_SPECS}")


def redacted(url: str) -> str:
    """``url`` with any password (in its user part or its query) replaced by ``***``:
    fit for messages, which reach clients."""
    try:
        parts = urlsplit(url)
    except ValueError:  # not even a URL: its user part hidden all the same
        head, at, tail = url.rpartition("@")
        return f"{head.partition('://')[0]}://***@{tail}" if at else url
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        if ":" in user:
            netloc = f"{user.partition(':')[0]}:***@{host}"
    query = "&".join(
        f"{key}=***" if key.lower().endswith("password") else f"{key}={value}" if sep else key
        for key, sep, value in (item.partition("=") for item in parts.query.split("&"))
        if key
    )
    if netloc == parts.netloc and query == parts.query:
        return url  # nothing hidden: as given
    return urlunsplit(parts._replace(netloc=netloc, query=query))
