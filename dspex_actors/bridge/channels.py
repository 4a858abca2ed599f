"""Client channels: one per SessionStore target, shared by the handles that use it.

Handles to the same address with the same settings share one gRPC channel (and so
one TCP connection), counted by reference: the first :func:`acquire` opens it, the
last :func:`release` closes it, so each handle keeps an independent lifetime.

From its first transport failure on, a shared channel also watches its own
connectivity (``Channel.subscribe``: one gRPC delivery thread per such channel,
and closing it then takes up to a poll interval, ~0.2 s). That is what lets a
write that failed in transport be classed honestly: if the channel was known to
be down when the attempt started and did not connect while it ran, the request
never left this process, so it was not applied (``BridgeUnavailable``); otherwise
it may have been (``OutcomeUnknown``). Before anything is watched (the first
failure of a channel) and whenever a reading is uncertain, the answer is "may have
been": the class never claims "not applied" wrongly.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import grpc

__all__ = ["Attempt", "Shared", "acquire", "release"]


@dataclass
class Shared:
    """A channel, its users and what it knows of its connection."""

    key: tuple[str, bytes | None, int]
    channel: grpc.Channel
    users: int = 0
    ready: bool = False
    ready_count: int = 0  # how many times it became READY
    seen_down: bool = False  # observed a state other than READY since the last READY
    watching: bool = False
    first_state: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def watch(self) -> None:
        """Start following the channel's connectivity (after its first failure), and
        wait for gRPC's first report of it, so the next attempt is judged on it."""
        with _lock:
            if self.watching or self.users <= 0:
                return
            self.watching = True
        self.channel.subscribe(self.on_state, try_to_connect=False)
        self.first_state.wait(_FIRST_STATE_WAIT)

    def on_state(self, state: grpc.ChannelConnectivity) -> None:
        """gRPC's connectivity callback (in its delivery thread)."""
        with self.lock:
            if state is grpc.ChannelConnectivity.READY:
                self.ready = True
                self.ready_count += 1
                self.seen_down = False
            else:
                self.ready = False
                self.seen_down = True
        self.first_state.set()

    def attempt(self) -> Attempt:
        """A snapshot taken as a call starts, to judge its failure by."""
        with self.lock:
            return Attempt(
                self, not self.watching or self.ready or not self.seen_down, self.ready_count
            )


@dataclass(frozen=True)
class Attempt:
    """The channel's state as one attempt began."""

    shared: Shared
    maybe_connected: bool
    ready_count: int

    def may_have_been_sent(self) -> bool:
        """False only when the channel was known down throughout the attempt."""
        shared = self.shared
        with shared.lock:
            return self.maybe_connected or shared.ready_count != self.ready_count


_FIRST_STATE_WAIT = 1.0
"""Seconds to wait for gRPC's first connectivity report (it comes at once)."""

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
    """One user less; the last one closes the channel (its watcher thread ends)."""
    with _lock:
        shared.users -= 1
        if shared.users > 0:
            return
        del _shared[shared.key]
        watching = shared.watching
    if watching:
        shared.channel.unsubscribe(shared.on_state)
    shared.channel.close()
