"""Client channels: one per SessionStore target, shared by the handles that use it.

Handles to the same address with the same settings share one gRPC channel (and so
one TCP connection), counted by reference: the first :func:`acquire` opens it, the
last :func:`release` closes it, so each handle keeps an independent lifetime.

Watch streams go on connections of their own (:meth:`Shared.watch_channel`), up to
:data:`WATCHES_PER_CONNECTION` each, or as many as the server said it takes on one
(its OpenSession answer says): a server takes a bounded number of streams per
connection (``max_calls_per_connection``, 128 by default), and watches, which stay
open, would otherwise take every slot the channel's calls need.

A write that fails in transport is never classed "not applied" from the channel's
connectivity: gRPC reports that asynchronously, so a connection that came up,
carried the write and broke could still look down (measured under load: 3 of 40
tries). Only the server's own answer says "not applied" for a write.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from dspex_actors.bridge.client.calls import CallStream
from dspex_actors.wire import keepalive
from dspex_actors.wire.forms import Rpc

__all__ = ["SYSTEM_ROOTS", "WATCHES_PER_CONNECTION", "Shared", "acquire", "release"]

WATCHES_PER_CONNECTION = 100
"""Watch streams one watch connection carries: below a default server's 128."""


@dataclass
class Shared:
    """A channel, how many handles use it, and its Calls streams (one per token)."""

    key: tuple[str, bytes | None, int]
    channel: grpc.Channel
    users: int = 0
    streams: dict[Any, CallStream] = field(default_factory=dict)
    watches: list[list[Any]] = field(default_factory=list)  # [channel, streams on it]
    released: bool = False  # its last user is gone: it opens nothing more
    server_limit: int = 0  # streams the server takes per connection (0: not said)
    unaries: dict[str, Any] = field(default_factory=dict)  # RPC name -> multicallable

    def unary(self, rpc: Rpc) -> Any:
        """The channel's unary multicallable for ``rpc`` (made once, then shared)."""
        method = self.unaries.get(rpc.name)
        if method is None:
            method = self.unaries[rpc.name] = self.channel.unary_unary(
                rpc.path,
                request_serializer=rpc.request.SerializeToString,
                response_deserializer=rpc.response.FromString,
            )
        return method

    def calls(self, metadata: Any) -> CallStream:
        """The channel's Calls stream for handles sending ``metadata`` (their token)."""
        with _lock:
            stream = self.streams.get(metadata)
            if stream is None:
                stream = self.streams[metadata] = CallStream(
                    self.channel, metadata, self.key[2], self.key[0]
                )
            return stream

    def heard_limit(self, limit: int) -> None:
        """The server said (opening a session) how many streams it takes on one
        connection; 0: it did not say."""
        if limit > 0:
            with _lock:
                self.server_limit = limit

    def watch_channel(self) -> tuple[grpc.Channel, Callable[[], None]]:
        """A channel for one more Watch stream, on a connection that carries only
        watches (as many as the server said it takes on one, at most
        :data:`WATCHES_PER_CONNECTION`), and the function that gives its place back
        (once). ValueError once the channel is released, as gRPC's closed channels do."""
        with _lock:
            if self.released:
                raise ValueError("the channel is closed")
            room = min(WATCHES_PER_CONNECTION, self.server_limit or WATCHES_PER_CONNECTION)
            slot = next((w for w in self.watches if w[1] < room), None)
            if slot is None:
                # Distinct channel arguments: gRPC gives it a connection of its own.
                role = ("dspex_actors.watches", len(self.watches) + 1)
                slot = [_open(*self.key, extra=[role]), 0]
                self.watches.append(slot)
            slot[1] += 1
        given = [False]

        def give_back() -> None:
            with _lock:
                if not given[0]:
                    given[0] = True
                    slot[1] -= 1

        return slot[0], give_back


def _open(
    address: str, root_cert: bytes | None, max_message_bytes: int, extra: list[Any] | None = None
) -> grpc.Channel:
    options = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        *keepalive.client_options(),  # a frozen link is given up, not waited on forever
        *(extra or ()),
    ]
    if root_cert is None:
        return grpc.insecure_channel(address, options=options)
    credentials = grpc.ssl_channel_credentials(root_certificates=root_cert or None)
    return grpc.secure_channel(address, credentials, options)


SYSTEM_ROOTS = b""
"""As a channel's root certificate: TLS, trusting the system's roots (gRPC's own)."""

_lock = threading.Lock()
_shared: dict[tuple[str, bytes | None, int], Shared] = {}


def acquire(address: str, root_cert: bytes | None, max_message_bytes: int) -> Shared:
    """The shared channel for these settings, one more user counted."""
    key = (address, root_cert, max_message_bytes)
    with _lock:
        shared = _shared.get(key)
        if shared is None:
            shared = _shared[key] = Shared(key, _open(*key))
        shared.users += 1
        return shared


def release(shared: Shared) -> None:
    """One user less; the last one closes the channel."""
    with _lock:
        shared.users -= 1
        if shared.users > 0:
            return
        del _shared[shared.key]
        shared.released = True
        streams = list(shared.streams.values())
        watches = [slot[0] for slot in shared.watches]
    for stream in streams:
        stream.close()
    for channel in watches:
        channel.close()
    shared.channel.close()
