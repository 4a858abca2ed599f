"""Client channels: one per SessionStore target, shared by the handles that use it.

Handles to the same address with the same settings share one gRPC channel (and so
one TCP connection), counted by reference: the first :func:`acquire` opens it, the
last :func:`release` closes it, so each handle keeps an independent lifetime.

Watch streams go on connections of their own (:meth:`Shared.watch_channel`), up to
:data:`WATCHES_PER_CONNECTION` each, or as many as the server said it takes on one
(its OpenSession answer says): a server takes a bounded number of streams per
connection (``max_calls_per_connection``, 128 by default), and watches, which stay
open, would otherwise take every slot the channel's calls need.

Whether a write that got no answer may have reached the server is decided before it
is sent, never after it failed. A failure cannot be classed by the connectivity gRPC
reports afterwards: ``Channel.subscribe`` reports it from a polling thread, so a
connection can come up, carry the write and break before READY is reported (measured
on grpcio 1.85 with 2 cores kept busy: 9 of 40 writes, applied and their replies cut,
failed before their fresh channel reported READY; 3 of 40 when writes were once
classed that way). So a unary write is handed to gRPC only once the channel is
READY (:meth:`Shared.connected`): one never handed over was certainly not sent,
whatever gRPC reports later, and one that was "may have been sent" from then on. (The
Calls stream holds its requests until the server's headers, for the same reason:
:mod:`dspex_actors.bridge.client.calls`.) READY read late only sends a write that
then "may have been sent"; not-READY read late only keeps back one that could have
gone: neither can call a sent write "not applied".

The state is read synchronously from gRPC's core, through the two calls
``subscribe``'s own polling thread makes (``check_connectivity_state``,
``watch_connectivity_state`` of grpcio's ``cygrpc.Channel``): a subscription would
report late, keep a thread per channel, and make each close wait for its poll (0.15 s
measured). Should a grpcio lack them, writes go ungated and every write that fails in
transport "may have been sent": the class then errs only toward ``OutcomeUnknown``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from dspex_actors.bridge.client.calls import CallStream, Unanswered
from dspex_actors.errors import BridgeUnavailable, OutcomeUnknown
from dspex_actors.wire import keepalive
from dspex_actors.wire import status as wire_status
from dspex_actors.wire.forms import Rpc

__all__ = [
    "SYSTEM_ROOTS",
    "WATCHES_PER_CONNECTION",
    "Shared",
    "acquire",
    "failed_call",
    "release",
]

WATCHES_PER_CONNECTION = 100
"""Watch streams one watch connection carries: below a default server's 128."""

_READY: int = grpc.ChannelConnectivity.READY.value[0]
_SHUTDOWN: int = grpc.ChannelConnectivity.SHUTDOWN.value[0]
_WATCH_SLICE = 0.1
"""Seconds one wait for a change of connectivity lasts at most: closing a channel
waits until no such wait is pending (measured), so this bounds how long a release
waits for a write that is waiting for a connection."""
_PROBE_SECONDS = 0.1
"""At most this long is spent asking gRPC why a channel did not connect."""
_HEALTH_CHECK = "/grpc.health.v1.Health/Check"
_UNREACHED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


@dataclass
class Shared:
    """A channel, how many handles use it, and its Calls streams (one per token and
    way of sending: coalesced or not)."""

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

    def attempt(
        self, rpc: Rpc, request: Any, timeout: float, metadata: Any, *, write: bool
    ) -> Any:
        """One unary call of ``rpc``: its response, the server's ``StateError``, or
        :class:`~dspex_actors.bridge.client.calls.Unanswered`, whose ``maybe_sent`` is
        False only when the server said it did not start the call or the request
        never reached gRPC (a ``write`` is handed over only once the channel is
        READY, within ``timeout``: see the module docstring). ValueError once the
        channel is closed."""
        if write:
            began = time.monotonic()
            if self.connected(timeout) is False:
                raise Unanswered(self.unreachable(), maybe_sent=False)
            timeout = max(timeout - (time.monotonic() - began), 0.001)
        try:
            return self.unary(rpc)(request, timeout=timeout, metadata=metadata)
        except grpc.RpcError as exc:
            raise failed_call(exc, self.key[0], rpc) from exc

    def connected(self, timeout: float) -> bool | None:
        """Whether the channel is READY, now or within ``timeout`` (gRPC is asked to
        connect if it is idle): a write may be handed to gRPC only after True (see
        the module docstring). None: this grpcio cannot say. ValueError once the
        channel is closed."""
        core = getattr(self.channel, "_channel", None)
        check = getattr(core, "check_connectivity_state", None)
        watch = getattr(core, "watch_connectivity_state", None)
        if check is None or watch is None:
            return None
        deadline = time.monotonic() + timeout
        state = check(True)
        while state != _READY:
            left = deadline - time.monotonic()
            if left <= 0 or state == _SHUTDOWN:
                return False
            watch(state, time.time() + min(left, _WATCH_SLICE))  # returns at a change
            state = check(True)
        return True

    def unreachable(self) -> BridgeUnavailable:
        """The error for a write kept back because the channel never connected: why,
        in gRPC's words for a health check sent now, which fails at once on a channel
        that could not connect, with the cause (refused, DNS, TLS)."""
        probe = self.unaries.get(_HEALTH_CHECK)
        if probe is None:
            probe = self.unaries[_HEALTH_CHECK] = self.channel.unary_unary(
                _HEALTH_CHECK, request_serializer=None, response_deserializer=None
            )
        why = "it connected only after the deadline"
        status: dict[str, str] = {}  # gRPC's code, as a bare status's error carries it
        try:
            probe(b"", timeout=_PROBE_SECONDS, wait_for_ready=False)
        except grpc.RpcError as exc:
            if isinstance(exc, grpc.Call) and exc.code() in _UNREACHED:
                why, status = wire_status.failure_text(exc), {"status": exc.code().name}
        except ValueError:  # grpcio's word for a channel closed meanwhile
            why = "the channel is closed"
        return BridgeUnavailable(f"SessionStore at {self.key[0]} is unreachable ({why})", **status)

    def calls(self, metadata: Any, coalesce: bool = True) -> CallStream:
        """The channel's Calls stream for handles sending ``metadata`` (their token)
        with calls ready together coalesced in one message, or not."""
        with _lock:
            stream = self.streams.get((metadata, coalesce))
            if stream is None:
                stream = self.streams[metadata, coalesce] = CallStream(
                    self.channel, metadata, self.key[2], self.key[0], coalesce
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


def failed_call(exc: grpc.RpcError, address: str, rpc: Rpc) -> Exception:
    """What a unary call that failed with ``exc`` raises (sync or asyncio): the
    server's ``StateError``, or :class:`Unanswered` when it is worth another attempt
    — the server was not reached, did not start the call in time (its
    ``BridgeUnavailable``: not applied), or no answer came. Only a failure of the
    transport may hide an applied write (``maybe_sent``)."""
    error = wire_status.error_from_rpc(exc, address)
    if isinstance(error, OutcomeUnknown) and rpc.has_request_id:
        return Unanswered(error, maybe_sent=True)
    if not isinstance(error, BridgeUnavailable):
        return error
    return Unanswered(error, maybe_sent=not wire_status.answered_by_server(exc))


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
