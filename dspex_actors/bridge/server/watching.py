"""The Watch stream's events: a session's changes written to one watcher as they come.

A waiting watcher is a suspended coroutine on the server's loop, not a thread; the
store's watch is closed when the stream ends, however it ends. The servicer wraps
this with the stream's status and its count in the metrics.
"""

from __future__ import annotations

import contextlib
from typing import Any

import grpc.aio

from dspex_actors import failpoints
from dspex_actors.bridge.server.metrics import ServerMetrics
from dspex_actors.stores.base import Store
from dspex_actors.streaming import Event, Progress
from dspex_actors.v1 import session_store_pb2 as pb
from dspex_actors.wire.events import event_message, started_message

__all__ = ["write_events"]

_PROGRESS = "progress"


def _kind(event: Event | Progress) -> str:
    """An event's kind as the metrics count it (a progress message as ``progress``)."""
    return _PROGRESS if isinstance(event, Progress) else event.kind


async def write_events(
    store: Store,
    metrics: ServerMetrics | None,
    request: pb.WatchRequest,
    context: grpc.aio.ServicerContext[Any, Any],
) -> None:
    """Follow the session ``request`` names and write its events to ``context``
    until the session ends or the watcher goes (raises what the store raises)."""
    events = await store.watch(
        request.session_id,
        list(request.patterns),
        request.start_sequence or None,
        request.incarnation or None,
        progress=request.progress,
    )
    # aclosing: the store's watch ends now, not when it is collected.
    async with contextlib.aclosing(events):
        if metrics is not None:
            metrics.watch_streams += 1
        try:
            await context.send_initial_metadata(())  # the stream is up: a client can tell
            if request.started:  # asked for: where it starts, and the incarnation
                first = started_message(request.session_id, events.start, events.incarnation)
                await context.write(first)
            async for event in events:
                await failpoints.reached("watch.event")
                if metrics is not None:  # counted as handed to the stream
                    metrics.watch_event(_kind(event))
                await context.write(event_message(event))
        finally:
            if metrics is not None:
                metrics.watch_streams -= 1
