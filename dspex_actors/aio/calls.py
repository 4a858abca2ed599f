"""Many calls over one stream, for asyncio: the ``Calls`` RPC on ``grpc.aio``.

The asyncio twin of :class:`~dspex_actors.bridge.client.calls.CallStream`, with its
rules: each call is numbered and carries its own deadline, its answer is exactly the
unary RPC's; a request is written only after the server's headers came (so a stream
that fails before them sent nothing: ``maybe_sent=False``); a stream that breaks
leaves its sent calls ``maybe_sent=True`` (retried with their request ids); a call
past the stream's capacity, or a server without ``Calls``, goes unary
(:class:`~dspex_actors.bridge.client.calls.GoUnary`). Calls ready together are
written as one message (``more``), and answers may come back so
(:mod:`dspex_actors.wire.coalesce`).

One writer task and one reader task per open stream, on the handle's loop; the
outbox is bounded (:data:`OUTBOX`): a call finding it full goes unary.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from typing import Any

import grpc
import grpc.aio

from dspex_actors.bridge.client.calls import (
    CALLS_METHOD,
    GoUnary,
    Unanswered,
    ended_by,
    not_sent,
)
from dspex_actors.errors import BridgeUnavailable
from dspex_actors.v1 import session_store_pb2 as pb
from dspex_actors.wire import codec
from dspex_actors.wire import status as wire_status
from dspex_actors.wire.coalesce import coalesced

__all__ = ["OUTBOX", "AsyncCallStream"]

logger = logging.getLogger(__name__)

OUTBOX = 1024
"""Requests waiting to be written on one stream; a call finding it full goes unary."""
_FIRST_CAPACITY = 8
_BATCH_CALLS = 64
_BATCH_BYTES = 64 * 1024
"""Bytes of calls one message carries at most (a larger call goes alone): far below
any server's message limit."""
_ENVELOPE = 64


class _Waiter:
    __slots__ = ("answer", "flag", "sent")

    def __init__(self, answer: asyncio.Future[pb.CallReply], flag: list[bool] | None) -> None:
        self.answer = answer
        self.sent = False
        self.flag = flag  # the caller's "sent" flag, set with ours

    def mark_sent(self) -> None:
        self.sent = True
        if self.flag is not None:
            self.flag[0] = True


def _expire(answer: asyncio.Future[pb.CallReply]) -> None:
    """A call's deadline passed: its answer is a timeout (unless it came)."""
    if not answer.done():
        answer.set_exception(TimeoutError())


class AsyncCallStream:
    """One ``Calls`` stream of an asyncio handle, opened at first use and after a break."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        metadata: Any,
        max_message_bytes: int,
        target: str,
        coalesce: bool = True,
    ) -> None:
        self._channel = channel
        self._target = target
        self._coalesce = coalesce
        self._metadata = (
            *(metadata or ()),
            (codec.CALLS_MAX_REPLY_KEY, str(max_message_bytes)),
            *(((codec.CALLS_BATCH_KEY, "1"),) if coalesce else ()),
        )
        self.max_request = max_message_bytes - _ENVELOPE
        self._capacity = _FIRST_CAPACITY
        self._ids = itertools.count(1)
        self._waiting: dict[int, _Waiter] = {}
        self._outbox: asyncio.Queue[pb.CallRequest] | None = None
        self._task: asyncio.Task[None] | None = None
        self.unsupported = False
        self._closed = False
        self.coalesced = 0
        """Calls sent in a message with others."""

    async def call(
        self,
        field: str,
        request: Any,
        timeout: float,
        expires_ms: int = 0,
        sent: list[bool] | None = None,
    ) -> Any:
        """Send one call and await its answer within ``timeout`` (see the module
        docstring): the unary RPC's response, or the server's ``StateError``;
        :class:`Unanswered`, or :class:`GoUnary` (nothing sent). ``sent[0]`` is set
        once the request was written."""
        if self._closed:
            raise Unanswered(self._unavailable("the channel is closed"), maybe_sent=False)
        if len(self._waiting) >= self._capacity:
            raise GoUnary
        outbox = self._outbox if self._outbox is not None else self._open()
        number = next(self._ids)
        waiter = _Waiter(asyncio.get_running_loop().create_future(), sent)
        message = pb.CallRequest(
            call=number, timeout_seconds=timeout, expires_unix_ms=expires_ms, **{field: request}
        )
        self._waiting[number] = waiter
        try:
            outbox.put_nowait(message)
        except asyncio.QueueFull:
            del self._waiting[number]
            raise GoUnary from None
        # The deadline fails the answer itself (cheaper than asyncio.timeout and a
        # shield, which cost a lone call a loop turn each); a cancelled caller
        # cancels only its own answer, which the reader then skips.
        timer = asyncio.get_running_loop().call_later(timeout, _expire, waiter.answer)
        try:
            reply = await waiter.answer
        except TimeoutError:
            self._waiting.pop(number, None)  # never written from now on
            why = (
                f"no reply within the deadline ({timeout:.3g}s)"
                if waiter.sent
                else f"the Calls stream was not up within the deadline ({timeout:.3g}s)"
            )
            error = self._unavailable(why, status=grpc.StatusCode.DEADLINE_EXCEEDED.name)
            raise Unanswered(error, maybe_sent=waiter.sent) from None
        except asyncio.CancelledError:
            self._waiting.pop(number, None)  # never written from now on
            raise
        finally:
            timer.cancel()
        if reply.error:
            raise wire_status.error_of_status(reply.error, self._target)
        return getattr(reply, field)

    def _unavailable(self, why: str, **details: Any) -> BridgeUnavailable:
        return BridgeUnavailable(f"SessionStore at {self._target}: {why}", **details)

    def _open(self) -> asyncio.Queue[pb.CallRequest]:
        outbox: asyncio.Queue[pb.CallRequest] = asyncio.Queue(OUTBOX)
        self._outbox = outbox
        self._task = asyncio.get_running_loop().create_task(self._run(outbox))
        return outbox

    async def _run(self, outbox: asyncio.Queue[pb.CallRequest]) -> None:
        """Open the stream, write once the server's headers came, read every answer;
        when it ends, fail what still waits (sent or not, as the module says)."""
        stream = self._channel.stream_stream(
            CALLS_METHOD,
            request_serializer=pb.CallRequest.SerializeToString,
            response_deserializer=pb.CallReply.FromString,
        )(None, metadata=self._metadata)  # written with stream.write
        failure: Exception = Unanswered(
            self._unavailable("the Calls stream ended before the reply"), maybe_sent=True
        )
        writer: asyncio.Task[None] | None = None
        up = False
        try:
            headers = await stream.initial_metadata()
            batches = False
            for key, value in headers or ():
                if key == codec.CALLS_LIMIT_KEY:
                    up = True
                    with contextlib.suppress(ValueError):
                        self._capacity = max(1, int(value))
                elif key == codec.CALLS_BATCH_KEY and value == "1":
                    batches = self._coalesce
            writer = asyncio.get_running_loop().create_task(self._write(stream, outbox, batches))
            failure = await self._read(stream, failure)
        except grpc.aio.AioRpcError as exc:
            failure = ended_by(exc, up, failure, self._target)
            self.unsupported = isinstance(failure, GoUnary)
        except asyncio.CancelledError:
            failure = Unanswered(self._unavailable("the channel is closed"), maybe_sent=True)
        except Exception as exc:  # any end of the stream fails its calls
            logger.warning("the asyncio Calls stream ended: %r", exc)
        finally:
            if writer is not None:
                writer.cancel()
            stream.cancel()
            if self._outbox is outbox:
                self._outbox = None
            waiting = list(self._waiting.values())
            self._waiting.clear()
            for waiter in waiting:
                if not waiter.answer.done():
                    waiter.answer.set_exception(failure if waiter.sent else not_sent(failure))

    async def _read(self, stream: Any, failure: Exception) -> Exception:
        """Hand each answer to its caller until the stream ends; what the calls
        still waiting get then (a stopping server says none of them was run)."""
        async for message in stream:
            for reply in (message, *message.more) if message.more else (message,):
                if reply.call == 0:
                    error = wire_status.error_of_status(reply.error, self._target)
                    if error.details.get("not_run"):
                        failure = Unanswered(error, maybe_sent=False)
                    continue
                waiter = self._waiting.pop(reply.call, None)
                if waiter is not None and not waiter.answer.done():
                    waiter.answer.set_result(reply)
        return failure

    async def _write(
        self, stream: Any, outbox: asyncio.Queue[pb.CallRequest], batches: bool
    ) -> None:
        """Write the calls still waited for, those ready together in one message."""
        while True:
            ready = [await outbox.get()]
            size = ready[0].ByteSize()
            while batches and len(ready) < _BATCH_CALLS and size < _BATCH_BYTES:
                if outbox.empty():
                    break
                ready.append(outbox.get_nowait())
                size += ready[-1].ByteSize()
            sent = []
            # (only more waiting than the server runs can put one past it)
            crowded = len(self._waiting) > self._capacity
            in_flight = sum(w.sent for w in self._waiting.values()) if crowded else 0
            for request in ready:
                waiter = self._waiting.get(request.call)
                if waiter is None:
                    continue  # its caller gave up: never sent now
                if crowded and in_flight >= self._capacity:  # past what it runs: go unary
                    del self._waiting[request.call]
                    if not waiter.answer.done():
                        waiter.answer.set_exception(GoUnary())
                    continue
                waiter.mark_sent()
                in_flight += 1
                sent.append(request)
            for message in coalesced(sent, _BATCH_BYTES):
                if message.more:
                    self.coalesced += len(message.more) + 1
                await stream.write(message)

    async def close(self) -> None:
        """End the stream and its tasks; idempotent."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
