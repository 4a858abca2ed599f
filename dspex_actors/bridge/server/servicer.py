"""The SessionStore RPCs: protobuf + msgpack in, one typed operation on a store, out.

This module only translates. Each RPC decodes its request within the limits,
builds the :mod:`dspex_actors.messages` operation it stands for, and awaits the
store (:mod:`dspex_actors.stores`), which validates, versions and applies it. A
``StateError`` becomes gRPC's rich status in one place (:func:`_rpc`, with
:func:`~dspex_actors.wire.wire_status.error_status`).

Handlers are coroutines on the server's event loop (``grpc.aio``): a call waiting
for its request body, its session's actor or a stream costs no thread. A write's
deadline travels to the store, shortened by a margin so that "not started, not
applied" reaches the client before its own deadline turns the outcome unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError
from grpc_status import rpc_status

from dspex_actors import failpoints
from dspex_actors.bulk import BULK_ITEMS, gc_paused
from dspex_actors.errors import (
    BridgeUnavailable,
    LimitExceeded,
    NotSupported,
    StateError,
    ValidationError,
)
from dspex_actors.exports import ExportColumns, columns_of
from dspex_actors.limits import Limits
from dspex_actors.messages import (
    Delete,
    Digest,
    Export,
    ExportCols,
    GetMany,
    GetRecord,
    GetVersioned,
    Import,
    List,
    ReadOperation,
    Register,
    SetValue,
    Update,
    WriteOperation,
)
from dspex_actors.records import VariableRecord, check_pattern
from dspex_actors.stores.base import Store
from dspex_actors.streaming import Event
from dspex_actors.v1 import session_store_pb2 as pb
from dspex_actors.v1 import session_store_pb2_grpc as pb_grpc
from dspex_actors.wire import codec
from dspex_actors.wire import status as wire_status
from dspex_actors.wire.columns import columns_from_message, columns_to_message

__all__ = ["SessionStoreServicer"]

logger = logging.getLogger(__name__)

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")
_R = TypeVar("_R")
_Handler = Callable[[Any, _Request, grpc.aio.ServicerContext[Any, Any]], Awaitable[_Response]]

_DEADLINE_MARGIN = 0.2
"""At most this share of the time left (and at most _MAX_MARGIN seconds) is kept
back, so the store's "not applied" beats the client's own deadline."""
_MAX_MARGIN = 0.25


def _rpc(method: _Handler[_Request, _Response]) -> _Handler[_Request, _Response]:
    """Turn a StateError raised by a handler into its rich gRPC status."""

    @functools.wraps(method)
    async def call(
        self: Any, request: _Request, context: grpc.aio.ServicerContext[Any, Any]
    ) -> _Response:
        try:
            return await method(self, request, context)
        except StateError as exc:
            error: StateError = exc
        except Exception as exc:
            # The traceback as text: a live one would keep the call's frames, and so
            # the aio server, alive for as long as the log record is kept.
            logger.error(
                "SessionStore.%s failed:\n%s",
                method.__name__,
                "".join(traceback.format_exception(exc)),
            )
            error = StateError(f"internal error in {method.__name__}: {type(exc).__name__}: {exc}")
        status = rpc_status.to_status(wire_status.error_status(error))
        await context.abort_with_status(status)  # type: ignore[attr-defined]  # not in the stubs
        raise AssertionError("abort_with_status returned")  # it always raises

    return call


def _deadline(context: grpc.aio.ServicerContext[Any, Any]) -> float | None:
    """The caller's deadline on the monotonic clock, less the margin (None: none set)."""
    left = context.time_remaining()
    if left is None:
        return None
    return time.monotonic() + left - min(left * _DEADLINE_MARGIN, _MAX_MARGIN)


_STREAMED = {
    "get_variable": "GetVariable",
    "set_variable": "SetVariable",
    "get_variables": "GetVariables",
    "update_variables": "UpdateVariables",
    "register_variable": "RegisterVariable",
    "delete_variable": "DeleteVariable",
    "list_variables": "ListVariables",
    "heartbeat": "Heartbeat",
    "get_session": "GetSession",
}
"""A Calls request's body field -> the unary RPC that runs it."""


class _Aborted(Exception):
    """A streamed call's handler failed: ``status`` is its serialized google.rpc.Status."""

    def __init__(self, status: bytes) -> None:
        super().__init__("aborted")
        self.status = status


class _CallContext:
    """What a unary handler asks of its context, for one call of a Calls stream: its
    own deadline (the request's timeout, within the stream's), and an abort that
    hands the status back instead of ending the stream."""

    def __init__(
        self,
        request: pb.CallRequest,
        arrived: float,
        stream: grpc.aio.ServicerContext[Any, Any],
    ):
        self._stream = stream
        timeout = request.timeout_seconds
        # NaN, negative or zero: no deadline of its own (the stream's); capped at a day.
        self._deadline = arrived + min(timeout, 86400.0) if timeout > 0 else None

    def time_remaining(self) -> float | None:
        left = self._stream.time_remaining()
        if self._deadline is not None:
            own = max(self._deadline - time.monotonic(), 0.0)
            left = own if left is None else min(left, own)
        return left

    async def abort_with_status(self, status: grpc.Status) -> None:
        for key, value in status.trailing_metadata:
            if key == wire_status.STATUS_DETAILS_KEY:
                raise _Aborted(value if isinstance(value, bytes) else value.encode())
        # Not from _rpc (which always sends the details): say so, never an empty error.
        internal = StateError(f"internal error: a call ended {status.code} without details")
        raise _Aborted(wire_status.error_status(internal).SerializeToString())


def _client_max_reply(context: grpc.aio.ServicerContext[Any, Any]) -> int:
    """The largest reply the client said it can receive (unbounded if it did not say)."""
    for key, value in context.invocation_metadata() or ():
        if key == codec.CALLS_MAX_REPLY_KEY:
            with contextlib.suppress(ValueError, TypeError):
                return int(value)
    return 1 << 62


_END = object()
"""The last item of a Calls stream's inbox: its requests end (or the server stops)."""


async def _read_into(
    requests: AsyncIterator[pb.CallRequest], inbox: asyncio.Queue[object]
) -> None:
    """Put a Calls stream's requests in its inbox, each with when it arrived (its
    deadline counts from then), None for one that is not protobuf, then _END, also
    when cancelled."""
    try:
        async for request in requests:
            await inbox.put((request, time.monotonic()))
    except DecodeError:
        await inbox.put(None)
    finally:
        while True:  # room for _END, even in a full inbox (its handler is stuck
            try:  # writing to a client that reads nothing; that call goes unanswered)
                inbox.put_nowait(_END)
                break
            except asyncio.QueueFull:
                inbox.get_nowait()


def _failure(call: int, error: StateError) -> pb.CallReply:
    """The reply refusing a streamed call with ``error``."""
    status = wire_status.error_status(error)
    return pb.CallReply(call=call, error=status.SerializeToString())


async def _send(
    context: grpc.aio.ServicerContext[Any, Any], writing: asyncio.Lock, reply: pb.CallReply
) -> None:
    """Write one reply on a Calls stream (one write at a time: gRPC requires it)."""
    async with writing:
        await context.write(reply)


def variable_message(record: VariableRecord) -> pb.Variable:
    """One record on the wire (ListVariables, GetVariable with ``full``)."""
    return pb.Variable(
        id=record.id,
        name=record.name,
        type=record.type,
        value=codec.pack(record.value),
        constraints=codec.pack(record.constraints),
        metadata=codec.pack(record.metadata),
        version=record.version,
        created_at=record.created_at,
        last_updated_at=record.last_updated_at,
    )


_KINDS = {
    "registered": pb.VariableEvent.KIND_REGISTERED,
    "updated": pb.VariableEvent.KIND_UPDATED,
    "deleted": pb.VariableEvent.KIND_DELETED,
    "overflow": pb.VariableEvent.KIND_OVERFLOW,
    "closed": pb.VariableEvent.KIND_CLOSED,
}


def event_message(event: Event) -> pb.VariableEvent:
    """One change event on the wire."""
    return pb.VariableEvent(
        kind=_KINDS[event.kind],
        session_id=event.session_id,
        var_id=event.variable_id or "",
        name=event.name or "",
        value=codec.pack(event.value) if event.kind in ("registered", "updated") else b"",
        version=event.version or 0,
        metadata=codec.pack_map(event.metadata),
        timestamp=event.timestamp or 0.0,
        sequence=event.sequence,
    )


class SessionStoreServicer(pb_grpc.SessionStoreServicer):
    """The SessionStore RPCs; see proto/dspex_actors/v1/session_store.proto."""

    def __init__(self, store: Store, limits: Limits) -> None:
        self._store = store
        self._limits = limits
        self._streamed_calls = 0  # calls running on Calls streams (the loop's only)
        # Each open Calls stream's handler task -> its calls running now.
        self._streams: dict[asyncio.Task[Any], set[asyncio.Task[None]]] = {}
        self._draining = False  # the server is stopping: no new streamed call runs

    # -- decoding within the limits --------------------------------------------------

    def _value(self, data: bytes, variable: str) -> Any:
        return codec.unpack(
            data, max_bytes=self._limits.max_value_bytes, what="value", variable=variable
        )

    def _map(self, data: bytes, what: str, variable: str | None = None) -> dict[str, Any] | None:
        return codec.unpack_map(
            data,
            max_bytes=self._limits.max_metadata_bytes,
            what=what,
            variable=variable,
            limit="max_metadata_bytes",
        )

    def _batch(self, data: bytes, what: str) -> Any:
        return codec.unpack(
            data,
            max_bytes=self._limits.max_message_bytes,
            max_item_bytes=self._limits.max_value_bytes,
            what=what,
            limit="max_message_bytes",
        )

    async def _run(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        session_id: str,
        operation: ReadOperation[_R] | WriteOperation[_R],
        request_id: str = "",
        incarnation: str = "",
    ) -> _R:
        return await self._store.run(
            session_id,
            operation,
            request_id=request_id or None,
            deadline=_deadline(context),
            incarnation=incarnation or None,
        )

    # -- sessions ---------------------------------------------------------------------

    @_rpc
    async def OpenSession(  # noqa: N802 - the proto's RPC name
        self, request: pb.OpenSessionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.OpenSessionResponse:
        opened = await self._store.open(
            request.session_id or None,
            create=request.create_if_missing,
            metadata=self._map(request.metadata, "metadata", "<session>"),
            pending=request.pending,
            request_id=request.request_id or None,
        )
        return pb.OpenSessionResponse(
            session_id=opened.session_id,
            created=opened.created,
            incarnation=opened.incarnation,
            ttl_seconds=opened.ttl_seconds,
            store=self._store.kind,
            max_calls_per_connection=self._limits.max_calls_per_connection,
        )

    @_rpc
    async def CommitSession(  # noqa: N802 - the proto's RPC name
        self, request: pb.CommitSessionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CommitSessionResponse:
        await self._store.commit(request.session_id, request.incarnation)
        return pb.CommitSessionResponse()

    @_rpc
    async def CloseSession(  # noqa: N802 - the proto's RPC name
        self, request: pb.CloseSessionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CloseSessionResponse:
        await self._store.close(request.session_id, request.incarnation or None)
        return pb.CloseSessionResponse()

    @_rpc
    async def GetSession(  # noqa: N802 - the proto's RPC name
        self, request: pb.GetSessionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.SessionInfo:
        info = await self._store.info(request.session_id)
        return pb.SessionInfo(
            session_id=info.session_id,
            variable_count=info.variable_count,
            created_at=info.created_at,
            last_active_at=info.last_active_at,
            ttl_seconds=info.ttl_seconds,
            metadata=codec.pack_map(info.metadata),
            incarnation=info.incarnation,
            next_sequence=info.next_sequence,
        )

    @_rpc
    async def Heartbeat(  # noqa: N802 - the proto's RPC name
        self, request: pb.HeartbeatRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.HeartbeatResponse:
        return pb.HeartbeatResponse(expires_at=await self._store.heartbeat(request.session_id))

    # -- variables ----------------------------------------------------------------------

    @_rpc
    async def RegisterVariable(  # noqa: N802 - the proto's RPC name
        self, request: pb.RegisterVariableRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RegisterVariableResponse:
        name = request.name
        operation = Register(
            name,
            request.type,
            self._value(request.initial_value, name),
            self._map(request.constraints, "constraints", name),
            self._map(request.metadata, "metadata", name),
            request.description if request.HasField("description") else None,
        )
        var_id = await self._run(
            context, request.session_id, operation, request.request_id, request.incarnation
        )
        return pb.RegisterVariableResponse(var_id=var_id)

    @_rpc
    async def GetVariable(  # noqa: N802 - the proto's RPC name
        self, request: pb.GetVariableRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetVariableResponse:
        if request.full:
            record = await self._run(context, request.session_id, GetRecord(request.identifier))
            return pb.GetVariableResponse(
                value=codec.pack(record.value),
                version=record.version,
                record=variable_message(record),
            )
        value, version = await self._run(
            context, request.session_id, GetVersioned(request.identifier)
        )
        return pb.GetVariableResponse(value=codec.pack(value), version=version)

    @_rpc
    async def SetVariable(  # noqa: N802 - the proto's RPC name
        self, request: pb.SetVariableRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.SetVariableResponse:
        identifier = request.identifier
        operation = SetValue(
            identifier,
            self._value(request.value, identifier),
            self._map(request.metadata, "metadata", identifier),
            request.expected_version if request.HasField("expected_version") else None,
        )
        version = await self._run(
            context, request.session_id, operation, request.request_id, request.incarnation
        )
        return pb.SetVariableResponse(version=version)

    @_rpc
    async def GetVariables(  # noqa: N802 - the proto's RPC name
        self, request: pb.GetVariablesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetVariablesResponse:
        values = await self._run(context, request.session_id, GetMany(list(request.identifiers)))
        return pb.GetVariablesResponse(values=codec.pack(values))

    @_rpc
    async def UpdateVariables(  # noqa: N802 - the proto's RPC name
        self, request: pb.UpdateVariablesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.UpdateVariablesResponse:
        updates = self._batch(request.updates, "updates")
        if not isinstance(updates, dict):
            raise ValidationError(
                f"updates must be a msgpack map (rule 'type', value {type(updates).__name__})",
                rule="type",
                value=type(updates).__name__,
            )
        operation = Update(updates, self._map(request.metadata, "metadata", "<batch>"))
        await self._run(
            context, request.session_id, operation, request.request_id, request.incarnation
        )
        return pb.UpdateVariablesResponse()

    @_rpc
    async def ListVariables(  # noqa: N802 - the proto's RPC name
        self, request: pb.ListVariablesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListVariablesResponse:
        records = await self._run(
            context, request.session_id, List(check_pattern(request.pattern))
        )
        return pb.ListVariablesResponse(
            variables=[variable_message(VariableRecord.from_dict(r)) for r in records]
        )

    @_rpc
    async def DeleteVariable(  # noqa: N802 - the proto's RPC name
        self, request: pb.DeleteVariableRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DeleteVariableResponse:
        operation = Delete(request.identifier)
        await self._run(
            context, request.session_id, operation, request.request_id, request.incarnation
        )
        return pb.DeleteVariableResponse()

    @_rpc
    async def ExportSession(  # noqa: N802 - the proto's RPC name
        self, request: pb.ExportSessionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ExportSessionResponse:
        if request.columnar:
            columns = await self._run(context, request.session_id, ExportCols())
            return pb.ExportSessionResponse(columns=columns_to_message(columns))
        exported = await self._run(context, request.session_id, Export())
        return pb.ExportSessionResponse(state=codec.pack(exported))

    @_rpc
    async def ImportSession(  # noqa: N802 - the proto's RPC name
        self, request: pb.ImportSessionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ImportSessionResponse:
        # A large import decodes in the executor, so the loop keeps serving others.
        size = request.ByteSize()
        decode = functools.partial(self._imported, request)
        imported = (
            await asyncio.get_running_loop().run_in_executor(None, decode)
            if size >= BULK_ITEMS * 100
            else decode()
        )
        operation = Import(imported, request.continue_sequence or None)
        await self._run(
            context, request.session_id, operation, request.request_id, request.incarnation
        )
        digest = (
            await self._run(context, request.session_id, Digest()) if request.want_digest else b""
        )
        return pb.ImportSessionResponse(count=imported.variable_count, digest=digest)

    def _imported(self, request: pb.ImportSessionRequest) -> ExportColumns:
        """The columns an ImportSession carries, decoded within the limits."""
        if request.WhichOneof("form") == "columns":
            count = len(request.columns.ids)
            with gc_paused(count >= BULK_ITEMS):
                return columns_from_message(
                    request.columns,
                    max_bytes=self._limits.max_message_bytes,
                    max_item_bytes=self._limits.max_value_bytes,
                )
        with gc_paused(len(request.state) >= BULK_ITEMS * 1000):
            exported = self._batch(request.state, "exported state")
        return columns_of(exported)

    async def Calls(  # noqa: N802 - the proto's RPC name
        self,
        requests: AsyncIterator[pb.CallRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        """Many calls on one stream, each run as its unary RPC and answered when done
        (in any order). Bounded: per stream by ``max_calls_per_connection``, in all by
        ``max_concurrent_calls``; a call past either is answered LimitExceeded, not run."""
        writing = asyncio.Lock()
        running: set[asyncio.Task[None]] = set()
        limits = self._limits
        # The requests are read by a task of ours into a bounded inbox, so that a
        # stopping server can end the stream (by stopping the reader, which then
        # puts _END) instead of waiting for the client's next message.
        inbox: asyncio.Queue[object] = asyncio.Queue(limits.max_calls_per_connection)
        loop = asyncio.get_running_loop()
        max_reply = min(limits.max_message_bytes + codec.FRAMING_BYTES, _client_max_reply(context))
        # Say how many calls this stream runs at once: a client sends more unary.
        await context.send_initial_metadata(
            ((codec.CALLS_LIMIT_KEY, str(limits.max_calls_per_connection)),)
        )
        reader = loop.create_task(_read_into(requests, inbox))
        self._streams[reader] = running
        try:
            while (item := await inbox.get()) is not _END:
                request, arrived = item if isinstance(item, tuple) else (None, 0.0)
                if not isinstance(request, pb.CallRequest):
                    await context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        "Calls: a message that is not a CallRequest ends the stream",
                    )
                    return
                refused: StateError | None = None
                if self._draining:
                    refused = BridgeUnavailable("the SessionStore is stopping; not run")
                elif (
                    len(running) >= limits.max_calls_per_connection
                    or self._streamed_calls >= limits.max_concurrent_calls
                ):
                    refused = LimitExceeded(
                        f"{len(running)} calls run on this stream and {self._streamed_calls} "
                        "on all: not run (rule 'max_concurrent_calls')",
                        limit="max_concurrent_calls",
                    )
                if refused is not None:
                    await _send(context, writing, _failure(request.call, refused))
                    continue
                # Counted from now (the task may start later) until its handler is
                # done, or it ends unstarted (cancelled): whichever comes first.
                self._streamed_calls += 1
                slot = [True]
                task = loop.create_task(
                    self._streamed(request, arrived, context, writing, max_reply, slot)
                )
                running.add(task)
                task.add_done_callback(running.discard)
                task.add_done_callback(functools.partial(self._released, slot))
            if running:  # the client closed its side, or the server stops: answer them
                await asyncio.gather(*running, return_exceptions=True)
        finally:
            self._streams.pop(reader, None)
            reader.cancel()
            for task in running:
                task.cancel()

    def _release(self, slot: list[bool]) -> None:
        """A streamed call no longer counts (once, whichever way it ended)."""
        if slot:
            slot.pop()
            self._streamed_calls -= 1

    def _released(self, slot: list[bool], _task: asyncio.Task[None]) -> None:
        self._release(slot)  # its task is done: started or not

    async def end_calls(self, grace: float | None) -> None:
        """The server is stopping: refuse new streamed calls (not run), let those
        running finish within ``grace`` seconds (None: none), then end each stream,
        so a graceful stop does not wait out the grace for idle streams."""
        self._draining = True
        running = [task for calls in self._streams.values() for task in calls]
        if running and grace:
            await asyncio.wait(running, timeout=grace)
        for reader in list(self._streams):
            reader.cancel()  # it puts _END: its stream's handler answers what runs, returns

    async def _streamed(
        self,
        request: pb.CallRequest,
        arrived: float,
        context: grpc.aio.ServicerContext[Any, Any],
        writing: asyncio.Lock,
        max_reply: int,
        slot: list[bool],
    ) -> None:
        """One call of a Calls stream: its unary handler, its answer written back. The
        call is counted against ``max_concurrent_calls`` (from its creation) until its
        handler is done (``slot``), not while its answer waits for a client that does
        not read."""
        error: StateError | None = None
        reply: pb.CallReply | None = None
        try:
            kind = request.WhichOneof("body")
            handler = getattr(self, _STREAMED.get(kind or "", ""), None)
            if kind is None or handler is None:
                error = NotSupported(f"Calls: no call {kind!r} (a newer client?); not run")
            else:
                try:
                    call_context = _CallContext(request, arrived, context)
                    body = await handler(getattr(request, kind), call_context)
                    reply = pb.CallReply(call=request.call, **{kind: body})
                except _Aborted as aborted:
                    reply = pb.CallReply(call=request.call, error=aborted.status)
        finally:
            self._release(slot)
        try:
            if reply is not None and reply.ByteSize() > max_reply:
                error = LimitExceeded(
                    f"Calls: the answer is {reply.ByteSize()} bytes, over the {max_reply} "
                    "this stream carries (rule 'max_message_bytes'); ask for it unary",
                    limit="max_message_bytes",
                )
            if error is not None:
                reply = _failure(request.call, error)
            assert reply is not None
            await _send(context, writing, reply)
        except Exception:  # the stream went away: nobody waits for the answer
            if not (context.cancelled() or context.done()):
                logger.exception("SessionStore.Calls: a call could not be answered")

    @_rpc
    async def Watch(  # noqa: N802 - the proto's RPC name
        self, request: pb.WatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        """Stream the session's events; a waiting watcher is a suspended coroutine."""
        events = await self._store.watch(
            request.session_id, list(request.patterns), request.start_sequence or None
        )
        # aclosing: the store's watch ends now, not when it is collected.
        async with contextlib.aclosing(events):
            await context.send_initial_metadata(())  # the stream is up: a client can tell
            async for event in events:
                await failpoints.reached("watch.event")
                try:
                    await context.write(event_message(event))
                except Exception:
                    if context.cancelled() or context.done():
                        return  # the watcher went away (it unsubscribed): nothing to report
                    raise
