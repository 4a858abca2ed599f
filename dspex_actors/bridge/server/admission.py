"""Who gets in: the server's limit on RPCs running at once, and its token.

One interceptor, :class:`Admission`, decides from a call's headers alone, before
any body is read: past ``Limits.max_concurrent_calls`` RPCs running (each unary
call, each stream however long it stays open, health and reflection included) a
call is refused RESOURCE_EXHAUSTED; with a token, a call without
``authorization: Bearer <token>`` is refused UNAUTHENTICATED (health excepted, so
probes need no secret). The refusal never waits for, or parses, a body.

The limit is counted here rather than by grpc's own ``maximum_concurrent_rpcs`` so
that a refusal is ours to count, log and word: grpcio refuses inside its Cython
core, where no code of ours sees it, with a bare "Concurrent RPC limit exceeded!".
The count has grpcio's rule: an RPC holds its slot from its arrival until its task
ends (a done callback on that task, so a call cancelled before its handler ran
frees its slot too). Calls on a Calls stream are limited by the stream itself
(``servicer.py``). HTTP/2's own per-connection stream limit
(``max_calls_per_connection`` as ``grpc.max_concurrent_streams``) is enforced by
the transport, which queues or resets the excess where no code of ours sees it.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc_status import rpc_status

from dspex_actors.bridge.server import discovery, logs
from dspex_actors.bridge.server.metrics import WATCH, ServerMetrics
from dspex_actors.errors import LimitExceeded, StateError, Unauthenticated
from dspex_actors.wire import status as wire_status
from dspex_actors.wire.forms import SERVICE

__all__ = ["Admission", "method_label"]

_OWN_PREFIX = f"/{SERVICE}/"
_CALLS = "Calls"
"""The Calls stream: its calls are counted one by one, not the stream itself."""


def method_label(path: str) -> str:
    """A method as metrics and logs name it: ``GetVariable`` for the SessionStore's,
    ``grpc.health.v1.Health/Check`` for another service's."""
    return path[len(_OWN_PREFIX) :] if path.startswith(_OWN_PREFIX) else path.lstrip("/")


class Admission(grpc.aio.ServerInterceptor):
    """Refuse calls past the limit on running RPCs, and calls without the token."""

    def __init__(self, limit: int, token: str | None, metrics: ServerMetrics | None) -> None:
        self._limit = limit
        self._expected = f"Bearer {token}".encode() if token is not None else None
        self._metrics = metrics
        self.running = 0
        """RPCs holding a slot now (read by the metrics)."""

    def _release(self, _task: asyncio.Future[Any]) -> None:
        self.running -= 1

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if self.running >= self._limit:
            error: StateError = LimitExceeded(
                f"{method_label(details.method)}: {self.running} calls run on this "
                "server: not run (rule 'max_concurrent_calls')",
                limit="max_concurrent_calls",
            )
            return self._refusal(await continuation(details), details.method, error)
        task = asyncio.current_task()
        if task is not None:  # always, under grpc.aio: the RPC's own task
            self.running += 1
            task.add_done_callback(self._release)
        if self._expected is None or details.method in discovery.HEALTH_METHODS:
            return await continuation(details)
        for key, value in details.invocation_metadata or ():
            if key == "authorization":
                given = value if isinstance(value, bytes) else value.encode()
                if hmac.compare_digest(given, self._expected):
                    return await continuation(details)
                break
        error = Unauthenticated(
            f"{details.method}: missing or wrong token (authorization: Bearer <token>)"
        )
        return self._refusal(await continuation(details), details.method, error)

    def _refusal(
        self, handler: grpc.RpcMethodHandler | None, path: str, error: StateError
    ) -> grpc.RpcMethodHandler:
        """A handler that answers ``error`` from the call's headers alone.

        It takes the request as a stream (whatever the method's shape: the bytes on
        the wire are the same) and never reads it, so a client that sends headers
        and no body is refused at once, and unrefused bytes are never parsed.
        """
        arrived = time.monotonic()
        status = rpc_status.to_status(wire_status.error_status(error))
        method = method_label(path)
        reason = error.details.get("limit") or error.reason
        metrics = self._metrics

        async def refuse(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            logs.refused(method, reason)
            if metrics is not None:
                metrics.refused_call(method, reason)
                code = status.code.name
                if method == WATCH:
                    metrics.watch_ended(code)
                elif path.startswith(_OWN_PREFIX) and method != _CALLS:
                    metrics.answered(method, code, time.monotonic() - arrived)
            await context.abort_with_status(status)  # type: ignore[attr-defined]  # not in stubs

        if handler is not None and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(refuse)
        return grpc.stream_unary_rpc_method_handler(refuse)
