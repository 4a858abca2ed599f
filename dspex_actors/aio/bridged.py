"""AsyncBridgedState: a session on a SessionStore server, over ``grpc.aio``.

The asyncio twin of :class:`~dspex_actors.bridge.client.bridged.BridgedState`: the
same operations in the same wire forms (:mod:`dspex_actors.wire.operations`), the
same deadline per call, the same account of attempts
(:mod:`dspex_actors.bridge.client.attempts`) and so the same outcomes — a write is
applied once, clearly not applied (``BridgeUnavailable``), or ``OutcomeUnknown``
with its request id to settle. It runs on gRPC's own asyncio stack: no thread waits
for a reply. The frequent calls go on one Calls stream of the handle's, coalesced
when ready together (:mod:`dspex_actors.aio.calls`); the others, and all of them with
``stream=False``, as unary RPCs.

A write is handed to gRPC only once its channel is READY (asked with
``get_state``/``wait_for_state_change``, gRPC's public asyncio API): one kept back
was certainly not sent. A task cancelled while its call waits is told
``CancelledError`` as asyncio expects, with a note saying what became of the write:
not applied (kept back), or which request id to settle (sent, unanswered).

Events are the server's Watch stream as an async iterator, opened again from the
sequence after the last event it gave if the stream breaks, and never crossing into
a later session of the same id (the request names the incarnation).

``init(cache=True)`` keeps a coherent copy of the session, fed by a task following
the handle's own Watch stream (:mod:`dspex_actors.aio.cache`), with the sync
handle's bookkeeping and consistency model
(:mod:`dspex_actors.bridge.client.cache`): reads it can answer are answered from
it without a round trip, and a cached ``await get_variable(name)`` suspends nowhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any, ClassVar, Self, TypeVar

import grpc
import grpc.aio

from dspex_actors.aio.cache import CacheFeed, OnConnect, told
from dspex_actors.aio.calls import AsyncCallStream
from dspex_actors.aio.following import OPENED, PROGRESSED, EventStream, in_thread
from dspex_actors.aio.methods import AsyncRemoteSessionMethods
from dspex_actors.backoff import Backoff
from dspex_actors.bridge import embedded
from dspex_actors.bridge.client.attempts import Attempts, MaybeApplied, settled_not_applied
from dspex_actors.bridge.client.bridged import (
    SETTLE_SECONDS,
    _named,
    _over_the_limit,
    target_of,
)
from dspex_actors.bridge.client.cache import MISS, SCALARS, SessionCopy
from dspex_actors.bridge.client.calls import GoUnary, Unanswered
from dspex_actors.bridge.client.channels import failed_call
from dspex_actors.bridge.client.watch import WATCH_DEADLINE
from dspex_actors.errors import (
    BridgeUnavailable,
    OutcomeUnknown,
    SessionClosed,
    SessionNotFound,
    StateError,
    VersionConflict,
)
from dspex_actors.messages import Operation, ReadOperation
from dspex_actors.session import new_session_id
from dspex_actors.streaming import Event
from dspex_actors.v1 import session_store_pb2 as pb
from dspex_actors.wire import codec, keepalive
from dspex_actors.wire import status as wire_status
from dspex_actors.wire.events import event_of, progress, started
from dspex_actors.wire.forms import SERVICE, Ids, Rpc, Send, Settled
from dspex_actors.wire.operations import SENDS

__all__ = ["AsyncBridgedState"]

logger = logging.getLogger(__name__)

R = TypeVar("R")

_READY = grpc.ChannelConnectivity.READY
_SHUTDOWN = grpc.ChannelConnectivity.SHUTDOWN
_WATCH_RETRIED = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.INTERNAL,
    }
)


class AsyncBridgedState(AsyncRemoteSessionMethods):
    """A session on a SessionStore, for asyncio code (see the module docstring)."""

    kind: ClassVar[str] = "bridged"

    def __init__(
        self,
        channel: grpc.aio.Channel,
        address: str,
        session_id: str,
        timeout: float,
        token: str | None,
        max_message_bytes: int,
        embedded_server: bool,
        stream: bool,
        coalesce: bool,
        /,
    ) -> None:
        """Internal: open one with ``await AsyncBridgedState.init(...)``."""
        self.session_id = session_id
        self.address = address
        self.owner = False
        self.incarnation = ""
        self.ttl_seconds: float | None = None
        self.store = ""
        self._channel = channel
        self._timeout = timeout
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token is not None else ()
        )
        self._max_bytes = max_message_bytes
        self._embedded = embedded_server
        self._closed = False
        self._unaries: dict[str, Any] = {}
        self._calls: AsyncCallStream | None = (
            AsyncCallStream(channel, self._metadata, max_message_bytes, address, coalesce)
            if stream
            else None
        )
        self._cache: SessionCopy | None = None
        self._cache_feed: CacheFeed | None = None

    @classmethod
    async def init(
        cls,
        *,
        session_id: str | None = None,
        existing_state: Mapping[str, Any] | None = None,
        address: str | None = None,
        token: str | None = None,
        timeout: float = 5.0,
        tls_root_cert: bytes | str | os.PathLike[str] | None = None,
        max_message_bytes: int = codec.DEFAULT_MAX_MESSAGE_BYTES,
        create: bool = True,
        cache: bool = False,
        stream: bool = True,
        coalesce: bool = True,
    ) -> Self:
        """Open ``session_id`` on a SessionStore, as ``BridgedState.init`` does (the
        same address forms, ``$DSPEX_BRIDGE_ADDRESS`` and ``$DSPEX_BRIDGE_TOKEN``, the
        embedded server without either); ``create=False`` only attaches. ``cache``
        keeps a coherent copy of the session and answers reads from it, as the sync
        handle's does; it returns once the copy has loaded (within ``timeout``).
        ``stream`` sends the frequent calls on one Calls stream
        (:mod:`dspex_actors.aio.calls`), coalesced when ready together
        (``coalesce=False``: each in a message of its own); ``stream=False``: each a
        unary RPC."""
        address, token, root_cert = target_of(session_id, timeout, address, token, tls_root_cert)
        use_embedded = address is None
        if address is None:  # the embedded server starts in threads of its own
            address = await in_thread(embedded.acquire)
        channel = _open(address, root_cert, max_message_bytes)
        handle = cls(
            channel,
            address,
            session_id or new_session_id(),
            timeout,
            token,
            max_message_bytes,
            use_embedded,
            stream,
            coalesce,
        )
        try:
            opened = await handle._open_session(create=create, pending=False)
            handle.owner = opened.created
            handle.incarnation = opened.incarnation
            handle.ttl_seconds = opened.ttl_seconds
            handle.store = opened.store
            if existing_state is not None:
                await handle.import_state(existing_state)
            if cache:
                handle.enable_cache()
                with contextlib.suppress(StateError):  # not loaded in time: reads go through
                    await handle.sync_cache()
                failure = handle._cache_feed.failure if handle._cache_feed else None
                if failure is not None:  # the watch was refused, as the sync init raises
                    raise failure
        except BaseException:
            await handle.aclose()
            raise
        return handle

    # -- the coherent cache -------------------------------------------------------------

    def enable_cache(self) -> None:
        """Follow the session with a Watch stream and answer reads from a copy of its
        records (what ``init(cache=True)`` does), from a task on the running loop;
        idempotent."""
        if self._closed:
            raise self._closed_error()
        if self._cache is not None:
            return
        # The feed's listing and fetches go through run(), which asks the server
        # while the copy serves nothing (or holds a record only partly).
        copy = SessionCopy(self.session_id)
        position: list[int | None] = [None]

        def follow(
            on_connect: OnConnect, on_disconnect: Callable[[], None]
        ) -> AsyncGenerator[Event, None]:
            return self._watch(None, None, position, on_connect, on_disconnect)

        self._cache = copy
        self._cache_feed = CacheFeed(
            copy, follow, self.list_variables, self.get_record, self._next_sequence
        )
        self._cache_feed.start()

    async def _next_sequence(self) -> int:
        """The sequence the session's next event will get."""
        return int((await self.session_info())["next_sequence"])

    async def sync_cache(self, timeout: float | None = None) -> None:
        """Wait until the cache holds every change the server had made when this was
        called (a barrier, as the sync handle's ``sync_cache``). ``StateError`` after
        ``timeout`` (default: the handle's) or when the handle keeps no cache."""
        feed = self._cache_feed
        if feed is None:
            raise StateError(f"session {self.session_id!r}: this handle keeps no cache")
        sequence = await self._next_sequence()
        wait = self._timeout if timeout is None else timeout
        if not await feed.wait_until(sequence, wait):
            raise StateError(
                f"session {self.session_id!r}: the cache did not catch up within {wait}s"
            )

    @property
    def cached(self) -> bool:
        """Whether reads are answered from this handle's copy right now (see the sync
        handle's ``cached``)."""
        return self._cache is not None and self._cache.live

    async def get_variable(self, identifier: str) -> Any:
        """The variable's current value; ``VariableNotFound`` if absent. With a cache,
        answered from the copy inline (no operation built, nothing awaited) when
        nothing this handle wrote is still unseen, as the sync handle does."""
        cache = self._cache
        if (
            cache is not None
            and cache.serving
            and not cache.expected
            and type(identifier) is str
            and not self._closed
        ):
            record = cache.by_id.get(cache.ids.get(identifier, identifier))
            if record is not None and type(record.value) in SCALARS:
                return record.value
        return await super().get_variable(identifier)

    # -- one operation ----------------------------------------------------------------

    async def run(self, operation: Operation[R]) -> R:
        """Run one operation: from the copy when the handle keeps one and it can
        answer, else sent as its wire form; what the reply proved goes to the copy."""
        if self._closed:
            raise self._closed_error()
        cache = self._cache
        if cache is not None and isinstance(operation, ReadOperation):
            answer = operation.apply(cache)
            if answer is not MISS:
                copied: R = answer
                return copied
        send: Send[Any, R] | None = SENDS.get(type(operation))
        if send is None:
            raise StateError(f"{type(operation).__name__} has no wire form to send")
        request_id = uuid.uuid4().hex if send.rpc.has_request_id else ""
        try:
            request = send.encode(operation, Ids(self.session_id, self.incarnation, request_id))
        except Settled as settled:
            answered: R = settled.answer
            return answered
        size = request.ByteSize()
        if size > self._max_bytes:
            raise _over_the_limit(operation, size, self._max_bytes)
        write = operation.write
        try:
            response = await self._call(
                send,
                request,
                request_id if write else "",
                operation.within or self._timeout,
                _named(operation, self.session_id) if write else "",
            )
        except VersionConflict as exc:
            if cache is not None and isinstance(exc.variable, str) and isinstance(exc.actual, int):
                cache.expect(exc.variable, exc.actual)  # learned: never read older
            raise
        result = send.result(operation, response, self._max_bytes)
        if cache is not None and send.seen is not None:
            send.seen(operation, response, result, cache)
        return result

    async def _call(
        self, send: Send[Any, Any], request: Any, request_id: str, timeout: float, what: str
    ) -> Any:
        """Send one request within ``timeout``, retrying as :class:`Attempts` says.

        A task cancelled meanwhile gets ``CancelledError`` with one note saying what
        became of a write: not applied (no attempt could have reached the server),
        or the request id to settle. A call cut short because this handle was closed
        under it (not cancelled by its own caller) raises ``SessionClosed`` instead,
        or ``OutcomeUnknown`` for a write that may have been sent."""
        attempts = Attempts(send, request_id, timeout, what, self.session_id)
        sent = [False]  # the attempt under way handed its request to gRPC
        try:
            while True:
                sent[0] = False
                try:
                    left, expires = attempts.left(), attempts.expires_ms
                    write = bool(request_id)
                    return await self._attempt(send.rpc, request, left, expires, sent, write)
                except Unanswered as exc:
                    try:
                        pause = attempts.failed(
                            exc, self._closed_error() if self._closed else None
                        )
                    except MaybeApplied as maybe:
                        error = maybe.error
                        return await self._unknown(send, request, request_id, attempts, error)
                await asyncio.sleep(pause)  # a retry's backoff, bounded by the deadline
        except asyncio.CancelledError as cancelled:
            maybe_sent = attempts.maybe_sent or sent[0]
            task = asyncio.current_task()
            if self._closed and task is not None and task.cancelling() == 0:
                # Closed under the call, which its caller did not cancel.
                if request_id and maybe_sent:
                    raise self._outcome_unknown(request_id, self._closed_error()) from None
                raise self._closed_error() from None
            if request_id:
                cancelled.add_note(
                    f"{what} may have been applied: settle(request_id={request_id!r}, age) "
                    "tells, as for OutcomeUnknown"
                    if maybe_sent
                    else f"{what} was not applied (cancelled before it was sent)"
                )
            raise

    async def _attempt(
        self,
        rpc: Rpc,
        request: Any,
        timeout: float,
        expires_ms: int,
        sent: list[bool],
        write: bool = False,
    ) -> Any:
        """One attempt, on the Calls stream or unary: the response, the server's
        ``StateError``, or :class:`Unanswered` saying whether the request may have
        been sent; ``sent[0]`` is set once gRPC has it."""
        if write:
            began = time.monotonic()
            if not await self._connected(timeout):
                raise Unanswered(self._unreachable(), maybe_sent=False)
            timeout = max(timeout - (time.monotonic() - began), 0.001)
        stream = self._calls
        if (
            stream is not None
            and rpc.field is not None
            and not stream.unsupported
            and request.ByteSize() <= stream.max_request
        ):
            try:
                return await stream.call(rpc.field, request, timeout, expires_ms, sent)
            except GoUnary:
                pass
            except BridgeUnavailable as refused:  # the server's "not started, not applied"
                raise Unanswered(refused, maybe_sent=False) from refused
            except OutcomeUnknown as unknown:
                if rpc.has_request_id:
                    raise Unanswered(unknown, maybe_sent=True) from unknown
                raise
        metadata = (*self._metadata, (codec.EXPIRES_KEY, str(expires_ms)))
        sent[0] = True
        try:
            return await self._unary(rpc)(request, timeout=timeout, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            raise failed_call(exc, self.address, rpc) from exc

    def _unary(self, rpc: Rpc) -> Any:
        method = self._unaries.get(rpc.name)
        if method is None:
            method = self._unaries[rpc.name] = self._channel.unary_unary(
                rpc.path,
                request_serializer=rpc.request.SerializeToString,
                response_deserializer=rpc.response.FromString,
            )
        return method

    async def _connected(self, timeout: float) -> bool:
        """Whether the channel is READY, now or within ``timeout``."""
        deadline = time.monotonic() + timeout
        state = self._channel.get_state(try_to_connect=True)
        while state != _READY:
            left = deadline - time.monotonic()
            if left <= 0 or state == _SHUTDOWN:
                return False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):  # (wait_for could drop a cancellation)
                    await self._channel.wait_for_state_change(state)
            state = self._channel.get_state(try_to_connect=True)
        return True

    def _unreachable(self) -> BridgeUnavailable:
        return BridgeUnavailable(
            f"SessionStore at {self.address} is unreachable (no connection within the "
            "call's deadline)"
        )

    async def _unknown(
        self,
        send: Send[Any, Any],
        request: Any,
        request_id: str,
        attempts: Attempts,
        error: StateError,
    ) -> Any:
        """A write that got no answer: settled within a short bound (not applied:
        ``BridgeUnavailable``; applied: its answer), else ``OutcomeUnknown``."""
        bound = min(self._timeout, SETTLE_SECONDS)
        unknown = self._outcome_unknown(request_id, error)
        try:
            applied = await self.settle(request_id, time.monotonic() - attempts.started, bound)
        except StateError:
            raise unknown from error
        if not applied:
            raise settled_not_applied(
                self.address, self._timeout, self.session_id, error
            ) from error
        try:  # applied: its request id fetches its answer
            expires = int((time.time() + bound) * 1000)
            return await self._attempt(send.rpc, request, bound, expires, [False])
        except (Unanswered, StateError):
            raise unknown from error

    def _outcome_unknown(self, request_id: str, error: StateError) -> OutcomeUnknown:
        return OutcomeUnknown(
            f"SessionStore at {self.address}: the write to session {self.session_id!r} got "
            f"no answer and may or may not have been applied (last failure: {error}); "
            f"await settle({request_id!r}, age) tells",
            session_id=self.session_id,
            request_id=request_id,
        )

    # -- events -----------------------------------------------------------------------

    def events(self, pattern: str | None = None, start: int | None = None) -> EventStream:
        if self._closed:
            raise self._closed_error()
        position: list[int | None] = [None]
        events = self._watch(pattern, start, position)
        if self._cache is not None:
            events = told(events, self._cache)
        return EventStream(events, lambda: position[0])

    async def _watch(
        self,
        pattern: str | None,
        start: int | None,
        position: list[int | None],
        on_connect: OnConnect | None = None,
        on_disconnect: Callable[[], None] | None = None,
    ) -> AsyncGenerator[Event, None]:
        """The Watch stream, opened again after a break (see the module docstring);
        ``position[0]``: past the last event its reader took or the server skipped.
        ``on_connect(start)`` is awaited each time a stream is up, before its first
        event; ``on_disconnect()`` hears each time one that was up ended."""
        cursor = start
        opened = False
        backoff = Backoff()
        watch = self._channel.unary_stream(
            f"/{SERVICE}/Watch",
            request_serializer=pb.WatchRequest.SerializeToString,
            response_deserializer=pb.VariableEvent.FromString,
        )
        while not self._closed:
            request = pb.WatchRequest(
                session_id=self.session_id,
                patterns=[pattern] if pattern else [],
                start_sequence=cursor or 0,
                incarnation=self.incarnation,
                started=True,
                progress=True,
            )
            stream = watch(request, timeout=WATCH_DEADLINE, metadata=self._metadata)
            up = False  # this stream said where it starts
            try:
                async for message in stream:
                    beginning = started(message)
                    if beginning is not None:
                        first, incarnation = beginning
                        if self.incarnation and incarnation and incarnation != self.incarnation:
                            yield Event(self.session_id, first - 1, "closed")
                            return  # a later session of the same id: not ours
                        cursor = first if cursor is None else cursor
                        position[0] = cursor
                        backoff.reset()
                        up = True
                        if on_connect is not None:
                            await on_connect(first)
                        if not opened:
                            opened = True
                            yield OPENED
                        continue
                    read_to = progress(message)
                    if read_to is not None:
                        cursor = position[0] = max(cursor or 0, read_to + 1)
                        yield PROGRESSED
                        continue
                    event = event_of(message, self._max_bytes)
                    # Past it once its reader took it (read only after it did).
                    cursor = position[0] = event.sequence + 1
                    yield event
                    if event.kind == "closed":
                        return
            except grpc.aio.AioRpcError as exc:
                if self._closed:
                    return  # the handle was closed under it: the stream just ends
                if exc.code() not in _WATCH_RETRIED or not opened:
                    raise wire_status.error_from_rpc(exc, self.address) from exc
                logger.info("watch of %s broke (%s); opening it again", self.session_id, exc)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._closed and task is not None and task.cancelling() == 0:
                    return  # the channel closed under it, not its reader's cancel
                raise
            finally:
                stream.cancel()
                if up and on_disconnect is not None:
                    on_disconnect()
            await asyncio.sleep(backoff.next())

    # -- lifecycle --------------------------------------------------------------------

    def _closed_error(self) -> SessionClosed:
        return SessionClosed(f"session {self.session_id!r}: this handle is closed")

    async def aclose(self) -> None:
        """Close the session if this handle owns it (its incarnation only), else
        detach; idempotent. The channel closes even when the server is unreachable."""
        if self._closed:
            return
        try:
            if self.owner:
                try:
                    await self.close_remote()
                except SessionNotFound:
                    pass  # expired or closed already: nothing of ours to close
                except StateError as exc:
                    logger.warning("closing session %s failed: %s", self.session_id, exc)
        finally:
            self._closed = True
            feed, self._cache_feed, self._cache = self._cache_feed, None, None
            if feed is not None:  # its task ends before the channel it reads closes
                await feed.aclose()
            if self._calls is not None:
                await self._calls.close()
            await self._channel.close(None)
            if self._embedded:
                await in_thread(embedded.release)

    def __repr__(self) -> str:
        role = "owner" if self.owner else "attached"
        return f"<AsyncBridgedState {self.session_id} at {self.address} ({role})>"


def _open(address: str, root_cert: bytes | None, max_message_bytes: int) -> grpc.aio.Channel:
    options = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        *keepalive.client_options(),
    ]
    if root_cert is None:
        return grpc.aio.insecure_channel(address, options=options)
    credentials = grpc.ssl_channel_credentials(root_certificates=root_cert or None)
    return grpc.aio.secure_channel(address, credentials, options)
