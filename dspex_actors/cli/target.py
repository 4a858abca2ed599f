"""Where a client command goes, and the handle it opens on a session there.

A command runs against a SessionStore (``--address``, else ``$DSPEX_BRIDGE_ADDRESS``)
or a Redis (``--redis``, else ``$DSPEX_REDIS_URL``); a flag beats the environment,
and a choice it cannot make (both flags, or neither flag with both variables set,
or nothing at all) is a usage error, never a guess: the embedded in-process server
a program without an address gets would hold no session a shell could want.

The token comes from ``--token``, else ``$DSPEX_BRIDGE_TOKEN``, and is never shown:
:class:`Target` keeps it out of its repr, and messages name the address only (a
Redis URL with its password replaced by ``***``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypeAlias

from dspex_actors.bridge.env import ADDRESS_ENV, TOKEN_ENV
from dspex_actors.cli.exits import UsageError
from dspex_actors.errors import StateError
from dspex_actors.redis.state import DEFAULT_TTL, URL_ENV
from dspex_actors.urls import BRIDGE_ADDRESSES, bridge_address, is_redis, redacted

if TYPE_CHECKING:
    from dspex_actors.bridge.client.bridged import BridgedState
    from dspex_actors.redis.state import RedisState

__all__ = ["REDIS_ENV", "Handle", "Target", "session_handle", "target_of"]

Handle: TypeAlias = "BridgedState | RedisState"

REDIS_ENV = URL_ENV
"""The Redis a command uses when given neither ``--address`` nor ``--redis``
(``RedisState``'s own variable)."""


@dataclass(frozen=True)
class Target:
    """A resolved destination: a SessionStore address or a Redis URL, and how to call it."""

    kind: Literal["bridge", "redis"]
    location: str
    """``HOST:PORT`` as given (``dspexs://`` kept), or the Redis URL."""
    deadline: float
    token: str | None = field(default=None, repr=False)
    tls_root_cert: str | None = None

    @property
    def shown(self) -> str:
        """The target for messages: ``SessionStore at HOST:PORT`` or ``Redis at URL``
        (without its password)."""
        if self.kind == "redis":
            return f"Redis at {redacted(self.location)}"
        return f"SessionStore at {self.location}"


def target_of(args: argparse.Namespace) -> Target:
    """The target the command line (and the environment) name; ``UsageError`` when
    it names none, two, or a malformed one."""
    address, url = args.address, args.redis
    if address is not None and url is not None:
        raise UsageError("give --address or --redis, not both")
    if address is None and url is None:
        address, url = os.environ.get(ADDRESS_ENV) or None, os.environ.get(REDIS_ENV) or None
        if address is not None and url is not None:
            raise UsageError(
                f"both ${ADDRESS_ENV} and ${REDIS_ENV} are set: choose one with --address "
                "or --redis"
            )
    if not args.deadline > 0:
        raise UsageError(f"--deadline must be a positive number of seconds, got {args.deadline}")
    if url is not None:
        if args.token is not None or args.tls_root_cert is not None:
            raise UsageError("--token and --tls-root-cert are for a SessionStore, not Redis")
        if not is_redis(url):
            raise UsageError(
                f"{redacted(url)!r} is not a Redis URL: give one as in 'redis://127.0.0.1:6379/0'"
            )
        return Target("redis", url, args.deadline)
    if address is None:
        raise UsageError(
            f"say where the session is: --address HOST:PORT (or ${ADDRESS_ENV}) for a "
            f"SessionStore, --redis URL (or ${REDIS_ENV}) for Redis"
        )
    try:
        bridge_address(address)
    except ValueError as exc:
        raise UsageError(f"{exc} (forms: {BRIDGE_ADDRESSES})") from None
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV) or None
    if token == "":
        raise UsageError("an empty --token would be sent as no token: give a non-empty one")
    return Target("bridge", address, args.deadline, token, args.tls_root_cert)


@contextlib.contextmanager
def session_handle(
    target: Target, session_id: str, *, create: bool = False, ttl: float | None = DEFAULT_TTL
) -> Iterator[Handle]:
    """A handle on ``session_id`` at ``target``, released when the block ends.

    ``create=False`` only attaches (``SessionNotFound`` if absent). A session the
    handle created outlives the command when the block succeeds: the handle gives
    up ownership before it is released, so the session is left to its store's TTL
    (``ttl``: a Redis session's, in seconds; None: it never expires). When the
    block fails, a session it created is closed again, leaving nothing half made.
    """
    handle = _open(target, session_id, create, ttl)
    try:
        yield handle
    except BaseException:
        handle.cleanup()  # the owner closes what it created: nothing half made stays
        raise
    # Both handles close the session in cleanup() only while they own it.
    handle.owner = False
    handle.cleanup()


def _open(target: Target, session_id: str, create: bool, ttl: float | None) -> Handle:
    if target.kind == "redis":
        from dspex_actors.redis.state import RedisState

        try:
            return RedisState.init(
                session_id=session_id,
                url=target.location,
                timeout=target.deadline,
                create=create,
                ttl=ttl,
            )
        except ValueError as exc:
            if isinstance(exc, StateError):  # a ValidationError (a bad session id)
                raise
            raise UsageError(str(exc)) from None  # a URL redis-py cannot read
    from dspex_actors.bridge.client.bridged import BridgedState

    # Unary calls: a command makes one or two, which a Calls stream would not repay.
    return BridgedState.init(
        session_id=session_id,
        address=target.location,
        token=target.token,
        timeout=target.deadline,
        tls_root_cert=target.tls_root_cert,
        create=create,
        stream=False,
    )
