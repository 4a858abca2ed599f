"""What a client said in a call's metadata: its deadline as an instant, the largest
reply it reads, and what it asked for (``key: 1``). What cannot be read is taken as
not said."""

from __future__ import annotations

import contextlib
from typing import Any

import grpc.aio

from dspex_actors.wire import codec

__all__ = ["client_max_reply", "expires_ms", "said"]

Context = grpc.aio.ServicerContext[Any, Any]


def _number(context: Context, wanted: str) -> int | None:
    """The integer the client sent under ``wanted`` (None: not sent, or not one)."""
    for key, value in context.invocation_metadata() or ():
        if key == wanted:
            with contextlib.suppress(ValueError, TypeError):
                return int(value)
    return None


def expires_ms(context: Context) -> int:
    """The client's deadline as an instant, from a unary call's metadata (0: none)."""
    return _number(context, codec.EXPIRES_KEY) or 0


def client_max_reply(context: Context) -> int:
    """The largest reply the client said it can receive (unbounded if it did not say)."""
    most = _number(context, codec.CALLS_MAX_REPLY_KEY)
    return 1 << 62 if most is None else most


def said(context: Context, key: str) -> bool:
    """Whether the client opened the call with ``key: 1`` in its metadata."""
    return any(k == key and v == "1" for k, v in context.invocation_metadata() or ())
