"""BridgedState: a StateProvider whose session lives in a SessionStore server.

Every public method is :class:`~dspex_actors.methods.SessionMethods`'; this class
only says how an operation runs here (:meth:`BridgedState.run`): it is sent as its
wire form (:mod:`dspex_actors.wire.operations`), on the Calls stream the handles of
a channel share or as a unary RPC, with a deadline (``timeout``, default 5 s). A
server that is unreachable, dead or too slow raises ``BridgeUnavailable`` within it,
never hangs. The server's errors arrive as the ``dspex_actors.errors`` class it
raised, with its message and attributes (:mod:`dspex_actors.wire.status`), so
callers handle bridged and local errors alike. gRPC caps trailers at 8 KiB, so a
very long message is cut and an attribute over 256 bytes (a rejected embedding's
``.value``, say) arrives as its shortened repr.

Connections: handles to the same target with the same settings share one channel
(``channels.py``, counted by reference), so they share one TCP connection and each
keeps an independent lifetime; the channel closes with the last of them.

No readiness probe at init (``channel_ready_future`` would start a polling thread
that outlives the call): the first RPC, OpenSession, runs with
``wait_for_ready=False`` and the deadline, which fails just as fast and proves more.

**Length.** Just past 600 lines: the handle's life (init, the cache, cleanup) and
the one place its failures are classed (:meth:`BridgedState._call`, ``_unknown``)
read best together; how one attempt is sent and what it may have reached live in
``calls.py`` (the Calls stream) and ``channels.py`` (a unary call).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NamedTuple, Self, TypeVar

from dspex_actors.bridge import embedded
from dspex_actors.bridge.client import channels
from dspex_actors.bridge.client.attempts import Attempts, MaybeApplied, settled_not_applied
from dspex_actors.bridge.client.cache import MISS, SCALARS, RecordCache, Told
from dspex_actors.bridge.client.calls import CallStream, GoUnary, Unanswered
from dspex_actors.bridge.client.channels import SYSTEM_ROOTS
from dspex_actors.bridge.client.watch import WATCH_DEADLINE, WatchSource
from dspex_actors.bridge.env import ADDRESS_ENV, TOKEN_ENV
from dspex_actors.delivery import Subscription
from dspex_actors.errors import (
    BridgeUnavailable,
    LimitExceeded,
    OutcomeUnknown,
    SessionClosed,
    SessionNotFound,
    StateError,
    VersionConflict,
)
from dspex_actors.limits import check_session_id, too_large
from dspex_actors.messages import (
    GetVariable,
    Operation,
    ReadOperation,
)
from dspex_actors.methods import RemoteSessionMethods
from dspex_actors.session import new_session_id
from dspex_actors.urls import bridge_address
from dspex_actors.v1 import session_store_pb2 as pb
from dspex_actors.v1 import session_store_pb2_grpc as pb_grpc
from dspex_actors.wire import codec
from dspex_actors.wire.forms import Ids, Rpc, Send, Settled
from dspex_actors.wire.operations import SENDS
from dspex_actors.wire.tls import read_pem

__all__ = ["ADDRESS_ENV", "TOKEN_ENV", "BridgedState"]

logger = logging.getLogger(__name__)

R = TypeVar("R")

SETTLE_SECONDS = 1.0
"""At most this long (and at most the handle's timeout) is spent settling a write
that got no answer, after its deadline, before ``OutcomeUnknown`` is raised."""


def _over_the_limit(operation: Operation[Any], size: int, limit: int) -> StateError:
    """A request over this client's ``max_message_bytes``, named as a session names it."""
    variable, what = operation.sized_as()
    error = too_large(variable, what, size, "max_message_bytes", limit)
    message = f"{error}; the limit is this client's own, and nothing was sent"
    return LimitExceeded(message, limit="max_message_bytes", variable=variable, size=size)


def _named(operation: Operation[Any], session_id: str) -> str:
    """A write as a message names it: its method, its variable, its session."""
    kind = type(operation).__name__
    method = "".join(f"_{c.lower()}" if c.isupper() else c for c in kind).lstrip("_")
    variable = getattr(operation, "identifier", getattr(operation, "name", None))
    updates = getattr(operation, "updates", None)
    if isinstance(variable, str):
        method += f" of {variable!r}"
    elif updates is not None:
        method += f" of {len(updates)} variables"
    return f"{method} in session {session_id!r}"


def target_of(
    session_id: str | None,
    timeout: float,
    address: str | None,
    token: str | None,
    tls_root_cert: bytes | str | os.PathLike[str] | None,
) -> tuple[str | None, str | None, bytes | None]:
    """The server a handle opens (``HOST:PORT``; None: the embedded one), its token and
    TLS roots, from the arguments or ``$DSPEX_BRIDGE_ADDRESS``/``$DSPEX_BRIDGE_TOKEN``;
    bad arguments refused. What the sync and asyncio handles' ``init`` share."""
    if session_id is not None:
        check_session_id(session_id)
    if not (timeout > 0 and math.isfinite(timeout)):  # (a deadline is an instant)
        raise ValueError(f"timeout must be positive and finite, got {timeout!r}")
    if address is None and os.environ.get(ADDRESS_ENV):
        address = os.environ[ADDRESS_ENV]
        token = token if token is not None else os.environ.get(TOKEN_ENV) or None
    root_cert = read_pem(tls_root_cert) if tls_root_cert is not None else None
    if address is not None:
        address, tls = bridge_address(address)
        if tls and root_cert is None:
            root_cert = SYSTEM_ROOTS
    return address, token, root_cert


def _not_found_where(exc: SessionNotFound, address: str, embedded: bool) -> SessionNotFound:
    """An attach that found no session, naming the server asked (and how to reach one)."""
    if embedded:
        where = (
            "this process's embedded server (no address was given and "
            f"${ADDRESS_ENV} is not set), which holds only this process's sessions: to "
            f"attach to another process's session, pass address='HOST:PORT' or set "
            f"${ADDRESS_ENV}"
        )
    else:
        where = f"the SessionStore at {address}"
    return SessionNotFound(f"{exc} on {where}", **exc.details)


class Link(NamedTuple):
    """How a handle reaches its server (what :meth:`BridgedState.init` resolved)."""

    shared: channels.Shared
    address: str
    timeout: float
    token: str | None
    max_message_bytes: int
    embedded_server: bool
    stream: bool
    coalesce: bool


class BridgedState(RemoteSessionMethods):
    """A session held by a SessionStore (another process, or the embedded server).

    Open one with :meth:`init` (the constructor is internal). The handle that created
    the session owns it: its :meth:`cleanup` closes the session on the server (that
    incarnation only). A handle that attached to an existing session only detaches.
    After cleanup every call raises ``SessionClosed`` without a round trip.

    Failures a caller can act on: every write carries a request id, and a write whose
    attempt failed in transport is sent again with the same id within the call's
    deadline, so the server applies it once. When no attempt could have reached the
    server the call raises ``BridgeUnavailable`` (not applied); when one could have and
    none answered, ``OutcomeUnknown``. Reads retry likewise and raise
    ``BridgeUnavailable``.
    """

    kind: ClassVar[str] = "bridged"

    def __init__(self, link: Link, session_id: str, /) -> None:
        """Internal: :meth:`init` opens a handle (and its session)."""
        shared, address, timeout, token, max_message_bytes, embedded_server, stream, coalesce = (
            link
        )
        self.session_id = session_id
        self.address = address
        self.owner = False
        self.incarnation = ""
        self.ttl_seconds: float | None = None
        self.store = ""
        """Where the server keeps the session ("memory", "sqlite", "redis"; "" from a
        server too old to say)."""
        self._shared = shared
        self._timeout = timeout
        self._metadata = (("authorization", f"Bearer {token}"),) if token is not None else None
        self._calls: CallStream | None = shared.calls(self._metadata, coalesce) if stream else None
        self._max_bytes = max_message_bytes
        self._embedded = embedded_server
        self._closed = False
        self._lock = threading.Lock()
        self._cache: RecordCache | None = None
        self._cache_feed: Subscription | None = None
        self._subscriptions: list[Subscription] = []  # ended with the handle

    @classmethod
    def init(
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
        pending: bool = False,
        cache: bool = False,
        stream: bool = True,
        coalesce: bool = True,
        **backend_opts: Any,
    ) -> Self:
        """Open ``session_id`` on a SessionStore, creating it if absent (``create``).

        Creating makes this handle the owner; with ``create=False`` it only attaches
        (``SessionNotFound`` if absent). ``pending`` creates the session invisible to
        others until :meth:`commit` (a migration's copy). ``address`` is ``HOST:PORT``,
        ``dspex://HOST:PORT`` or ``dspexs://HOST:PORT`` (TLS: the system's roots, or
        ``tls_root_cert``, PEM bytes or a path, which switches TLS on too); by default
        ``$DSPEX_BRIDGE_ADDRESS`` (with ``$DSPEX_BRIDGE_TOKEN``), else the embedded
        in-process server, which holds only this process's sessions. ``existing_state``
        is imported in one RPC; if that fails, a session this call created is closed
        again. ``BridgeUnavailable`` within ``timeout`` when the server cannot be
        reached; a bad ``session_id`` is a ``ValidationError``. ``cache`` keeps a
        coherent copy of the session, fed by a Watch stream, and answers reads from it
        (:mod:`dspex_actors.bridge.client.cache`). ``stream`` sends the frequent calls
        on one long-lived stream the handles of a channel share, about half a unary
        call's cost (:mod:`dspex_actors.bridge.client.calls`); ``stream=False`` makes
        every call a unary RPC. ``coalesce=False`` sends each streamed call, and has
        each answer come back, in a message of its own, even when several are ready
        together (a lone call costs the same either way: the latency suite measures it).
        """
        if backend_opts:
            raise TypeError(f"BridgedState.init got unknown options: {', '.join(backend_opts)}")
        address, token, root_cert = target_of(session_id, timeout, address, token, tls_root_cert)
        use_embedded = address is None
        if address is None:
            address = embedded.acquire()
        try:
            shared = channels.acquire(address, root_cert, max_message_bytes)
        except BaseException:
            if use_embedded:
                embedded.release()
            raise
        # The id is chosen here, not by the server, so that a retried open names
        # the same session (and, by its request id, learns it created it).
        link = Link(
            shared, address, timeout, token, max_message_bytes, use_embedded, stream, coalesce
        )
        handle = cls(link, session_id or new_session_id())
        try:
            opened = handle._open_session(create=create, pending=pending)
            handle.owner = opened.created
            handle.incarnation = opened.incarnation
            handle.ttl_seconds = opened.ttl_seconds
            handle.store = opened.store
            shared.heard_limit(opened.max_calls_per_connection)
            if existing_state is not None:
                handle.import_state(existing_state)
            if cache:
                handle.enable_cache()
                with contextlib.suppress(StateError):  # not loaded in time: reads go through
                    handle.sync_cache()
        except SessionNotFound as exc:
            handle.cleanup()
            if create or exc.details.get("session_id") != handle.session_id:
                raise
            raise _not_found_where(exc, address, use_embedded) from None
        except BaseException:
            handle.cleanup()
            raise
        return handle

    def enable_cache(self) -> None:
        """Follow the session with a Watch stream and answer reads from a copy of
        its records (what ``init(cache=True)`` does); idempotent."""
        if self._cache is not None:
            return
        # The copy loads itself while it serves nothing (and fetches what it holds
        # only partly), so these reads go to the server.
        cache = RecordCache(
            self.session_id, self.list_variables, self.get_record, self._next_sequence
        )
        self._cache = cache
        source = self._watch(
            None, None, on_connect=cache.connected, on_disconnect=cache.disconnected
        )
        self._cache_feed = Subscription(
            source, self.session_id, None, cache.on_event, name=f"dspex-cache-{self.session_id}"
        )

    def _watch(
        self,
        pattern: str | None,
        start: int | None,
        *,
        on_connect: Callable[[int], None] | None = None,
        on_disconnect: Callable[[], None] | None = None,
    ) -> WatchSource:
        """The session's Watch stream as a source, on a connection that carries only
        watches; its place there is given back when the source is released."""
        if self._closed:
            raise self._closed_error()
        try:
            channel, give_back = self._shared.watch_channel()
        except ValueError:  # released: this handle was cleaned up (meanwhile)
            raise self._closed_error() from None
        watch, metadata = pb_grpc.SessionStoreStub(channel).Watch, self._metadata

        def open_stream(request: pb.WatchRequest) -> Any:
            return watch(request, timeout=WATCH_DEADLINE, metadata=metadata)

        return WatchSource(
            open_stream,
            self.session_id,
            pattern,
            start,
            self.incarnation,
            self._max_bytes,
            timeout=self._timeout,
            address=self.address,
            on_connect=on_connect,
            on_disconnect=on_disconnect,
            on_close=give_back,
        )

    def sync_cache(self, timeout: float | None = None) -> None:
        """Wait until the cache holds every change the server had made when this was
        called (a barrier: after another process's write returned and it said so,
        ``sync_cache()`` then a read sees that write). ``StateError`` after
        ``timeout`` (default: the handle's) or when the handle keeps no cache."""
        cache = self._cache
        if cache is None:
            raise StateError(f"session {self.session_id!r}: this handle keeps no cache")
        sequence = self._next_sequence()
        wait = self._timeout if timeout is None else timeout
        if not cache.wait_until(sequence, wait):
            raise StateError(
                f"session {self.session_id!r}: the cache did not catch up within {wait}s"
            )

    @property
    def cached(self) -> bool:
        """Whether reads are answered from this handle's copy right now: from
        ``init(cache=True)`` on (it waits, within the timeout, for the copy to load),
        except while the link is down and until the copy has caught up again."""
        return self._cache is not None and self._cache.live

    # -- running an operation: its wire form, sent with a deadline ---------------------

    def run(self, operation: Operation[R]) -> R:
        """Run one operation: from the copy when the handle keeps one and it can
        answer, else sent as its wire form (:mod:`dspex_actors.wire.operations`)."""
        cache = self._cache
        if cache is not None and isinstance(operation, ReadOperation):
            if self._closed:
                raise self._closed_error()
            answer = operation.apply(cache)
            if answer is not MISS:
                copied: R = answer
                return copied
        return self._send(operation)

    def _send(self, operation: Operation[R]) -> R:
        """Send ``operation`` and read its reply; what the reply proved goes to the copy."""
        if self._closed:
            raise self._closed_error()
        send: Send[Any, R] | None = SENDS.get(type(operation))
        if send is None:  # no wire form of its own: it runs on the public methods
            return operation.forward(self)
        request_id = uuid.uuid4().hex if send.rpc.has_request_id else ""
        try:
            request = send.encode(operation, Ids(self.session_id, self.incarnation, request_id))
        except Settled as settled:
            answered: R = settled.answer
            return answered
        size = request.ByteSize()
        if size > self._max_bytes:  # gRPC would refuse to send it, in words of its own
            raise _over_the_limit(operation, size, self._max_bytes)
        cache = self._cache
        try:
            response = self._call(
                send,
                request,
                request_id if operation.write else "",
                operation.within or self._timeout,
                _named(operation, self.session_id) if operation.write else "",
            )
        except VersionConflict as exc:
            if cache is not None and isinstance(exc.variable, str) and isinstance(exc.actual, int):
                cache.expect(exc.variable, exc.actual)  # learned: never read older
            raise
        result = send.result(operation, response, self._max_bytes)
        if cache is not None and send.seen is not None:
            send.seen(operation, response, result, cache)
        return result

    def _call(
        self, send: Send[Any, Any], request: Any, request_id: str, timeout: float, what: str = ""
    ) -> Any:
        """Send one request within ``timeout``; the one place failures are classed.
        ``request_id``: a write's (empty for anything else); ``what``: its name.

        An attempt that got no answer (the transport failed, or the server said it
        did not start the call in time) is sent again with the same request until
        the deadline, unless the operation forbids it; a write's request carries its
        request id, so the server applies it once. A write that may have reached the
        server and got no answer is then settled (:meth:`_unknown`); one no attempt
        can have brought there (each refused by the server, or never handed to gRPC)
        is ``BridgeUnavailable``: not applied, with no settle needed.
        """
        attempts = Attempts(send, request_id, timeout, what, self.session_id)
        while True:
            try:
                return self._attempt(
                    send.rpc, request, attempts.left(), attempts.expires_ms, write=bool(request_id)
                )
            except Unanswered as exc:
                try:
                    pause = attempts.failed(exc, self._closed_error() if self._closed else None)
                except MaybeApplied as maybe:
                    return self._unknown(send, request, request_id, attempts.started, maybe.error)
            time.sleep(pause)  # a retry's backoff, bounded by the call's deadline

    def _attempt(
        self, rpc: Rpc, request: Any, timeout: float, expires_ms: int = 0, *, write: bool = False
    ) -> Any:
        """One attempt: on the Calls stream when the RPC may travel there, else unary
        (:meth:`~dspex_actors.bridge.client.channels.Shared.attempt`). Answers the
        response; raises the server's ``StateError``, or
        :class:`~dspex_actors.bridge.client.calls.Unanswered`."""
        stream = self._calls
        field = rpc.field
        if (
            stream is not None
            and field is not None
            and not stream.unsupported
            and request.ByteSize() <= stream.max_request
        ):
            try:
                return stream.call(field, request, timeout, expires_ms)
            except GoUnary:
                pass
            except BridgeUnavailable as refused:  # the server's "not started, not applied"
                raise Unanswered(refused, maybe_sent=False) from refused
            except OutcomeUnknown as unknown:
                if rpc.has_request_id:  # a write the server's engine got no answer to
                    raise Unanswered(unknown, maybe_sent=True) from unknown
                raise
        metadata = self._metadata
        if expires_ms:
            metadata = (*(metadata or ()), (codec.EXPIRES_KEY, str(expires_ms)))
        try:
            return self._shared.attempt(rpc, request, timeout, metadata, write=write)
        except ValueError as exc:
            # grpcio refuses calls on a channel closed meanwhile with a ValueError;
            # our own flag, not its text, tells that this is what happened.
            if self._closed:
                raise self._closed_error() from exc
            raise

    def _unknown(
        self,
        send: Send[Any, Any],
        request: Any,
        request_id: str,
        started: float,
        error: StateError,
    ) -> Any:
        """A write that got no answer: settle it within a short bound and act on the
        answer (not applied: ``BridgeUnavailable``; applied: its answer, asked for
        again with its request id), else raise a settleable ``OutcomeUnknown``."""
        bound = min(self._timeout, SETTLE_SECONDS)
        unknown = OutcomeUnknown(
            f"SessionStore at {self.address} did not answer within {self._timeout}s; the "
            f"write to session {self.session_id!r} may or may not have been applied "
            f"(last failure: {error}); settle() tells",
            session_id=self.session_id,
            request_id=request_id,
        )

        def settle_later() -> bool:
            try:
                return self.settle(request_id, time.monotonic() - started)
            except BridgeUnavailable as exc:  # still not reachable: still unknown
                raise unknown from exc

        unknown.settled_by(settle_later)
        try:
            applied = self.settle(request_id, time.monotonic() - started, bound)
        except StateError:
            raise unknown from error
        if not applied:
            raise settled_not_applied(
                self.address, self._timeout, self.session_id, error
            ) from error
        try:  # applied: its request id fetches its answer
            return self._attempt(send.rpc, request, bound)
        except (Unanswered, StateError):
            raise unknown from error

    def _closed_error(self) -> SessionClosed:
        return SessionClosed(f"session {self.session_id!r}: this handle is cleaned up")

    def get_variable(self, identifier: str) -> Any:
        """The variable's current value; ``VariableNotFound`` if absent.

        With a cache, answered from the copy with its two dict lookups inline when
        nothing this handle wrote is still unseen (a message and a dispatch would
        double the cost of a cached read); everything else goes through :meth:`run`.
        """
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
        return self.run(GetVariable(identifier))

    # -- change events ----------------------------------------------------------------

    def events(self, pattern: str | None, start: int | None = None) -> WatchSource | Told:
        """The server's Watch stream from ``start`` (None: from where the session is
        when the server takes the watch), opened again after any outage from where
        it stopped (:mod:`dspex_actors.bridge.client.watch`); ``subscribe`` returns
        once the server holds it, or raises ``BridgeUnavailable`` after the handle's
        timeout. With a cache, the copy hears of each event before it is handed on
        (:class:`~dspex_actors.bridge.client.cache.Told`)."""
        source = self._watch(pattern, start)
        return source if self._cache is None else Told(source, self._cache)

    def _subscribed(self, subscription: Subscription) -> None:
        """Kept, to be ended with the handle (after the session's last events, when
        this handle closes it)."""
        with self._lock:
            self._subscriptions = [s for s in self._subscriptions if s.active]
            self._subscriptions.append(subscription)

    @classmethod
    def requires_bridge(cls) -> bool:
        return True

    @classmethod
    def capabilities(cls) -> dict[str, bool]:
        """What every bridged session has; ``persistence`` is False because it depends
        on the server's store: :attr:`persistent` answers it for this session."""
        return {
            "atomic_updates": True,  # the server applies a batch in one actor turn
            "streaming": True,  # the Watch stream, resumed after outages
            "persistence": False,  # not for every server: see `persistent`
            "distribution": True,  # any process that can reach the server shares it
        }

    @property
    def persistent(self) -> bool:
        """Whether the session outlives its server: its store is a SQLite file or Redis
        (the server told it when the session was opened)."""
        return self.store in ("sqlite", "redis")

    def cleanup(self) -> None:
        """Close the session if this handle owns it, else detach; idempotent.

        The owner closes only its own incarnation: if its session expired and the
        id was opened again since, the newcomer's session is left alone. The channel
        (and the embedded server reference) is released even when the server cannot
        be reached; that failure is logged, not raised.
        """
        closed = False
        with self._lock:
            if self._closed:
                return
            feed, self._cache_feed, self._cache = self._cache_feed, None, None
            if feed is not None:
                feed.close()
            subscriptions, self._subscriptions = self._subscriptions, []
            try:
                if self.owner:
                    try:
                        self.close_remote()
                        closed = True
                    except SessionNotFound:
                        pass  # expired (or closed) already: nothing of ours to close
                    except StateError as exc:
                        logger.warning("closing session %s failed: %s", self.session_id, exc)
            finally:
                self._closed = True
        try:
            # Outside the lock: a subscriber may call back into the handle meanwhile.
            for subscription in subscriptions:
                if closed:  # the server ends each stream: events before the close first
                    subscription.finish(self._timeout)
                else:
                    subscription.end()
        finally:
            channels.release(self._shared)
            if self._embedded:
                embedded.release()

    def __repr__(self) -> str:
        role = "owner" if self.owner else "attached"
        state = "closed" if self._closed else role
        return f"<BridgedState {self.session_id} at {self.address} ({state})>"
