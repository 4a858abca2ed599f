"""What both Redis drivers' connections start from (the blocking one in
:mod:`~dspex_actors.redis.connections`, the asyncio one in
:mod:`~dspex_actors.redis.async_connections`): the target a URL names, the ``WAIT``
its ``?wait=N`` adds, redis-py's connection options, and a Sentinel's arguments.
"""

from __future__ import annotations

from typing import Any

from dspex_actors.redis.steps import pack_command
from dspex_actors.urls import RedisTarget, bad_redis_url, redis_target

__all__ = ["connection_setup", "pool_of", "sentinel_arguments"]

_SENTINEL_TIMEOUT = 1.0
"""Seconds a Sentinel may take to answer which node is the primary (then the next is asked)."""


def connection_setup(
    url: str, timeout: float, retry: Any
) -> tuple[RedisTarget, bytes | None, dict[str, Any]]:
    """What both drivers' connections start from: the URL's target, the ``WAIT`` a
    ``?wait=N`` adds after each write (refused when it would outlast its call), and
    redis-py's connection options (``retry``: the client's no-retry policy, sync or
    asyncio: our engine retries, once, by request id)."""
    target = redis_target(url)
    wait: bytes | None = None
    if target.wait_replicas:
        if target.wait_timeout_ms >= timeout * 1000:
            raise bad_redis_url(
                url,
                f"wait_timeout {target.wait_timeout_ms} ms is not below the call "
                f"timeout of {timeout}s: a WAIT would outlast its call",
            )
        wait = pack_command("WAIT", target.wait_replicas, target.wait_timeout_ms)
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": retry,
        "health_check_interval": 0,
        "protocol": 2,  # the replies parsed here are RESP2's
    }
    try:  # redis-py 7+: no maintenance notifications (one command less per connect)
        from redis.maint_notifications import MaintNotificationsConfig
    except ImportError:
        pass
    else:
        options["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
    return target, wait, options


def sentinel_arguments(
    target: RedisTarget, timeout: float, options: dict[str, Any]
) -> dict[str, Any]:
    """The keyword arguments of redis-py's ``Sentinel`` (sync or asyncio) for a
    ``redis+sentinel://`` target: the Sentinels asked within a short timeout, the
    primary's database and credentials, our connection options."""
    asking = min(timeout, _SENTINEL_TIMEOUT)
    sentinel_options: dict[str, Any] = {"socket_timeout": asking, "socket_connect_timeout": asking}
    if target.sentinel_password is not None:
        sentinel_options["password"] = target.sentinel_password
    return {
        "sentinel_kwargs": sentinel_options,
        "db": target.db,
        "username": target.username,
        "password": target.password,
        **options,
    }


def pool_of(pool_class: Any, url: str, target: RedisTarget, options: dict[str, Any]) -> Any:
    """redis-py's connection pool (sync or asyncio ``pool_class``) for a single-node
    target: what its connections are made of (a URL redis-py refuses, in our words)."""
    try:
        return pool_class.from_url(target.url, **options)
    except ValueError as exc:  # redis-py's words, in ours
        raise bad_redis_url(url, str(exc)) from None
