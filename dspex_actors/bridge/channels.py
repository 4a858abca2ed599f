"""Client channels: one per SessionStore target, shared by the handles that use it.

Handles to the same address with the same settings share one gRPC channel (and so
one TCP connection), counted by reference: the first :func:`acquire` opens it, the
last :func:`release` closes it, so each handle keeps an independent lifetime.

A write that fails in transport is never classed "not applied" from the channel's
connectivity: gRPC reports that asynchronously, so a connection that came up,
carried the write and broke could still look down (measured under load: 3 of 40
tries). Only the server's own answer says "not applied" for a write.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import grpc

from dspex_actors.bridge.calls import CallStream

__all__ = ["Shared", "acquire", "release"]


@dataclass
class Shared:
    """A channel, how many handles use it, and its Calls streams (one per token)."""

    key: tuple[str, bytes | None, int]
    channel: grpc.Channel
    users: int = 0
    streams: dict[Any, CallStream] = field(default_factory=dict)

    def calls(self, metadata: Any) -> CallStream:
        """The channel's Calls stream for handles sending ``metadata`` (their token)."""
        with _lock:
            stream = self.streams.get(metadata)
            if stream is None:
                stream = self.streams[metadata] = CallStream(self.channel, metadata, self.key[2])
            return stream


_lock = threading.Lock()
_shared: dict[tuple[str, bytes | None, int], Shared] = {}


def acquire(address: str, root_cert: bytes | None, max_message_bytes: int) -> Shared:
    """The shared channel for these settings, one more user counted."""
    key = (address, root_cert, max_message_bytes)
    with _lock:
        shared = _shared.get(key)
        if shared is None:
            options = [
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.max_receive_message_length", max_message_bytes),
            ]
            channel = (
                grpc.insecure_channel(address, options=options)
                if root_cert is None
                else grpc.secure_channel(
                    address, grpc.ssl_channel_credentials(root_certificates=root_cert), options
                )
            )
            shared = _shared[key] = Shared(key, channel)
        shared.users += 1
        return shared


def release(shared: Shared) -> None:
    """One user less; the last one closes the channel."""
    with _lock:
        shared.users -= 1
        if shared.users > 0:
            return
        del _shared[shared.key]
        streams = list(shared.streams.values())
    for stream in streams:
        stream.close()
    shared.channel.close()
