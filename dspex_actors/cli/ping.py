"""``ping``: is the SessionStore (or the Redis) there and serving?

A SessionStore is asked through the standard gRPC health service (``Check`` of the
server's overall status, which needs no token), so ``ping`` answers the way a
load balancer's probe or ``grpc_health_probe`` would; SERVING is exit status 0,
anything else (a server that is stopping says NOT_SERVING) or no answer within
the deadline is 5. A Redis is sent ``PING``. Nothing of a session is touched.
"""

from __future__ import annotations

import argparse
import time

from dspex_actors.cli.exits import UsageError
from dspex_actors.cli.render import as_json
from dspex_actors.cli.target import Target, target_of
from dspex_actors.errors import BridgeUnavailable
from dspex_actors.urls import bridge_address

__all__ = ["run_ping"]


def run_ping(args: argparse.Namespace) -> int:
    """Probe the target once, within the deadline; print what it answered and how fast."""
    target = target_of(args)
    status, seconds = _redis_status(target) if target.kind == "redis" else _health_status(target)
    elapsed_ms = seconds * 1000
    if args.json:
        print(
            as_json(
                {
                    "target": target.shown,
                    "kind": target.kind,
                    "status": status,
                    "milliseconds": round(elapsed_ms, 3),
                }
            )
        )
    else:
        print(f"{target.shown}: {status} ({elapsed_ms:.1f} ms)")
    return 0


def _health_status(target: Target) -> tuple[str, float]:
    """The server's overall health status (SERVING) and the seconds the probe took
    (connecting included), or ``BridgeUnavailable``."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from dspex_actors.wire.status import error_from_rpc
    from dspex_actors.wire.tls import read_pem

    address, tls = bridge_address(target.location)
    if tls or target.tls_root_cert is not None:
        root = read_pem(target.tls_root_cert) if target.tls_root_cert is not None else None
        channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(root))
    else:
        channel = grpc.insecure_channel(address)
    with channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        started = time.monotonic()
        try:
            answer = check(health_pb2.HealthCheckRequest(service=""), timeout=target.deadline)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, address) from None
        seconds = time.monotonic() - started
    status: str = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    if answer.status != health_pb2.HealthCheckResponse.SERVING:
        raise BridgeUnavailable(f"{target.shown} answered {status}: it is not serving")
    return status, seconds


def _redis_status(target: Target) -> tuple[str, float]:
    """``PONG`` and the seconds it took (connecting included), or
    ``BridgeUnavailable`` saying why Redis did not answer."""
    from dspex_actors.redis.connections import check_reachable, redis_module

    redis_module()  # loaded before the clock starts (ImportError: the missing extra)
    started = time.monotonic()
    try:
        check_reachable(target.location, target.deadline)
    except ValueError as exc:  # a URL redis-py cannot read
        raise UsageError(str(exc)) from None
    except OSError as exc:  # "cannot reach the Redis store URL: why": the why
        why = str(exc).partition(": ")[2] or str(exc)
        raise BridgeUnavailable(f"{target.shown} is unreachable ({why})") from None
    return "PONG", time.monotonic() - started
