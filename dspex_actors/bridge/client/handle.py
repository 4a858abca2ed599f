"""BridgedState: a StateProvider whose session lives in a SessionStore server.

Every method is one unary RPC with a deadline (``timeout``, default 5 s); a server
that is unreachable, dead or too slow raises ``BridgeUnavailable`` within it, never
hangs. Every ``grpc.RpcError`` is translated at one place (:meth:`BridgedState._call`)
into the ``dspex_actors.errors`` class the server raised, with its message and
attributes, so callers handle bridged and local errors alike. gRPC caps trailers at
8 KiB, so a very long message is cut and an attribute over 256 bytes (a rejected
embedding's ``.value``, say) arrives as its shortened repr.

Connections: handles to the same target with the same settings share one channel
(``channels.py``, counted by reference), so they share one TCP connection and each
keeps an independent lifetime; the channel closes with the last of them.

No readiness probe at init (``channel_ready_future`` would start a polling thread
that outlives the call): the first RPC, OpenSession, runs with
``wait_for_ready=False`` and the deadline, which fails just as fast and proves more.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Self, TypeVar

import grpc

from dspex_actors import failpoints, vartypes
from dspex_actors.bridge import embedded
from dspex_actors.bridge.client import channels
from dspex_actors.bridge.client.cache import ABSENT, MISS, SCALARS, RecordCache
from dspex_actors.bridge.client.calls import StreamedStub
from dspex_actors.bridge.client.watch import WATCH_DEADLINE, RemoteSubscription
from dspex_actors.bridge.env import ADDRESS_ENV, TOKEN_ENV
from dspex_actors.bulk import BULK_ITEMS, gc_paused
from dspex_actors.errors import (
    BridgeUnavailable,
    OutcomeUnknown,
    PartialFailure,
    SessionClosed,
    SessionNotFound,
    StateError,
    ValidationError,
    VersionConflict,
)
from dspex_actors.exports import ExportColumns, check_shape, columns_of, export_of
from dspex_actors.limits import check_session_id
from dspex_actors.provider import StateProvider
from dspex_actors.records import VariableRecord, check_pattern, variable_not_found
from dspex_actors.session import new_session_id
from dspex_actors.streaming import Subscriber
from dspex_actors.v1 import session_store_pb2 as pb
from dspex_actors.v1 import session_store_pb2_grpc as pb_grpc
from dspex_actors.wire import codec
from dspex_actors.wire import status as wire_status
from dspex_actors.wire.columns import columns_from_message, columns_to_message
from dspex_actors.wire.tls import read_pem

__all__ = ["ADDRESS_ENV", "TOKEN_ENV", "BridgedState"]

logger = logging.getLogger(__name__)

_Response = TypeVar("_Response")

_FIRST_PAUSE = 0.01
_MAX_PAUSE = 0.25
"""Backoff between retries of a call (seconds), doubling from the first to the max."""


class BridgedState(StateProvider):
    """A session held by a SessionStore (another process, or the embedded server).

    The handle that created the session owns it: its :meth:`cleanup` closes the
    session on the server (that incarnation only). A handle that attached to an
    existing session only detaches. After cleanup every call raises
    ``SessionClosed`` without a round trip.

    Failures a caller can act on: every write carries a request id, and a write
    whose attempt failed in transport is sent again with the same id within the
    call's deadline, so the server applies it once. When no attempt could have
    reached the server the call raises ``BridgeUnavailable`` (not applied); when
    one could have and none answered, ``OutcomeUnknown``. Reads retry likewise and
    raise ``BridgeUnavailable``.
    """

    kind: ClassVar[str] = "bridged"

    def __init__(
        self,
        *,
        shared: channels.Shared,
        address: str,
        session_id: str,
        timeout: float,
        token: str | None,
        max_message_bytes: int,
        embedded_server: bool,
        stream: bool = True,
    ) -> None:
        """Wrap a channel; use :meth:`init`, which opens the session."""
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
        stub = pb_grpc.SessionStoreStub(shared.channel)
        self._stub = StreamedStub(stub, shared.calls(self._metadata)) if stream else stub
        self._max_bytes = max_message_bytes
        self._embedded = embedded_server
        self._closed = False
        self._lock = threading.Lock()
        self._cache: RecordCache | None = None
        self._cache_feed: RemoteSubscription | None = None
        self._subscriptions: list[RemoteSubscription] = []  # closed with the handle

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
        **backend_opts: Any,
    ) -> Self:
        """Open ``session_id`` on a SessionStore, creating it if absent (``create``).

        Creating makes this handle the owner; with ``create=False`` it only attaches
        (``SessionNotFound`` if absent). ``pending`` creates the session invisible to
        others until :meth:`commit` (a migration's copy). ``address`` defaults to
        ``$DSPEX_BRIDGE_ADDRESS`` (with ``$DSPEX_BRIDGE_TOKEN``), else the embedded
        in-process server. ``tls_root_cert`` (PEM bytes or a path) switches on TLS.
        ``existing_state`` is imported in one RPC; if that fails, a session this call
        created is closed again. ``BridgeUnavailable`` within ``timeout`` when the
        server cannot be reached; a bad ``session_id`` is a ``ValidationError``.
        ``cache`` keeps a coherent copy of the session, fed by a Watch stream, and
        answers reads from it (:mod:`dspex_actors.bridge.client.cache`). ``stream`` sends the
        frequent calls (get, set, batches, register, delete, list, heartbeat) on one
        long-lived stream the handles of a channel share, about half a unary call's
        cost (:mod:`dspex_actors.bridge.client.calls`); ``stream=False`` makes every call a
        unary RPC.
        """
        if backend_opts:
            raise TypeError(f"BridgedState.init got unknown options: {', '.join(backend_opts)}")
        if session_id is not None:
            check_session_id(session_id)
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        if address is None and os.environ.get(ADDRESS_ENV):
            address = os.environ[ADDRESS_ENV]
            token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        root_cert = read_pem(tls_root_cert) if tls_root_cert is not None else None
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
        handle = cls(
            shared=shared,
            address=address,
            session_id=session_id or new_session_id(),
            timeout=timeout,
            token=token,
            max_message_bytes=max_message_bytes,
            embedded_server=use_embedded,
            stream=stream,
        )
        try:
            opened = handle._call(
                handle._stub.OpenSession,
                pb.OpenSessionRequest(
                    session_id=handle.session_id,
                    create_if_missing=create,
                    pending=pending,
                    request_id=_request_id(),
                ),
            )
            handle.owner = opened.created
            handle.incarnation = opened.incarnation
            handle.ttl_seconds = opened.ttl_seconds or None
            handle.store = opened.store
            shared.heard_limit(opened.max_calls_per_connection)
            if existing_state is not None:
                handle.import_state(existing_state)
            if cache:
                handle.enable_cache()
        except BaseException:
            handle.cleanup()
            raise
        return handle

    def enable_cache(self) -> None:
        """Follow the session with a Watch stream and answer reads from a copy of
        its records (what ``init(cache=True)`` does); idempotent."""
        if self._cache is not None:
            return
        start = self.session_info()["next_sequence"]
        cache = RecordCache(lambda: self._server_listing(None), self._server_record, start)
        open_stream, give_back = self._watch_stream()
        self._cache = cache
        self._cache_feed = RemoteSubscription(
            open_stream,
            self.session_id,
            None,
            cache.on_event,
            start,
            self._max_bytes,
            on_connect=cache.connected,
            on_disconnect=cache.disconnected,
            on_end=give_back,
        )

    def _watch_stream(self) -> tuple[Callable[[pb.WatchRequest], Any], Callable[[], None]]:
        """How to open this session's Watch stream, on a connection that carries only
        watches, and the function that gives that place back once the watch ends."""
        try:
            channel, give_back = self._shared.watch_channel()
        except ValueError:  # released: this handle was cleaned up (meanwhile)
            raise self._closed_error() from None
        watch, metadata = pb_grpc.SessionStoreStub(channel).Watch, self._metadata

        def open_stream(request: pb.WatchRequest) -> Any:
            return watch(request, timeout=WATCH_DEADLINE, metadata=metadata)

        return open_stream, give_back

    def sync_cache(self, timeout: float | None = None) -> None:
        """Wait until the cache holds every change the server had made when this was
        called (a barrier: after another process's write returned and it said so,
        ``sync_cache()`` then a read sees that write). ``StateError`` after
        ``timeout`` (default: the handle's) or when the handle keeps no cache."""
        cache = self._cache
        if cache is None:
            raise StateError(f"session {self.session_id!r}: this handle keeps no cache")
        sequence = self.session_info()["next_sequence"]
        wait = self._timeout if timeout is None else timeout
        if not cache.wait_until(sequence, wait):
            raise StateError(
                f"session {self.session_id!r}: the cache did not catch up within {wait}s"
            )

    @property
    def cached(self) -> bool:
        """Whether reads are answered from this handle's copy right now."""
        return self._cache is not None and self._cache.live

    # -- plumbing -------------------------------------------------------------------------

    def _call(
        self,
        rpc: grpc.UnaryUnaryMultiCallable,
        request: Any,
        *,
        write: bool = False,
        retry: bool = True,
    ) -> Any:
        """Run one RPC within the deadline; the one place gRPC errors are translated.

        A transport failure (UNAVAILABLE, DEADLINE_EXCEEDED without an answer from
        the server) is retried with the same request until the deadline (unless
        ``retry`` is False); a write's request carries its request id, so the server
        applies it once.
        """
        if self._closed:
            raise self._closed_error()
        deadline = time.monotonic() + self._timeout
        pause = _FIRST_PAUSE
        maybe_sent = False
        while True:
            left = deadline - time.monotonic()
            try:
                return rpc(request, timeout=max(left, 0.001), metadata=self._metadata)
            except grpc.RpcError as exc:
                error = wire_status.error_from_rpc(exc, self.address)
                # Worth another attempt: the server was not reached, or did not start
                # the call in time (its BridgeUnavailable: not applied), or no answer
                # came. Only a failure of the transport may hide an applied write.
                if not isinstance(error, BridgeUnavailable):
                    raise error from exc
                if not wire_status.answered_by_server(exc):
                    maybe_sent = True  # the transport cannot say it was not sent
                left = deadline - time.monotonic()
                if not retry or left <= pause or self._closed:
                    raise self._failed(write, maybe_sent, error) from exc
            except ValueError as exc:
                # grpcio refuses calls on a channel closed meanwhile with a ValueError;
                # our own flag, not its text, tells that this is what happened.
                if self._closed:
                    raise self._closed_error() from exc
                raise
            time.sleep(pause)  # a retry's backoff, bounded by the call's deadline
            pause = min(pause * 2, _MAX_PAUSE)

    def _failed(self, write: bool, maybe_sent: bool, error: StateError) -> StateError:
        """What a call that never got an answer raises."""
        if self._closed:
            return self._closed_error()
        if write and maybe_sent:
            return OutcomeUnknown(
                f"SessionStore at {self.address} did not answer within {self._timeout}s; the "
                f"write to session {self.session_id!r} may or may not have been applied "
                f"(last failure: {error})",
                session_id=self.session_id,
            )
        if isinstance(error, BridgeUnavailable):
            return error
        return BridgeUnavailable(f"{error} (not applied)", session_id=self.session_id)

    def _closed_error(self) -> SessionClosed:
        return SessionClosed(f"session {self.session_id!r}: this handle is cleaned up")

    def _unpack(self, data: bytes, what: str) -> Any:
        return codec.unpack(data, max_bytes=self._max_bytes, what=what)

    # -- reads ----------------------------------------------------------------------------

    def get_variable(self, identifier: str) -> Any:
        cache = self._cache
        if cache is not None:
            if cache.serving and not cache.expected and type(identifier) is str:
                # The hot path, inline: two dict lookups on records never changed.
                record = cache.by_id.get(cache.ids.get(identifier, identifier))
                if record is not None and type(record.value) in SCALARS:
                    return record.value
            value = cache.value(identifier)
            if value is not MISS:
                if value is ABSENT:
                    raise variable_not_found(identifier, self.session_id)
                return value
        response = self._call(self._stub.GetVariable, self._get_request(identifier, full=False))
        if cache is not None:  # the server was newer than the copy: never read older again
            cache.expect(identifier, response.version)
        return self._unpack(response.value, "value")

    def get_record(self, identifier: str) -> VariableRecord:
        """One variable's record (GetVariable with ``full``, or the cache)."""
        cache = self._cache
        if cache is not None:
            cached = cache.record(identifier)
            if cached is None:
                raise variable_not_found(identifier, self.session_id)
            if cached is not MISS:
                record: VariableRecord = cached
                return record
        return self._server_record(identifier)

    def _server_record(self, identifier: str) -> VariableRecord:
        response = self._call(self._stub.GetVariable, self._get_request(identifier, full=True))
        cache = self._cache
        if cache is not None:  # never read older than the server said, again
            cache.expect(identifier, response.version)
        return self._record(response.record)

    def _get_request(self, identifier: str, *, full: bool) -> pb.GetVariableRequest:
        if not isinstance(identifier, str):
            raise variable_not_found(identifier, self.session_id)
        try:
            return pb.GetVariableRequest(
                session_id=self.session_id, identifier=identifier, full=full
            )
        except UnicodeEncodeError:  # not UTF-8 (a lone surrogate): no name can be that
            raise variable_not_found(identifier, self.session_id) from None

    def _record(self, v: pb.Variable) -> VariableRecord:
        unpack = self._unpack
        return VariableRecord(
            v.id,
            v.name,
            v.type,
            unpack(v.value, "value"),
            unpack(v.constraints, "constraints"),
            unpack(v.metadata, "metadata"),
            v.version,
            v.created_at,
            v.last_updated_at,
        )

    def get_variables(self, identifiers: Iterable[str]) -> dict[str, Any]:
        wanted = [i for i in identifiers if isinstance(i, str)]  # others cannot exist
        cache = self._cache
        if cache is not None:
            cached = cache.values(wanted)
            if cached is not MISS:
                found: dict[str, Any] = cached
                return found
        try:
            request = pb.GetVariablesRequest(session_id=self.session_id, identifiers=wanted)
        except UnicodeEncodeError:  # nor can a string that is not UTF-8
            sendable = [i for i in wanted if vartypes.utf8_encodable(i)]
            request = pb.GetVariablesRequest(session_id=self.session_id, identifiers=sendable)
        response = self._call(self._stub.GetVariables, request)
        values: dict[str, Any] = self._unpack(response.values, "values")
        return values

    def list_variables(self, pattern: str | None = None) -> list[dict[str, Any]]:
        """Every variable's record in creation order; ``pattern`` globs names server-side."""
        glob = check_pattern(pattern)
        cache = self._cache
        if cache is not None:
            cached = cache.listing(glob)
            if cached is not MISS:
                listed: list[dict[str, Any]] = cached
                return listed
        return self._server_listing(glob)

    def _server_listing(self, glob: str | None) -> list[dict[str, Any]]:
        try:
            request = pb.ListVariablesRequest(session_id=self.session_id, pattern=glob or "")
        except UnicodeEncodeError:  # not UTF-8: no name can match it
            return []
        response = self._call(self._stub.ListVariables, request)
        return [self._record(v).to_dict() for v in response.variables]

    def export_state(self) -> dict[str, Any]:
        return export_of(self._fetch_columns())  # export_of checks the shape

    def export_columns(self) -> ExportColumns:
        """The session's columns, fetched in one RPC (the compact form)."""
        columns = self._fetch_columns()
        check_shape(columns)  # the caller gets columns it can index safely
        return columns

    def _fetch_columns(self) -> ExportColumns:
        """The server's columns as decoded, their shape not yet checked."""
        response = self._call(
            self._stub.ExportSession,
            pb.ExportSessionRequest(session_id=self.session_id, columnar=True),
        )
        if response.WhichOneof("form") != "columns":  # a server that only has maps
            return columns_of(self._unpack(response.state, "exported state"))
        return columns_from_message(response.columns, max_bytes=self._max_bytes)

    # -- writes ---------------------------------------------------------------------------

    def register_variable(
        self,
        name: str,
        type: str,  # the contract's word
        initial_value: Any,
        *,
        constraints: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        description: str | None = None,
    ) -> str:
        try:
            request = pb.RegisterVariableRequest(
                session_id=self.session_id,
                name=name,
                type=type,
                initial_value=codec.pack(initial_value),
                constraints=codec.pack_map(constraints),
                description=description,
                request_id=_request_id(),
                incarnation=self.incarnation,
            )
        except (TypeError, ValueError, OverflowError) as exc:
            raise _register_error(
                name, type, initial_value, constraints, description, exc
            ) from exc
        request.metadata = _pack_metadata(name, metadata)
        response = self._call(self._stub.RegisterVariable, request, write=True)
        cache = self._cache
        if cache is not None:
            cache.expect(response.var_id, 0)
            cache.expect(name, 0)
        return str(response.var_id)

    def set_variable(
        self,
        identifier: str,
        new_value: Any,
        metadata: Mapping[str, Any] | None = None,
        *,
        expected_version: int | None = None,
    ) -> int:
        if not isinstance(identifier, str):
            raise variable_not_found(identifier, self.session_id)
        expected = vartypes.check_expected_version(identifier, expected_version)
        try:
            value = codec.pack(new_value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise _unencodable(identifier, "value", new_value, exc) from exc
        packed_metadata = _pack_metadata(identifier, metadata)
        try:
            request = pb.SetVariableRequest(
                session_id=self.session_id,
                identifier=identifier,
                value=value,
                metadata=packed_metadata,
                expected_version=expected,
                request_id=_request_id(),
                incarnation=self.incarnation,
            )
        except UnicodeEncodeError:  # the identifier is not UTF-8: no name can be that
            raise variable_not_found(identifier, self.session_id) from None
        cache = self._cache
        try:
            response = self._call(self._stub.SetVariable, request, write=True)
        except VersionConflict as exc:
            if cache is not None and isinstance(exc.actual, int):
                cache.expect(identifier, exc.actual)  # learned: never read older
            raise
        if cache is not None:
            cache.expect(identifier, response.version)
        return int(response.version)

    def update_variables(
        self, updates: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
    ) -> None:
        """Apply every update or none; ``PartialFailure`` names each failing entry.

        The batch is packed in one call. Only when that fails, or the server cannot
        read the batch (msgpack carries an int key, the server refuses it), are the
        entries examined one by one, to name each one that cannot be sent: a key
        that is not a UTF-8 string cannot name a variable (``VariableNotFound``, as
        the session actor says), a value msgpack cannot carry is a
        ``ValidationError``. Entries the server would refuse for other reasons
        (wrong type, unknown name) are not known then: nothing was sent.
        """
        if not isinstance(updates, Mapping):
            raise TypeError(f"updates must be a mapping, got {type(updates).__name__}")
        batch = dict(updates)
        try:
            payload = codec.pack(batch)
            packed_metadata = _pack_metadata("<batch>", metadata)
        except (TypeError, ValueError, OverflowError) as exc:
            raise self._batch_error(batch, metadata, exc) from exc
        except StateError as exc:  # the metadata breaks a rule: as the actor reports it
            raise PartialFailure.for_batch({"<metadata>": exc}, len(batch)) from exc
        request = pb.UpdateVariablesRequest(
            session_id=self.session_id,
            updates=payload,
            metadata=packed_metadata,
            request_id=_request_id(),
            incarnation=self.incarnation,
        )
        try:
            self._call(self._stub.UpdateVariables, request, write=True)
        except ValidationError as exc:
            if exc.rule != "encoding":
                raise
            raise self._batch_error(batch, metadata, exc) from exc
        cache = self._cache
        if cache is not None:
            # A batch answers no versions: until the copy holds every event the
            # session had when the batch returned, these are read from the server.
            cache.expect_sequence(batch, self.session_info()["next_sequence"])

    def _batch_error(self, batch: dict[Any, Any], metadata: Any, cause: Exception) -> Exception:
        """Why ``batch`` cannot be sent, entry by entry (the failure path only).

        A PartialFailure worded as the session actor words it, naming each entry
        (and ``<metadata>``) that cannot be sent; when no entry is to blame,
        ``cause`` itself, or a ValidationError about the whole batch.
        """
        errors: dict[str, StateError] = {}
        for key, value in batch.items():
            if not isinstance(key, str) or not vartypes.utf8_encodable(key):
                errors[str(key)] = variable_not_found(key, self.session_id)
                continue
            try:
                codec.pack(value)
            except (TypeError, ValueError, OverflowError) as exc:
                errors[key] = _unencodable(key, "value", value, exc)
        try:
            _pack_metadata("<batch>", metadata)
        except StateError as exc:
            errors["<metadata>"] = exc
        if errors:
            return PartialFailure.for_batch(errors, len(batch))
        if isinstance(cause, StateError):
            return cause
        return _unencodable("<batch>", "updates", batch, cause)

    def delete_variable(self, identifier: str) -> None:
        if not isinstance(identifier, str):
            raise variable_not_found(identifier, self.session_id)
        try:
            request = pb.DeleteVariableRequest(
                session_id=self.session_id,
                identifier=identifier,
                request_id=_request_id(),
                incarnation=self.incarnation,
            )
        except UnicodeEncodeError:  # not UTF-8: no name can be that
            raise variable_not_found(identifier, self.session_id) from None
        self._call(self._stub.DeleteVariable, request, write=True)
        cache = self._cache
        if cache is not None:
            cache.expect_gone(identifier)

    def import_state(self, exported: Mapping[str, Any]) -> None:
        """Import a whole export in one RPC; all or nothing, checked by the server."""
        self.import_columns(columns_of(exported))

    def import_columns(self, columns: ExportColumns) -> None:
        self._import(columns, want_digest=False)
        cache = self._cache
        if cache is not None:
            for var_id, version in zip(columns.ids, columns.versions, strict=True):
                cache.expect(var_id, version)

    def import_with_digest(self, columns: ExportColumns, *, migrating: bool = False) -> bytes:
        """Import like :meth:`import_columns`; return the server's digest of the session.

        The digest is computed from what the server stored, so comparing it with
        ``exports.columns_digest(columns)`` verifies the copy without exporting it back.
        ``migrating``: the copy continues the columns' event sequence and yields no
        events of its own (a watcher moving with the session misses nothing).
        """
        return self._import(columns, want_digest=True, migrating=migrating)

    def _import(
        self, columns: ExportColumns, *, want_digest: bool, migrating: bool = False
    ) -> bytes:
        with gc_paused(columns.variable_count >= BULK_ITEMS):
            message = columns_to_message(columns)
        response = self._call(
            self._stub.ImportSession,
            pb.ImportSessionRequest(
                session_id=self.session_id,
                columns=message,
                want_digest=want_digest,
                request_id=_request_id(),
                incarnation=self.incarnation,
                continue_sequence=columns.sequence if migrating else 0,
            ),
            write=True,
        )
        failpoints.hit("migration.import_reply")
        return bytes(response.digest)

    # -- session --------------------------------------------------------------------------

    def heartbeat(self) -> float:
        """Keep the session alive on the server; return when it would expire (epoch s).

        Every call counts as activity; a handle idle for longer than the server's TTL
        calls this to keep its session.
        """
        response = self._call(
            self._stub.Heartbeat, pb.HeartbeatRequest(session_id=self.session_id)
        )
        return float(response.expires_at)

    def subscribe(
        self, pattern: str | None, subscriber: Subscriber, *, start: int | None = None
    ) -> RemoteSubscription:
        """Deliver each change to variables whose names match ``pattern`` (a glob;
        None: all) to ``subscriber`` from the server's Watch stream, reopened after
        any outage from where it stopped (:mod:`dspex_actors.bridge.client.watch`).

        Starts at the session's current sequence (or ``start``), read in this call,
        and returns once the server holds the watch; ``BridgeUnavailable`` if it does
        not within the handle's timeout (the server is unreachable, or this channel
        already carries as many streams as the server takes on one connection).
        """
        if self._closed:
            raise self._closed_error()
        if start is None:
            start = self.session_info()["next_sequence"]
        open_stream, give_back = self._watch_stream()
        try:
            subscription = RemoteSubscription(
                open_stream,
                self.session_id,
                pattern,
                subscriber,
                start,
                self._max_bytes,
                on_end=give_back,
            )
        except BaseException:  # a bad pattern or subscriber: no watch, its place back
            give_back()
            raise
        with self._lock:
            self._subscriptions = [s for s in self._subscriptions if s.active]
            self._subscriptions.append(subscription)
        if not subscription.wait_up(self._timeout):
            subscription.close()
            raise BridgeUnavailable(
                f"SessionStore at {self.address} did not start the watch of session "
                f"{self.session_id!r} within {self._timeout}s; not subscribed (it is "
                "unreachable, or this process's watch connection already carries the "
                "streams it takes on one: rule 'max_calls_per_connection')",
                session_id=self.session_id,
            )
        return subscription

    def unsubscribe(self, subscription: Any) -> None:
        """Stop a subscription; no event is delivered once this returns."""
        if not isinstance(subscription, RemoteSubscription):
            raise TypeError(f"not a subscription of a BridgedState: {subscription!r}")
        subscription.close()

    def commit(self) -> None:
        """Make a session opened ``pending`` visible to others (idempotent)."""
        self._call(
            self._stub.CommitSession,
            pb.CommitSessionRequest(session_id=self.session_id, incarnation=self.incarnation),
            write=True,
        )

    def session_info(self) -> dict[str, Any]:
        """The server's view of the session: variable count, times, TTL, metadata."""
        info = self._call(self._stub.GetSession, pb.GetSessionRequest(session_id=self.session_id))
        return {
            "session_id": info.session_id,
            "variable_count": info.variable_count,
            "created_at": info.created_at,
            "last_active_at": info.last_active_at,
            "ttl_seconds": info.ttl_seconds,
            "metadata": self._unpack(info.metadata, "metadata") if info.metadata else {},
            "incarnation": info.incarnation,
            "next_sequence": info.next_sequence,
        }

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

    def close_remote(self) -> None:
        """Close this handle's incarnation of the session on the server now.

        ``SessionNotFound`` if it is gone (or the id names a later incarnation).
        One attempt: a session left behind by a lost reply expires with the TTL.
        """
        self._call(
            self._stub.CloseSession,
            pb.CloseSessionRequest(session_id=self.session_id, incarnation=self.incarnation),
            write=True,
            retry=False,
        )

    def __repr__(self) -> str:
        role = "owner" if self.owner else "attached"
        state = "closed" if self._closed else role
        return f"<BridgedState {self.session_id} at {self.address} ({state})>"


def _request_id() -> str:
    """A write's request id: unique, so the server can recognise its retries."""
    return uuid.uuid4().hex


def _unencodable(
    variable: str, what: str, value: Any, exc: Exception, rule: str = "type"
) -> ValidationError:
    return ValidationError(
        f"variable {variable!r}: {what} is not plain data msgpack can carry: {exc} "
        f"(rule {rule!r}, value {vartypes.describe_value(value)})",
        variable=variable,
        rule=rule,
        value=vartypes.describe_value(value),
    )


def _pack_metadata(variable: str, metadata: Any) -> bytes:
    """msgpack of metadata (None: none given); a bad one fails by the session actor's rule.

    Anything but None counts as given, so an empty non-mapping (``[]``) is refused
    like any other non-mapping.
    """
    if metadata is None:
        return b""
    checked = vartypes.check_metadata(variable, metadata)  # the canonical error, if any
    try:
        return codec.pack_map(checked)
    except (TypeError, ValueError, OverflowError) as exc:  # e.g. a string that is not UTF-8
        raise _unencodable(variable, "metadata", metadata, exc, rule="metadata") from exc


def _register_error(
    name: Any,
    type_name: Any,
    initial_value: Any,
    constraints: Any,
    description: Any,
    exc: Exception,
) -> ValidationError:
    """The error the session actor would raise for arguments that cannot be sent.

    The checks are those of ``vartypes``, so a local and a bridged session reject
    the same input with the same error (a name that is not UTF-8 fails check_name);
    what passes them but still cannot be sent is named here.
    """
    vartypes.check_name(name)
    validator = vartypes.compile_type(name, type_name, constraints)
    validator.check(name, initial_value)
    vartypes.check_description(name, description)
    try:
        codec.pack_map(constraints)
    except (TypeError, ValueError, OverflowError) as error:
        return _unencodable(name, "constraints", constraints, error, rule="constraints")
    if description is not None and not vartypes.utf8_encodable(description):
        return _unencodable(name, "description", description, exc, rule="description")
    return _unencodable(name, "value", initial_value, exc)
