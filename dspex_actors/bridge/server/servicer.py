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
for its request body, its session's actor or a stream costs no thread; a read the
store answers at once (``Store.read_now``) suspends nowhere, and on the Calls stream
is answered in the turn it was read in, with no task (``reading``). A call's
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
import functools
import logging
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import Message

from dspex_actors.bridge.server import lifecycle, logs, metadata
from dspex_actors.bridge.server.metrics import WATCH, ServerMetrics
from dspex_actors.bridge.server.reading import CallsReader
from dspex_actors.bridge.server.replies import Replies, failure, stopped_stream
from dspex_actors.bridge.server.watching import write_events
from dspex_actors.bulk import BULK_ITEMS, off_loop
from dspex_actors.errors import BridgeUnavailable, LimitExceeded, NotSupported, StateError
from dspex_actors.limits import Limits
from dspex_actors.messages import Operation, ReadOperation, SessionOperation
from dspex_actors.session import MISSED, Missed
from dspex_actors.stores.base import Store
from dspex_actors.v1 import session_store_pb2 as pb
from dspex_actors.wire import codec
from dspex_actors.wire import status as wire_status
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


def _stopping() -> BridgeUnavailable:
    """A stopping server's answer to a call it will not run (the client does not
    retry it: the server is going away)."""
    return BridgeUnavailable("the SessionStore is stopping; not run", stopping=True)


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


class SessionStoreServicer:
    """The SessionStore RPCs; see proto/dspex_actors/v1/session_store.proto."""

    def __init__(self, store: Store, limits: Limits, metrics: ServerMetrics | None = None) -> None:
        self._store = store
        # (None for a store written before read_now: each of its reads is run)
        self._read_now = getattr(store, "read_now", None)
        self._limits = limits
        self._metrics = metrics
        self._limited = Limited(limits)
        self._streamed_calls = 0  # calls running on Calls streams (the loop's only)
        # Each open Calls stream's reader -> its calls running now.
        self._streams: dict[CallsReader, set[asyncio.Task[None]]] = {}
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

    def decode_now(self, rpc: Rpc, request: Any) -> Operation[Any] | None:
        """``request`` decoded into its operation within the limits, in this turn;
        None for a request so large that :meth:`dispatch` decodes it off the loop."""
        if request.ByteSize() >= _DECODE_APART:
            return None
        return rpc.decode(request, self._limited)

    def answer_now(self, rpc: Rpc, request: Any, operation: Operation[Any]) -> Message | Missed:
        """A read that scans nothing, answered in this turn from what the store holds
        (:meth:`~dspex_actors.stores.base.Store.read_now`), or MISSED: it must be
        run (a write, a session's operation, a scan, a store on an engine, a read
        that met a write in progress). A ``StateError`` raised as it is."""
        read_now = self._read_now
        if read_now is None or not isinstance(operation, ReadOperation) or operation.scans:
            return MISSED
        incarnation = (request.incarnation if rpc.has_incarnation else "") or None
        metrics = self._metrics
        started = time.perf_counter()
        try:
            result = read_now(request.session_id, operation, incarnation)
        except Exception as exc:
            if metrics is not None:
                metrics.store_call(time.perf_counter() - started, exc)
            raise
        if isinstance(result, Missed):
            return result
        if metrics is not None:
            metrics.store_call(time.perf_counter() - started)
        return rpc.answer(operation, result)

    async def dispatch(
        self,
        rpc: Rpc,
        request: Any,
        deadline: float | None,
        operation: Operation[Any] | None = None,
    ) -> Message | bytes:
        """Run one call: its request decoded into an operation (unless given decoded
        already), run on the store, its result answered (a large answer built and
        serialized off the loop, as bytes); a ``StateError`` raised as it is."""
        if operation is None:
            operation = self.decode_now(rpc, request)
        if operation is None:  # a large request: decoded off the loop
            decode = functools.partial(rpc.decode, request, self._limited)
            operation = await asyncio.get_running_loop().run_in_executor(None, decode)
        answer = self.answer_now(rpc, request, operation)
        if not isinstance(answer, Missed):
            return answer
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
                    expires = metadata.expires_ms(context) if rpc.has_request_id else 0
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
        max_reply = min(
            limits.max_message_bytes + codec.FRAMING_BYTES, metadata.client_max_reply(context)
        )
        batch = metadata.said(context, codec.CALLS_BATCH_KEY)
        replies = Replies(context, batch, max_reply, running, limits.max_calls_per_connection)
        # Say how many calls this stream runs at once (a client sends more unary),
        # and that calls coalesced in one message are read.
        await context.send_initial_metadata(
            (
                (codec.CALLS_LIMIT_KEY, str(limits.max_calls_per_connection)),
                (codec.CALLS_BATCH_KEY, "1"),
            )
        )
        if self._draining:  # opened while the server stops: nothing on it will be read
            await replies.send(failure(0, stopped_stream()))
            return

        def admit(request: pb.CallRequest, arrived: float) -> pb.CallReply | bytes | None:
            """Answer one call now (a read the store answers at once), start it, or
            say why not: the reply to write now, or None (its task answers it)."""
            refusal = self._refusal(request, arrived, len(running))
            if refusal is not None:
                return refusal
            answer, operation = self._at_once(request, arrived, max_reply)
            if answer is not None:
                return answer
            # Counted from now (the task may start later) until its dispatch is
            # done, or it ends unstarted (cancelled): whichever comes first.
            self._streamed_calls += 1
            slot = [True]
            task = loop.create_task(
                self._streamed(request, arrived, context, replies, max_reply, slot, operation)
            )
            running.add(task)
            task.add_done_callback(running.discard)
            task.add_done_callback(functools.partial(self._released, slot))
            return None

        # Read in a task of ours: a stopping server ends the stream by stopping it.
        reading = CallsReader(requests, admit, replies, limits.max_calls_per_connection)
        reader = reading.start()
        self._streams[reading] = running
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
                await replies.send(failure(0, stopped_stream()))
        finally:
            self._streams.pop(reading, None)
            if handler is not None:
                self._handlers.discard(handler)
            reader.cancel()
            for task in running:
                task.cancel()

    def _refusal(
        self, request: pb.CallRequest, arrived: float, running: int
    ) -> pb.CallReply | None:
        """The refusal of a streamed call the server will not run (it is stopping, or
        ``running`` calls run on the stream, or as many as it runs in all), or None."""
        limits = self._limits
        if self._draining:
            refused: StateError = _stopping()
            reason = "stopping"
        elif (
            running >= limits.max_calls_per_connection
            or self._streamed_calls >= limits.max_concurrent_calls
        ):
            reason = (
                "max_calls_per_connection"
                if running >= limits.max_calls_per_connection
                else "max_concurrent_calls"
            )
            refused = LimitExceeded(
                f"{running} calls run on this stream and {self._streamed_calls} "
                f"on all: not run (rule {reason!r})",
                limit=reason,
            )
        else:
            return None
        self._refused_streamed(request, arrived, refused, reason)
        return failure(request.call, refused)

    def _at_once(
        self, request: pb.CallRequest, arrived: float, max_reply: int
    ) -> tuple[pb.CallReply | bytes | None, Operation[Any] | None]:
        """A streamed call answered in this turn (a read the store answers at once,
        or a request that does not decode), or its operation for its task to run
        (None as well for one too large to decode here, or with no call known)."""
        field = request.WhichOneof("body") or ""
        rpc = CALL_FIELDS.get(field)
        if rpc is None:
            return None, None  # its task says so
        body = getattr(request, field)
        try:
            operation = self.decode_now(rpc, body)
            if operation is None:
                return None, None
            answer = self.answer_now(rpc, body, operation)
        except Exception as exc:
            error = _as_state_error(rpc.name, exc)
            return self._reply(
                request.call, field, rpc.name, None, error, arrived, max_reply
            ), None
        if isinstance(answer, Missed):
            return None, operation
        return self._reply(request.call, field, rpc.name, answer, None, arrived, max_reply), None

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
        for reading in list(self._streams):
            reading.stop()  # its stream's handler then answers what runs, and returns
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
        operation: Operation[Any] | None,
    ) -> None:
        """One call of a Calls stream (its ``operation`` decoded already, unless its
        request is large), through the one dispatch, its answer written back. It
        counts against ``max_concurrent_calls`` (from its creation) until its
        dispatch is done (``slot``), not while its answer waits for a client that
        does not read. Its deadline is its own (counted from its arrival), within the
        stream's."""
        call = request.call
        field = request.WhichOneof("body") or ""
        rpc = CALL_FIELDS.get(field)
        method = rpc.name if rpc is not None else _UNKNOWN
        response: Message | bytes | None = None
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
                    body = getattr(request, field)
                    response = await self.dispatch(rpc, body, deadline, operation)
                except Exception as exc:
                    error = _as_state_error(rpc.name, exc)
        except asyncio.CancelledError:  # the stream ended under it: never answered
            self._answered(method, _CANCELLED, arrived)
            raise
        finally:
            self._release(slot)
        try:
            reply = self._reply(call, field, method, response, error, arrived, max_reply)
            await replies.send(reply, ours=1)
        except Exception as exc:  # the stream went away: nobody waits for the answer
            if not (context.cancelled() or context.done()):
                # As text: a live traceback in a kept log record would keep the
                # call's frames, and so the aio server, alive.
                logger.warning(
                    "SessionStore.Calls: call %d could not be answered: %s", call, repr(exc)
                )

    def _reply(
        self,
        call: int,
        field: str,
        method: str,
        response: Message | bytes | None,
        error: StateError | None,
        arrived: float,
        max_reply: int,
    ) -> pb.CallReply | bytes:
        """A streamed call's reply, counted as answered: its ``response`` in its
        field, or its ``error`` (LimitExceeded for an answer larger than the stream
        carries)."""
        if error is None:
            reply: pb.CallReply | bytes
            if isinstance(response, bytes):  # a large answer, serialized already
                reply = call_reply_bytes(call, field, response)
            else:
                body: dict[str, Any] = {field: response}
                reply = pb.CallReply(call=call, **body)
            size = len(reply) if isinstance(reply, bytes) else reply.ByteSize()
            if size <= max_reply:
                self._answered(method, _OK, arrived)
                return reply
            error = LimitExceeded(
                f"Calls: the answer is {size} bytes, over the {max_reply} "
                "this stream carries (rule 'max_message_bytes'); ask for it unary",
                limit="max_message_bytes",
            )
        self._answered(method, _code(error), arrived)
        return failure(call, error)

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
            await write_events(self._store, self._metrics, request, context)
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
