"""How a link proves it is alive: gRPC keepalive on every client and server channel.

A link that stops passing packets (a frozen network, a SIGSTOPped server) never looks
down by itself: TCP keeps the connection open. So every client channel pings its
server every :data:`CLIENT_PING` seconds, calls or none, and gives a link up when a
ping is not answered within :data:`PING_TIMEOUT`; gRPC then fails every call and
stream on it. A call's retry learns it at once, and a cached handle stops answering
from its copy (its Watch stream broke): within :data:`LIVENESS_BOUND` seconds of a
link freezing, nothing is read from a copy that link can no longer keep fresh.

A link given up is tried again within :data:`MAX_RECONNECT_BACKOFF` seconds (gRPC's
own backoff grows to 120 s), so the first calls after a partition heals find it up.

A server pings its clients every :data:`SERVER_PING` seconds (a client that vanished
without closing its streams is noticed) and lets them ping as often as
:data:`CLIENT_PING`, however long their streams stay quiet.
"""

from __future__ import annotations

__all__ = [
    "CLIENT_PING",
    "LIVENESS_BOUND",
    "MAX_RECONNECT_BACKOFF",
    "PING_TIMEOUT",
    "SERVER_PING",
    "client_options",
    "server_options",
]

CLIENT_PING = 1.0
"""Seconds between a client channel's pings."""
PING_TIMEOUT = 1.0
"""Seconds a ping's answer may take before the link is given up."""
LIVENESS_BOUND = CLIENT_PING + PING_TIMEOUT
"""Seconds after which a frozen link is given up, at the latest (2x the ping)."""
SERVER_PING = 10.0
"""Seconds between a server's pings of each client."""
MAX_RECONNECT_BACKOFF = 1.0
"""Seconds a client channel waits at most between attempts to reconnect."""


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def client_options() -> list[tuple[str, int]]:
    """A client channel's keepalive arguments."""
    return [
        ("grpc.keepalive_time_ms", _ms(CLIENT_PING)),
        ("grpc.keepalive_timeout_ms", _ms(PING_TIMEOUT)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),  # a quiet watch is pinged all along
        ("grpc.http2.min_time_between_pings_ms", _ms(CLIENT_PING)),
        # What gives the link up when an answer is late (grpcio 1.85 does not act on
        # keepalive_timeout_ms alone while another ping is in flight: measured).
        ("grpc.http2.ping_timeout_ms", _ms(PING_TIMEOUT)),
        ("grpc.initial_reconnect_backoff_ms", _ms(MAX_RECONNECT_BACKOFF / 4)),
        ("grpc.max_reconnect_backoff_ms", _ms(MAX_RECONNECT_BACKOFF)),
    ]


def server_options() -> list[tuple[str, int]]:
    """A server's keepalive arguments: its own pings, and the clients' it accepts."""
    return [
        ("grpc.keepalive_time_ms", _ms(SERVER_PING)),
        ("grpc.keepalive_timeout_ms", _ms(PING_TIMEOUT * 5)),
        ("grpc.http2.ping_timeout_ms", _ms(PING_TIMEOUT * 5)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", _ms(CLIENT_PING / 2)),
        ("grpc.http2.max_ping_strikes", 0),  # a client pinging as agreed is never cut
    ]
