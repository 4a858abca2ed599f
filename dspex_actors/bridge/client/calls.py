"""Many calls over one stream: the client's side of the SessionStore's ``Calls`` RPC.

A unary gRPC call in Python costs a new HTTP/2 stream, its setup and teardown, on
both sides; a request and its reply on a stream that stays open cost about half
(measured on the same machine, see the README). :class:`CallStream` keeps one
``Calls`` stream per channel and token, shared by every handle on it: a call puts
its request (numbered) in the stream's outbox and waits for the reply with
its number, which the stream's reader thread hands over; calls from many threads
share the stream and are answered in any order.

A streamed call returns its reply's body, the unary RPC's response; the server's
error answer is raised as the ``StateError`` it stands for
(:func:`~dspex_actors.wire.status.error_of_status`), exactly as a unary call's
status would be. A stream that breaks leaves its calls :class:`Unanswered` (a write
may have been applied: the retry carries the same request id, so the server
applies it once); the next call opens a new stream. :class:`GoUnary` says a call
was not sent at all: the server has no ``Calls`` (remembered: every call goes unary
from then on), the stream has as many calls in flight as the server runs at once,
or the request is too large for it.

Whether an unanswered call may have reached the server is known per call, soundly:
a request is handed to gRPC only once the server's headers have come (our server
sends them before it reads a request), and only while its caller still waits for
it. gRPC takes a stream's first request at once, before any connection exists
(measured: a stream to a port where nothing listens had taken it when it failed),
so a request it holds may or may not have left; one still in the outbox certainly
has not. A stream that fails before the server's headers (connection refused, DNS,
TLS, a closed channel) therefore sent nothing, and its calls are ``maybe_sent=False``
(not applied); a call whose request gRPC took is ``maybe_sent=True`` whatever
happens after. The price: a new stream's first calls wait one round trip for the
headers.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import grpc.aio

from dspex_actors.errors import BridgeUnavailable, StateError
from dspex_actors.v1 import session_store_pb2 as pb
from dspex_actors.wire import codec
from dspex_actors.wire import status as wire_status
from dspex_actors.wire.coalesce import coalesced
from dspex_actors.wire.forms import SERVICE
from dspex_actors.wire.operations import PROMPT_FIELDS

__all__ = ["CALLS_METHOD", "CallStream", "GoUnary", "Unanswered", "ended_by", "not_sent"]

logger = logging.getLogger(__name__)

CALLS_METHOD = f"/{SERVICE}/Calls"

_FIRST_CAPACITY = 8
"""Calls in flight on a stream before the server has said how many it runs at once."""
_ENVELOPE = 64
"""Bytes a CallRequest adds around the unary request (its number, timeout, tag)."""
_BATCH_CALLS = 64
"""Calls one message carries at most, coalesced (see :meth:`CallStream._open`)."""
_BATCH_BYTES = 64 * 1024
"""Bytes of calls one message takes before it carries no more: far below any limit."""
_HOLD_FIRST = 0.001
"""Seconds a message of reads is taken to wait for its answer, until one is timed."""
_HOLD_MOST = 0.005
"""Seconds a message waits at most behind a message of reads that has no answer yet."""


class Unanswered(Exception):
    """An attempt that got no answer: ``error`` says why (a ``BridgeUnavailable``),
    ``maybe_sent`` whether the server may have run it."""

    def __init__(self, error: StateError, *, maybe_sent: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.maybe_sent = maybe_sent


class GoUnary(Exception):
    """Send this call unary: the server has no Calls RPC, the stream has as many
    calls in flight as the server runs at once, or the request is too large."""


class _Waiter:
    """One call waiting for its reply: ``done`` is a lock held until the reply (or
    the error) is there, released once by whoever hands it over (cheaper than an
    Event, whose wait builds a lock and a condition each time)."""

    __slots__ = ("done", "error", "reply", "sent")

    def __init__(self) -> None:
        self.done = threading.Lock()
        self.done.acquire()
        self.reply: pb.CallReply | None = None
        self.error: Exception | None = None
        self.sent = False
        """Its request was handed to gRPC (set under the stream's lock, and only while
        the call is waited for): from then on the server may have run it."""


class _Hold:
    """While a message of reads waits for its answer, the stream's next message waits
    for it too (:meth:`CallStream._open` says why), at most twice the time such an
    answer has been taking (a moving average) and never over :data:`_HOLD_MOST`.
    The writer thread calls :meth:`wait` and :meth:`sent`, the reader :meth:`came`;
    no lock is taken unless the writer waits (each side writes its flag before it
    reads the other's, so a wake-up is never lost), and an answer can never come
    before the message it answers was :meth:`sent`."""

    __slots__ = ("answered", "round_trip", "sent_at", "waiting")

    def __init__(self) -> None:
        self.answered = threading.Event()
        self.sent_at = 0.0  # when the message of reads waiting for its answer left
        self.waiting = False  # the writer waits on ``answered``
        self.round_trip = _HOLD_FIRST

    def wait(self) -> None:
        if self.sent_at:
            self.answered.clear()
            self.waiting = True
            if self.sent_at:
                self.answered.wait(min(2 * self.round_trip, _HOLD_MOST))
            self.waiting = False

    def sent(self, requests: list[pb.CallRequest]) -> None:
        for request in requests:
            if request.WhichOneof("body") not in PROMPT_FIELDS:
                return
        self.sent_at = time.monotonic()

    def came(self) -> None:
        sent_at = self.sent_at
        if sent_at:
            self.sent_at = 0.0
            self.round_trip += (time.monotonic() - sent_at - self.round_trip) / 8
            if self.waiting:
                self.answered.set()


class CallStream:
    """One ``Calls`` stream on a channel, opened on first use and again after a break."""

    def __init__(
        self,
        channel: grpc.Channel,
        metadata: Any,
        max_message_bytes: int,
        target: str,
        coalesce: bool = True,
    ) -> None:
        self._target = target
        self._coalesce = coalesce
        self._open_stream = channel.stream_stream(
            CALLS_METHOD,
            request_serializer=pb.CallRequest.SerializeToString,
            response_deserializer=pb.CallReply.FromString,
        )
        # The largest reply this channel receives: the server answers a larger one as
        # that call's LimitExceeded instead of ending the stream; and whether answers
        # coalesced in one message are read (not said: one message per answer).
        self._metadata = (
            *(metadata or ()),
            (codec.CALLS_MAX_REPLY_KEY, str(max_message_bytes)),
            *(((codec.CALLS_BATCH_KEY, "1"),) if coalesce else ()),
        )
        self.coalesced = 0
        """Calls sent in a message with others (what coalescing saved: one message each)."""
        self.max_request = max_message_bytes - _ENVELOPE
        self._capacity = _FIRST_CAPACITY
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._waiting: dict[int, _Waiter] = {}
        # Unbounded as a queue, bounded by the calls it may hold: no more wait on a
        # stream than its capacity (a call past it goes unary), and each waits once.
        self._outbox: queue.SimpleQueue[pb.CallRequest | None] | None = None
        self._replies: Any = None  # the open stream's call object
        self._reader: threading.Thread | None = None
        self.unsupported = False
        self._closed = False

    def call(self, field: str, request: Any, timeout: float, expires_ms: int = 0) -> Any:
        """Send one call and wait up to ``timeout`` for its answer: the unary RPC's
        response, or the server's ``StateError``; :class:`Unanswered` when no answer
        came, :class:`GoUnary` (nothing sent) when the server has no Calls RPC or the
        stream is full. ``expires_ms``: the caller's deadline as an instant (epoch
        ms; 0: none), after which the server refuses a write unapplied."""
        if math.isnan(timeout):  # (refused before anything is queued, so never sent)
            raise ValueError(f"Calls: a timeout must be a number, got {timeout!r}")
        waiter = _Waiter()
        with self._lock:
            if self._closed:
                raise Unanswered(self._unavailable("the channel is closed"), maybe_sent=False)
            if len(self._waiting) >= self._capacity:
                raise GoUnary  # more would be refused: gRPC queues unary calls instead
            outbox = self._outbox if self._outbox is not None else self._open()
            number = next(self._ids)
            self._waiting[number] = waiter
        outbox.put(
            pb.CallRequest(
                call=number,
                timeout_seconds=timeout,
                expires_unix_ms=expires_ms,
                **{field: request},
            )
        )
        if not waiter.done.acquire(timeout=min(max(timeout, 0.0), threading.TIMEOUT_MAX)):
            with self._lock:
                self._waiting.pop(number, None)  # from now on it is never handed over
                sent = waiter.sent
            if not waiter.done.acquire(blocking=False):  # (a reply that came meanwhile is used)
                if sent:
                    why = f"no reply within the deadline ({timeout:.3g}s)"
                else:
                    why = (
                        f"not sent within the deadline ({timeout:.3g}s): the Calls stream "
                        "was not up, or held it behind reads waiting for their answer"
                    )
                error = self._unavailable(why, status=grpc.StatusCode.DEADLINE_EXCEEDED.name)
                raise Unanswered(error, maybe_sent=sent)
        if waiter.error is not None:
            raise waiter.error
        reply = waiter.reply
        assert reply is not None
        if reply.error:
            raise wire_status.error_of_status(reply.error, self._target)
        return getattr(reply, field)

    def waiting_calls(self) -> int:
        """Calls waiting for their answers now (sent or not)."""
        with self._lock:
            return len(self._waiting)

    def _unavailable(self, why: str, **details: Any) -> BridgeUnavailable:
        return BridgeUnavailable(f"SessionStore at {self._target}: {why}", **details)

    def _open(self) -> queue.SimpleQueue[pb.CallRequest | None]:
        """Open the stream and its reader (with the lock held).

        Calls ready together leave in one message (where the server reads them so),
        and while a message of reads waits for its answer, the next message waits
        for it too (:class:`_Hold`): the server answers a read at once, so that is
        about one round trip, and the threads its answer wakes then call again
        together, their calls one message instead of several. A thread's call costs
        its process less the more calls share a message (measured, 8 processes of 8
        threads on 2 cores: 5.4 calls a message instead of 2.6-3.3, and 0.52-0.56x
        redis-py's ops/s instead of 0.33x). A lone call never waits (nothing is in
        flight), nor does a call behind a write (which may wait for its actor)."""
        outbox: queue.SimpleQueue[pb.CallRequest | None] = queue.SimpleQueue()
        headers = threading.Event()  # set by the reader: the server's headers, or the end
        hold = _Hold()

        def requests() -> Iterator[pb.CallRequest]:
            headers.wait()  # nothing goes to gRPC before them (see the module docstring)
            ended = False
            while not ended and (request := outbox.get()) is not None:
                ready = [request]
                if batches[0]:  # the server reads calls coalesced: take what is ready too
                    hold.wait()
                    _let_callers_queue(outbox, self._waiting)
                    size = request.ByteSize()
                    while len(ready) < _BATCH_CALLS and size < _BATCH_BYTES:
                        try:
                            more = outbox.get_nowait()
                        except queue.Empty:
                            break
                        if more is None:
                            ended = True
                            break
                        ready.append(more)
                        size += more.ByteSize()
                with self._lock:
                    sent = [r for r in ready if self._mark_sent(r.call)]
                # (calls whose callers gave up, or were failed, are never sent now)
                if batches[0] and sent:
                    hold.sent(sent)
                for message in coalesced(sent, _BATCH_BYTES):
                    self.coalesced += len(message.more) + 1 if message.more else 0
                    yield message

        batches = [False]  # set by the reader once the server says it reads them
        replies = self._open_stream(requests(), metadata=self._metadata)
        self._outbox, self._replies = outbox, replies
        self._reader = threading.Thread(
            target=self._read,
            args=(outbox, replies, headers, batches, hold),
            name="dspex-calls",
            daemon=True,
        )
        self._reader.start()
        return outbox

    def _mark_sent(self, call: int) -> bool:
        """Whether call ``call`` is still waited for and within what the server runs
        at once; if so, it is sent from now (with the lock held). One past that (the
        first calls of a stream go before the server said its limit) is told to go
        unary: it was never sent."""
        waiting = self._waiting
        waiter = waiting.get(call)
        if waiter is None:
            return False
        # Fewer waiting than the server runs: room, without counting the sent ones.
        if len(waiting) > self._capacity and sum(w.sent for w in waiting.values()) >= (
            self._capacity
        ):
            del waiting[call]
            waiter.error = GoUnary()
            waiter.done.release()
            return False
        waiter.sent = True
        return True

    def _read(
        self,
        outbox: queue.SimpleQueue[pb.CallRequest | None],
        replies: Any,
        headers: threading.Event,
        batches: list[bool],
        hold: _Hold,
    ) -> None:
        """Let the requests go once the server's headers came, hand each reply to its
        caller until the stream ends; then fail the rest.

        A failure before the server accepted the stream (a refused token, say) is
        what each call gets, as a unary call would; once the stream was up, a failure
        is the stream's, not a call's: each call still waiting gets UNAVAILABLE with
        no answer of the server's, so a write's outcome is unknown and it is retried
        with its request id. Either way a call whose request was never handed to gRPC
        is told so (``maybe_sent=False``)."""
        failure: Exception = Unanswered(
            self._unavailable("the Calls stream ended before the reply"), maybe_sent=True
        )
        up = False
        try:
            # initial_metadata() returns once the headers came, or empty once the
            # call ended without them (possibly before done() says so: gRPC reports
            # the two apart): only headers that carry something are the server's.
            metadata = replies.initial_metadata() or ()
            for key, value in metadata:
                if key == codec.CALLS_LIMIT_KEY:  # the server's handler runs
                    up = True
                    with contextlib.suppress(ValueError):
                        self._capacity = max(1, int(value))
                elif key == codec.CALLS_BATCH_KEY and value == "1":
                    batches[0] = self._coalesce
            if metadata:
                headers.set()
            calls = self._waiting
            for message in replies:
                hold.came()
                answers = (message, *message.more) if message.more else (message,)
                with self._lock:  # once a message: its callers' threads wait on it too
                    handed = [(calls.pop(a.call, None), a) for a in answers if a.call]
                for caller, answer in handed:
                    if caller is not None:
                        caller.reply = answer
                        caller.done.release()
                for reply in answers:
                    if reply.call == 0:  # the server's word on the stream itself
                        failure = self._stream_ended(reply, failure)
        except grpc.RpcError as exc:
            failure = ended_by(exc, up, failure, self._target)
            self.unsupported = isinstance(failure, GoUnary)
        except Exception as exc:  # any end of the stream fails its calls
            logger.warning("the Calls stream ended: %r", exc)
        with self._lock:
            if self._outbox is outbox:
                self._outbox = self._replies = None
            waiting = list(self._waiting.values())
            self._waiting.clear()  # from now on none of them is handed over
        _end(outbox)
        hold.came()  # (a message held behind the last one goes, or ends, now)
        headers.set()  # the request iterator ends (on the _end mark)
        for waiter in waiting:
            waiter.error = failure if waiter.sent else not_sent(failure)
            waiter.done.release()

    def _stream_ended(self, reply: pb.CallReply, failure: Exception) -> Exception:
        """What the calls still waiting get, after the server's reply to call 0: a
        stopping server says that none of them was run."""
        error = wire_status.error_of_status(reply.error, self._target)
        if error.details.get("not_run"):
            return Unanswered(error, maybe_sent=False)
        return failure

    def close(self) -> None:
        """End the stream and its reader; idempotent."""
        with self._lock:
            self._closed = True
            replies, reader = self._replies, self._reader
        if replies is not None:
            replies.cancel()
        if reader is not None and reader is not threading.current_thread():
            reader.join()


def ended_by(exc: grpc.RpcError, up: bool, failure: Exception, target: str) -> Exception:
    """What the calls of a Calls stream that ended with ``exc`` get (sync or
    asyncio): :class:`GoUnary` from a server without ``Calls``; before the stream was
    ``up``, the server's refusal as a unary call's; after, ``failure`` if the server
    already said no unanswered call ran, else "the stream broke" (maybe sent)."""
    if isinstance(exc, grpc.Call | grpc.aio.AioRpcError) and (
        exc.code() == grpc.StatusCode.UNIMPLEMENTED
    ):
        return GoUnary()
    if not up:  # the server refused the stream: its status, as a unary call's
        error = wire_status.error_from_rpc(exc, target)
        if isinstance(error, BridgeUnavailable) and not wire_status.answered_by_server(exc):
            return Unanswered(error, maybe_sent=True)
        return error
    if isinstance(failure, Unanswered) and not failure.maybe_sent:
        return failure  # the server said, before the stream broke, that none of them ran
    why = f"the Calls stream broke ({wire_status.failure_text(exc)})"
    return Unanswered(BridgeUnavailable(f"SessionStore at {target}: {why}"), maybe_sent=True)


def not_sent(failure: Exception) -> Exception:
    """What a call whose request was never handed to gRPC gets: an unanswered call
    is then one the server cannot have run."""
    if isinstance(failure, Unanswered) and failure.maybe_sent:
        return Unanswered(failure.error, maybe_sent=False)
    return failure


_YIELDS = 4
"""Times a stream's writer lets other threads run before it writes (see below)."""


def _let_callers_queue(outbox: queue.SimpleQueue[Any], waiting: dict[int, _Waiter]) -> None:
    """Before a message leaves, while other calls wait on the stream, give up the GIL
    (at most :data:`_YIELDS` times, and only while that let more requests in): the
    threads a batch of answers just woke then queue their next calls in time to go
    in this message, not one message each. Measured with 8 threads on one process's
    stream: 88-92% of calls coalesced instead of 72-76%, a fifth less client CPU a
    call. A lone call (nothing else waiting) never yields."""
    for _ in range(_YIELDS):
        queued = outbox.qsize()
        if len(waiting) <= queued + 1:  # every other waiting call is queued already
            return
        time.sleep(0)  # (releases the GIL: the woken threads run)
        if outbox.qsize() == queued:
            return


def _end(outbox: queue.SimpleQueue[pb.CallRequest | None]) -> None:
    """End a finished stream's request iterator (what it still holds is dropped:
    those calls were failed already)."""
    while True:
        try:
            outbox.get_nowait()
        except queue.Empty:
            break
    outbox.put(None)
