"""The SessionStore's RPCs: one dispatch from a request to an operation on a store.

Every RPC but the two streams is an entry of :data:`~dspex_actors.wire.operations.
RPCS`, and every one runs through :meth:`SessionStoreServicer.dispatch`: decode the
request into its :mod:`dspex_actors.messages` operation within the limits, run it
on the store (:mod:`dspex_actors.stores`; a session operation on the store itself),
and answer its result. There are no per-operation handlers. The Calls stream runs
each of its calls through the same dispatch; a ``StateError`` becomes gRPC's rich
status in one place, :func:`~dspex_actors.wire.status.error_status`, sent as the
unary call's status or in the streamed call's reply.

Handlers are coroutines on the server's event loop (``grpc.aio``): a call waiting
for its request body, its session's actor or a stream costs no thread. A call's
deadline travels to the store, shortened by a margin so that "not started, not
applied" reaches the client before its own deadline turns the outcome unknown; and
when the client sent its deadline as an instant too, no later than that, so a
request delayed in transit is refused rather than applied after its client gave
up.

Every call is counted once when its answer is ready (a server with metrics:
:mod:`~dspex_actors.bridge.server.metrics`), and its store call timed in the one
dispatch; a call refused here (a Calls stream's limits, a stopping server) is
logged (:mod:`~dspex_actors.bridge.server.logs`), and so is each answered call
that is a session's lifecycle event (:mod:`~dspex_actors.bridge.server.lifecycle`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

from dspex_actors import failpoints
from dspex_actors.bridge.server import lifecycle, logs
from dspex_actors.bridge.server.metrics import WATCH, ServerMetrics
from dspex_actors.bridge.server.replies import Replies
from dspex_actors.bulk import BULK_ITEMS, off_loop
from dspex_actors.errors import BridgeUnavailable, LimitExceeded, NotSupported, StateError
from dspex_actors.limits import Limits
from dspex_actors.messages import SessionOperation
from dspex_actors.stores.base import Store
from dspex_actors.streaming import Event, Progress
from dspex_actors.v1 import session_store_pb2 as pb
from dspex_actors.wire import codec
from dspex_actors.wire import status as wire_status
from dspex_actors.wire.events import event_message, started_message
from dspex_actors.wire.forms import SERVICE, Limited, Rpc, call_reply_bytes
from dspex_actors.wire.operations import CALL_FIELDS, RPCS

__all__ = ["SessionStoreServicer"]

logger = logging.getLogger(__name__)

_DEADLINE_MARGIN = 0.2
"""At most this share of the time left (and at most _MAX_MARGIN seconds) is kept
back, so the store's "not applied" beats the client's own deadline."""
_MAX_MARGIN = 0.25
_DECODE_APART = BULK_ITEMS * 100
"""A request this many bytes long (a large import) is decoded in the loop's
executor, so the loop keeps serving others meanwhile."""
_LAST_WORDS = 1.0
"""Seconds a stopping server gives its Calls streams for their last reply, at least."""


_OK = grpc.StatusCode.OK.name
_CANCELLED = grpc.StatusCode.CANCELLED.name
_UNKNOWN = "unknown"
"""The method label of a streamed call whose body no RPC of this server takes."""
_PROGRESS = "progress"


def _kind(event: Event | Progress) -> str:
    """An event's kind as the metrics count it (a progress message as ``progress``)."""
    return _PROGRESS if isinstance(event, Progress) else event.kind


def _code(error: StateError | None) -> str:
    """The status code name a call is answered with."""
    return _OK if error is None else wire_status.status_for(error).name


def _deadline(left: float | None, expires_ms: int = 0) -> float | None:
    """A call's deadline on the monotonic clock, less the margin (None: none set).

    ``left`` is gRPC's (counted from the request's arrival); ``expires_ms`` the
    client's own deadline as an instant (epoch ms, 0: not sent), which a request
    delayed in transit cannot outlive. Only writes are held to the instant: a late
    read harms nobody, and a client whose clock is behind must still read."""
    if expires_ms > 0:
        by_instant = expires_ms / 1000 - time.time()
        left = by_instant if left is None else min(left, by_instant)
    if left is None:
        return None
    return time.monotonic() + left - min(max(left, 0.0) * _DEADLINE_MARGIN, _MAX_MARGIN)


def _expires_ms(context: grpc.aio.ServicerContext[Any, Any]) -> int:
    """The client's deadline as an instant, from a unary call's metadata (0: none)."""
    for key, value in context.invocation_metadata() or ():
        if key == codec.EXPIRES_KEY:
            with contextlib.suppress(ValueError, TypeError):
                return int(value)
    return 0


def _stopping() -> BridgeUnavailable:
    """A stopping server's answer to a call it will not run (the client does not
    retry it: the server is going away)."""
    return BridgeUnavailable("the SessionStore is stopping; not run", stopping=True)


def _stopped_stream() -> BridgeUnavailable:
    """A stopping server's last word on a Calls stream (its reply to call 0)."""
    return BridgeUnavailable(
        "the SessionStore stopped: every call this stream did not answer was not run",
        not_run=True,
        stopping=True,
    )


def _as_state_error(rpc: str, exc: Exception) -> StateError:
    """What a call that failed answers: its StateError, or an internal error for a bug
    (logged with its traceback as text: a live one would keep the call's frames, and
    so the aio server, alive for as long as the log record is kept)."""
    if isinstance(exc, StateError):
        return exc
    logger.error("SessionStore.%s failed:\n%s", rpc, "".join(traceback.format_exception(exc)))
    return StateError(f"internal error in {rpc}: {type(exc).__name__}: {exc}")


def _serialized_answer(rpc: Rpc, operation: Any, result: Any) -> bytes:
    """The response to ``operation`` as its wire bytes (built off the loop, a piece
    at a time where the RPC can)."""
    if rpc.pieces is not None:
        return rpc.pieces(operation, result)
    return rpc.answer(operation, result).SerializeToString()


def _serialize(message: Message | bytes) -> bytes:
    """A response as sent: built here, or serialized already off the loop."""
    return message if isinstance(message, bytes) else message.SerializeToString()


def _said(context: grpc.aio.ServicerContext[Any, Any], key: str) -> bool:
    """Whether the client opened the call with ``key: 1`` in its metadata."""
    return any(k == key and v == "1" for k, v in context.invocation_metadata() or ())


def _client_max_reply(context: grpc.aio.ServicerContext[Any, Any]) -> int:
    """The largest reply the client said it can receive (unbounded if it did not say)."""
    for key, value in context.invocation_metadata() or ():
        if key == codec.CALLS_MAX_REPLY_KEY:
            with contextlib.suppress(ValueError, TypeError):
                return int(value)
    return 1 << 62


async def _read_calls(
    requests: AsyncIterator[pb.CallRequest],
    admit: Callable[[pb.CallRequest, float], pb.CallReply | None],
    replies: Replies,
    most: int,
) -> bool:
    """Admit a Calls stream's requests as they arrive (each of a message's ``more`` as
    a call of its own, with when it arrived), writing each refusal; False at a message
    that is not protobuf, or whose ``more`` holds ``most`` calls or more or nests them
    (the stream then ends), True when the client ends its side. Admitting starts a
    call in this turn: no queue between the read and the call's task."""
    try:
        async for request in requests:
            arrived = time.monotonic()
            more = list(request.more)
            if more:  # calls coalesced in one message: each is a call of its own
                if len(more) >= most or any(call.more for call in more):
                    return False  # more than the stream runs, or nested
                del request.more[:]
            for call in (request, *more) if more else (request,):
                refusal = admit(call, arrived)
                if refusal is not None:
                    await replies.send(refusal)
    except DecodeError:
        return False
    return True


def _failure(call: int, error: StateError) -> pb.CallReply:
    """The reply refusing a streamed call with ``error``."""
    return pb.CallReply(call=call, error=wire_status.error_status(error).SerializeToString())


class SessionStoreServicer:
    """The SessionStore RPCs; see proto/dspex_actors/v1/session_store.proto."""

    def __init__(self, store: Store, limits: Limits, metrics: ServerMetrics | None = None) -> None:
        self._store = store
        self._limits = limits
        self._metrics = metrics
        self._limited = Limited(limits)
        self._streamed_calls = 0  # calls running on Calls streams (the loop's only)
        # Each open Calls stream's handler task -> its calls running now.
        self._streams: dict[asyncio.Task[Any], set[asyncio.Task[None]]] = {}
        self._draining = False  # the server is stopping: no new streamed call runs
        self._handlers: set[asyncio.Task[Any]] = set()  # the Calls streams' handlers
        self._unary_running = 0
        self._unary_idle = asyncio.Event()  # set whenever no unary call runs

    @property
    def calls_in_flight(self) -> int:
        """Calls being served now: unary ones, and those of the Calls streams."""
        return self._unary_running + self._streamed_calls

    @property
    def call_streams(self) -> int:
        """Calls streams open now."""
        return len(self._streams)

    def handler(self) -> grpc.GenericRpcHandler:
        """The service's handlers: one per entry of the wire table, Watch and Calls."""
        methods: dict[str, grpc.RpcMethodHandler] = {
            name: grpc.unary_unary_rpc_method_handler(
                self._unary(rpc),
                request_deserializer=rpc.request.FromString,
                response_serializer=_serialize,
            )
            for name, rpc in RPCS.items()
        }
        methods["Watch"] = grpc.unary_stream_rpc_method_handler(
            self.watch,
            request_deserializer=pb.WatchRequest.FromString,
            response_serializer=pb.VariableEvent.SerializeToString,
        )
        methods["Calls"] = grpc.stream_stream_rpc_method_handler(
            self.calls,
            request_deserializer=pb.CallRequest.FromString,
            response_serializer=_serialize,
        )
        return grpc.method_handlers_generic_handler(SERVICE, methods)

    # -- the one dispatch ---------------------------------------------------------------

    async def dispatch(self, rpc: Rpc, request: Any, deadline: float | None) -> Message | bytes:
        """Run one call: its request decoded into an operation, run on the store, its
        result answered (a large answer built and serialized off the loop, as bytes);
        a ``StateError`` raised as it is."""
        if request.ByteSize() >= _DECODE_APART:
            decode = functools.partial(rpc.decode, request, self._limited)
            operation = await asyncio.get_running_loop().run_in_executor(None, decode)
        else:
            operation = rpc.decode(request, self._limited)
        session_id: str = request.session_id
        request_id = (request.request_id if rpc.has_request_id else "") or None
        incarnation = (request.incarnation if rpc.has_incarnation else "") or None
        metrics = self._metrics
        started = time.perf_counter()
        try:
            if isinstance(operation, SessionOperation):
                result = await operation.serve(self._store, session_id, request_id, incarnation)
            else:
                result = await self._store.run(
                    session_id,
                    operation,  # type: ignore[arg-type]  # a read or a write
                    request_id=request_id,
                    deadline=deadline,
                    incarnation=incarnation,
                )
        except Exception as exc:
            if metrics is not None:
                metrics.store_call(time.perf_counter() - started, exc)
            raise
        if metrics is not None:
            metrics.store_call(time.perf_counter() - started)
        event = lifecycle.EVENTS.get(rpc.request)
        if event is not None:
            kind = self._store.kind
            lifecycle.answered(event, rpc.name, session_id, operation, result, kind, metrics)
        if operation.scans and operation.result_items(result) >= BULK_ITEMS:
            return await off_loop(_serialized_answer, rpc, operation, result, deadline=deadline)
        return rpc.answer(operation, result)

    def _unary(
        self, rpc: Rpc
    ) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Message | bytes]]:
        async def unary(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> Message | bytes:
            arrived = time.monotonic()
            if self._draining:  # said by us, so the client knows it was not run
                error: StateError = _stopping()
                self._refused(rpc.name, "stopping", request.session_id)
            else:
                self._unary_running += 1
                try:
                    expires = _expires_ms(context) if rpc.has_request_id else 0
                    deadline = _deadline(context.time_remaining(), expires)
                    response = await self.dispatch(rpc, request, deadline)
                    self._answered(rpc.name, _OK, arrived)
                    return response
                except Exception as exc:
                    error = _as_state_error(rpc.name, exc)
                except asyncio.CancelledError:  # the client gave up: never answered
                    self._answered(rpc.name, _CANCELLED, arrived)
                    raise
                finally:
                    self._unary_running -= 1
                    if not self._unary_running:
                        self._unary_idle.set()
            self._answered(rpc.name, _code(error), arrived)
            await context.abort_with_status(wire_status.grpc_status(error))  # type: ignore[attr-defined]  # not in the stubs
            raise AssertionError("abort_with_status returned")  # it always raises

        return unary

    # -- the Calls stream ---------------------------------------------------------------

    async def calls(
        self,
        requests: AsyncIterator[pb.CallRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        """Many calls on one stream, each run through :meth:`dispatch` and answered
        when done (in any order). Bounded: per stream by ``max_calls_per_connection``,
        in all by ``max_concurrent_calls``; a call past either is answered
        LimitExceeded, not run."""
        running: set[asyncio.Task[None]] = set()
        limits = self._limits
        loop = asyncio.get_running_loop()
        max_reply = min(limits.max_message_bytes + codec.FRAMING_BYTES, _client_max_reply(context))
        batch = _said(context, codec.CALLS_BATCH_KEY)  # (running: the writer's task too)
        replies = Replies(context, batch, max_reply, lambda: len(running) > 1)
        # Say how many calls this stream runs at once (a client sends more unary),
        # and that calls coalesced in one message are read.
        await context.send_initial_metadata(
            (
                (codec.CALLS_LIMIT_KEY, str(limits.max_calls_per_connection)),
                (codec.CALLS_BATCH_KEY, "1"),
            )
        )
        if self._draining:  # opened while the server stops: nothing on it will be read
            await replies.send(_failure(0, _stopped_stream()))
            return

        def admit(request: pb.CallRequest, arrived: float) -> pb.CallReply | None:
            """Start one call, or say why not (its refusal, to be written)."""
            refused: StateError | None = None
            reason = ""
            if self._draining:
                refused, reason = _stopping(), "stopping"
            elif (
                len(running) >= limits.max_calls_per_connection
                or self._streamed_calls >= limits.max_concurrent_calls
            ):
                reason = (
                    "max_calls_per_connection"
                    if len(running) >= limits.max_calls_per_connection
                    else "max_concurrent_calls"
                )
                refused = LimitExceeded(
                    f"{len(running)} calls run on this stream and {self._streamed_calls} "
                    f"on all: not run (rule {reason!r})",
                    limit=reason,
                )
            if refused is not None:
                self._refused_streamed(request, arrived, refused, reason)
                return _failure(request.call, refused)
            # Counted from now (the task may start later) until its dispatch is
            # done, or it ends unstarted (cancelled): whichever comes first.
            self._streamed_calls += 1
            slot = [True]
            task = loop.create_task(
                self._streamed(request, arrived, context, replies, max_reply, slot)
            )
            running.add(task)
            task.add_done_callback(running.discard)
            task.add_done_callback(functools.partial(self._released, slot))
            return None

        # The requests are read by a task of ours, so that a stopping server can end
        # the stream (by cancelling the reader) instead of waiting for the client's
        # next message.
        most = limits.max_calls_per_connection
        reader = loop.create_task(_read_calls(requests, admit, replies, most))
        self._streams[reader] = running
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
        try:
            await asyncio.wait([reader])  # the client's side ends, or the server stops
            if not reader.cancelled() and reader.exception() is None and not reader.result():
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "Calls: a message that is not a CallRequest ends the stream",
                )
                return
            if running:  # the client closed its side, or the server stops: answer them
                await asyncio.gather(*running, return_exceptions=True)
            if self._draining:
                # Every call this stream started was answered (one cancelled by the
                # grace's end never gets here): what the client still waits for was
                # never read, so never run. Said in a reply to call 0 (a message is
                # awaited until written; trailers may be lost in the shutdown).
                await replies.send(_failure(0, _stopped_stream()))
        finally:
            self._streams.pop(reader, None)
            if handler is not None:
                self._handlers.discard(handler)
            reader.cancel()
            for task in running:
                task.cancel()

    def _refused(self, method: str, reason: str, session_id: str | None) -> None:
        """A call refused at admission: logged, and counted as refused."""
        logs.refused(method, reason, session_id)
        if self._metrics is not None:
            self._metrics.refused_call(method, reason)

    def _refused_streamed(
        self, request: pb.CallRequest, arrived: float, error: StateError, reason: str
    ) -> None:
        """A streamed call refused at admission: logged, counted as refused and as
        answered with the error's code."""
        field = request.WhichOneof("body") or ""
        rpc = CALL_FIELDS.get(field)
        method = rpc.name if rpc is not None else _UNKNOWN
        session_id = getattr(request, field).session_id if rpc is not None else None
        self._refused(method, reason, session_id)
        self._answered(method, _code(error), arrived)

    def _release(self, slot: list[bool]) -> None:
        """A streamed call no longer counts (once, whichever way it ended)."""
        if slot:
            slot.pop()
            self._streamed_calls -= 1

    def _released(self, slot: list[bool], _task: asyncio.Task[None]) -> None:
        self._release(slot)  # its task is done: started or not

    async def end_calls(self, grace: float | None) -> None:
        """The server is stopping: refuse new calls, unary and streamed, with our own
        "not run" (gRPC's own refusal, once it stops, reads as CANCELLED, which a
        client cannot tell from a call cut off mid-way); let those running finish
        within ``grace`` seconds (None: none), then end each stream, so a graceful
        stop does not wait out the grace for idle streams."""
        self._draining = True
        until = time.monotonic() + (grace or 0.0)
        running: list[asyncio.Future[Any]] = [
            task for calls in self._streams.values() for task in calls
        ]
        idle: asyncio.Future[Any] | None = None
        if self._unary_running:
            self._unary_idle.clear()
            idle = asyncio.ensure_future(self._unary_idle.wait())
            running.append(idle)
        if running and grace:
            await asyncio.wait(running, timeout=grace)
        if idle is not None:
            idle.cancel()
        # A streamed call still running is not cancelled here: its stream then never
        # says "not run" of it (it may have reached the store), and ends unanswered
        # when the server stops: the client settles it, or finds it unknown.
        for reader in list(self._streams):
            reader.cancel()  # its stream's handler then answers what runs, and returns
        handlers = list(self._handlers)
        # Each says, in its last reply, that the rest never ran: given a moment for it
        # even when the grace is spent (a loaded machine needs one).
        left = max(until - time.monotonic(), _LAST_WORDS)
        if handlers:
            await asyncio.wait(handlers, timeout=left)

    async def _streamed(
        self,
        request: pb.CallRequest,
        arrived: float,
        context: grpc.aio.ServicerContext[Any, Any],
        replies: Replies,
        max_reply: int,
        slot: list[bool],
    ) -> None:
        """One call of a Calls stream, through the one dispatch, its answer written
        back. It counts against ``max_concurrent_calls`` (from its creation) until its
        dispatch is done (``slot``), not while its answer waits for a client that does
        not read. Its deadline is its own (counted from its arrival), within the
        stream's."""
        call = request.call
        field = request.WhichOneof("body")
        rpc = CALL_FIELDS.get(field or "")
        method = rpc.name if rpc is not None else _UNKNOWN
        reply: pb.CallReply | bytes
        error: StateError | None = None
        try:
            if rpc is None:
                error = NotSupported(f"Calls: no call {field!r} (a newer client?); not run")
            else:
                left = context.time_remaining()
                timeout = request.timeout_seconds
                if timeout > 0:  # NaN, negative or zero: the stream's; capped at a day
                    own = max(arrived + min(timeout, 86400.0) - time.monotonic(), 0.0)
                    left = own if left is None else min(left, own)
                try:
                    expires = request.expires_unix_ms if rpc.has_request_id else 0
                    deadline = _deadline(left, expires)
                    response = await self.dispatch(rpc, getattr(request, field), deadline)
                    if isinstance(response, bytes):  # a large answer, serialized already
                        reply = call_reply_bytes(call, field, response)
                    else:
                        body: dict[str, Any] = {field: response}
                        reply = pb.CallReply(call=call, **body)
                except Exception as exc:
                    error = _as_state_error(rpc.name, exc)
        except asyncio.CancelledError:  # the stream ended under it: never answered
            self._answered(method, _CANCELLED, arrived)
            raise
        finally:
            self._release(slot)
        try:
            if error is None:
                size = len(reply) if isinstance(reply, bytes) else reply.ByteSize()
                if size > max_reply:
                    error = LimitExceeded(
                        f"Calls: the answer is {size} bytes, over the {max_reply} "
                        "this stream carries (rule 'max_message_bytes'); ask for it unary",
                        limit="max_message_bytes",
                    )
            if error is not None:
                reply = _failure(call, error)
            self._answered(method, _code(error), arrived)
            await replies.send(reply)
        except Exception as exc:  # the stream went away: nobody waits for the answer
            if not (context.cancelled() or context.done()):
                # As text: a live traceback in a kept log record would keep the
                # call's frames, and so the aio server, alive.
                logger.warning(
                    "SessionStore.Calls: call %d could not be answered: %s", call, repr(exc)
                )

    def _answered(self, method: str, code: str, arrived: float) -> None:
        """Count a call answered (when the server keeps metrics)."""
        if self._metrics is not None:
            self._metrics.answered(method, code, time.monotonic() - arrived)

    # -- the Watch stream -----------------------------------------------------------------

    async def watch(
        self, request: pb.WatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        """Stream the session's events; a waiting watcher is a suspended coroutine. A
        failure ends the stream with its status (a client resumes after one that is
        not the session's end)."""
        code = _OK
        try:
            await self._watch(request, context)
        except asyncio.CancelledError:  # the watcher went away (it unsubscribed)
            code = _CANCELLED
            raise
        except Exception as exc:
            if context.cancelled() or context.done():
                code = _CANCELLED
                return  # the watcher went away (it unsubscribed): nothing to report
            error = _as_state_error(WATCH, exc)
            code = _code(error)
            await context.abort_with_status(wire_status.grpc_status(error))  # type: ignore[attr-defined]  # not in the stubs
        finally:
            if self._metrics is not None:
                self._metrics.watch_ended(code)

    async def _watch(
        self, request: pb.WatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        events = await self._store.watch(
            request.session_id,
            list(request.patterns),
            request.start_sequence or None,
            request.incarnation or None,
            progress=request.progress,
        )
        metrics = self._metrics
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
