"""The SessionStore server: sessions shared over gRPC, one LocalState per session.

Each session is a :class:`~dspex_actors.local.LocalState`, the in-process handle of
the same SessionActor local code uses, so validation and versioning happen in one
place and this module only translates: protobuf + msgpack in, the actor call, then
protobuf + msgpack out. Servicer methods raise ``StateError``; one decorator turns
that into a status with :func:`~dspex_actors.bridge.codec.abort_with_error`.

The server also runs the standard health service and server reflection, checks an
optional shared-secret token on every call (the health service is exempt so probes
work without the secret; reflection is not), enforces size and count limits, and
expires sessions idle for longer than their TTL.

Session actors are supervised by the same policy as the Supervisor's
(:mod:`dspex_actors.restarts`): one that dies (a bug, not a broken rule) is
restarted on its table, so the session keeps its variables; a session whose actor
dies ``max_restarts`` times within ``within_seconds`` is closed instead, with the
error logged, and ``on_restart`` hears of every restart.

Threads: gRPC's serving thread, a ThreadPoolExecutor for calls, one actor thread per
session, the TTL reaper and the restart supervisor's actor.
:meth:`SessionStoreServer.stop` stops all of them.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from dspex_actors.bridge import codec, discovery
from dspex_actors.bridge.columns import columns_from_message, columns_to_message
from dspex_actors.bulk import BULK_ITEMS, gc_paused
from dspex_actors.errors import (
    LimitExceeded,
    NotSupported,
    SessionClosed,
    SessionNotFound,
    StateError,
    Unauthenticated,
    ValidationError,
)
from dspex_actors.exports import columns_of
from dspex_actors.local import LocalState
from dspex_actors.records import VariableRecord, check_pattern
from dspex_actors.restarts import GiveUpHook, RestartHook, RestartPolicy, RestartSupervisor
from dspex_actors.session import new_session_id
from dspex_actors.v1 import session_store_pb2 as pb
from dspex_actors.v1 import session_store_pb2_grpc as pb_grpc

__all__ = ["DEFAULT_ADDRESS", "Limits", "SessionStoreServer", "read_pem", "serve"]

logger = logging.getLogger(__name__)

DEFAULT_ADDRESS = "127.0.0.1:0"
SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["SessionStore"].full_name
_HEALTH_METHODS = discovery.HEALTH_METHODS  # Check, Watch and List, all implemented
_MAX_SESSION_ID = 256


@dataclass(frozen=True)  # no slots: serve() reads the class attributes as defaults
class Limits:
    """What one server accepts; passing a limit raises LimitExceeded (RESOURCE_EXHAUSTED).

    ``max_value_bytes`` bounds one encoded value or metadata map, and each string,
    binary, array or map inside a batch payload (UpdateVariables, ImportSession);
    ``max_message_bytes`` bounds a whole gRPC message either way.
    """

    max_sessions: int = 10_000
    max_variables_per_session: int = 100_000
    max_value_bytes: int = 1 << 20
    max_message_bytes: int = codec.DEFAULT_MAX_MESSAGE_BYTES


@dataclass(slots=True)
class _Session:
    """A session held by the server: its LocalState and bookkeeping.

    Also the restart supervisor's child: giving up on it closes the session.
    """

    state: LocalState
    created_at: float  # epoch seconds
    opened: float  # the server's clock at created_at
    last_active: float  # the server's clock
    close: Callable[[StateError], None]  # removes it from the server and stops it
    # Serializes the calls that change the variable count (register, delete, import)
    # so the count and its limit stay exact; get/set never take it.
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def session_id(self) -> str:
        return self.state.session_id

    def needs_restart(self) -> bool:
        return not self.state.alive

    def restart(self) -> None:
        self.state.restart()

    def give_up(self, error: StateError) -> None:
        self.close(error)


_Request = TypeVar("_Request")
_Response = TypeVar("_Response")
_Method = Callable[[Any, _Request, grpc.ServicerContext], _Response]


def _rpc(method: _Method[_Request, _Response]) -> _Method[_Request, _Response]:
    """Turn a StateError raised by a servicer method into its gRPC status."""

    @functools.wraps(method)
    def call(self: Any, request: _Request, context: grpc.ServicerContext) -> _Response:
        try:
            return method(self, request, context)
        except SessionClosed as exc:
            # Closed or reaped while this call was in flight: to the caller the
            # session is simply gone. (A session still listed has a dead actor: that
            # stays SessionClosed.)
            session_id = getattr(request, "session_id", "")
            gone = session_id not in self._sessions
            codec.abort_with_error(context, _not_found(session_id) if gone else exc)
        except StateError as exc:
            codec.abort_with_error(context, exc)
        except Exception as exc:
            logger.exception("SessionStore.%s failed", method.__name__)
            codec.abort_with_error(
                context,
                StateError(f"internal error in {method.__name__}: {type(exc).__name__}: {exc}"),
            )

    return call


def _not_found(session_id: str) -> SessionNotFound:
    return SessionNotFound(
        f"session {session_id!r} not found (never opened, closed or expired)",
        session_id=session_id,
    )


class _SessionStoreServicer(pb_grpc.SessionStoreServicer):
    """The SessionStore RPCs; see proto/dspex_actors/v1/session_store.proto."""

    def __init__(
        self,
        limits: Limits,
        session_ttl: float,
        clock: Callable[[], float],
        policy: RestartPolicy,
        on_restart: RestartHook | None,
        on_give_up: GiveUpHook | None,
    ) -> None:
        self._limits = limits
        self._ttl = session_ttl
        self._clock = clock
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()  # guards adding and removing sessions
        # Restarts are decided there, one at a time, not in the dying actor's thread.
        self._restarts = RestartSupervisor.start_supervisor(
            policy, on_restart=on_restart, on_give_up=on_give_up, clock=clock, what="session"
        )

    # -- session bookkeeping ------------------------------------------------------------

    def _session(self, session_id: str) -> _Session:
        """The live session, marked active now; SessionNotFound if absent."""
        entry = self._sessions.get(session_id)
        if entry is None:
            raise _not_found(session_id)
        entry.last_active = self._clock()
        return entry

    def _value(self, data: bytes, variable: str) -> Any:
        return codec.unpack(
            data, max_bytes=self._limits.max_value_bytes, what="value", variable=variable
        )

    def _map(self, data: bytes, what: str, variable: str | None = None) -> dict[str, Any] | None:
        return codec.unpack_map(
            data, max_bytes=self._limits.max_value_bytes, what=what, variable=variable
        )

    def _batch(self, data: bytes, what: str) -> Any:
        return codec.unpack(
            data,
            max_bytes=self._limits.max_message_bytes,
            max_item_bytes=self._limits.max_value_bytes,
            what=what,
        )

    def _check_room(self, entry: _Session, adding: int) -> None:
        limit = self._limits.max_variables_per_session
        held = entry.state.variable_count
        if held + adding > limit:
            raise LimitExceeded(
                f"session {entry.state.session_id!r} holds {held} variables; "
                f"adding {adding} would pass the limit of {limit}",
                limit="max_variables_per_session",
            )

    def reap_expired(self) -> list[str]:
        """Close every session idle for at least the TTL; return their ids."""
        now = self._clock()
        with self._lock:
            expired = [
                sid
                for sid, entry in self._sessions.items()
                if now - entry.last_active >= self._ttl
            ]
            entries = [self._sessions.pop(sid) for sid in expired]
        for entry in entries:
            self._restarts.forget(entry.session_id)
            if _close(entry, "expired"):
                logger.info(
                    "session %s expired after %.3gs without activity",
                    entry.state.session_id,
                    self._ttl,
                )
        return expired

    def close_all(self) -> None:
        """Stop the restart supervisor and close every session (the server is stopping).

        A session that fails to close is logged and the others are still closed.
        """
        self._restarts.stop(timeout=60.0)
        with self._lock:
            entries = list(self._sessions.values())
            self._sessions.clear()
        for entry in entries:
            _close(entry, "closed at shutdown")

    # -- supervision ----------------------------------------------------------------------

    def _give_up(self, session_id: str, error: StateError) -> None:
        """Close a session whose actor died too often (the restart supervisor decided)."""
        with self._lock:
            entry = self._sessions.pop(session_id, None)
        if entry is not None:
            _close(entry, f"closed after repeated crashes: {error}")

    def session_state(self, session_id: str) -> LocalState:
        """The LocalState holding a session (without marking it active)."""
        entry = self._sessions.get(session_id)
        if entry is None:
            raise _not_found(session_id)
        return entry.state

    # -- sessions -------------------------------------------------------------------------

    @_rpc
    def OpenSession(  # noqa: N802 - the proto's RPC name
        self, request: pb.OpenSessionRequest, context: grpc.ServicerContext
    ) -> pb.OpenSessionResponse:
        session_id = request.session_id or new_session_id()
        if len(session_id) > _MAX_SESSION_ID:
            raise ValidationError(
                f"session id is {len(session_id)} characters, over the limit of "
                f"{_MAX_SESSION_ID} (rule 'session_id')",
                rule="session_id",
                value=session_id[:_MAX_SESSION_ID] + "...",
            )
        metadata = self._map(request.metadata, "metadata", "<session>")
        with self._lock:
            entry = self._sessions.get(session_id)
            if entry is not None:
                entry.last_active = self._clock()
                return pb.OpenSessionResponse(session_id=session_id, created=False)
            if not request.create_if_missing:
                raise _not_found(session_id)
            if len(self._sessions) >= self._limits.max_sessions:
                raise LimitExceeded(
                    f"the server holds {len(self._sessions)} sessions, the limit; "
                    f"cannot open {session_id!r}",
                    limit="max_sessions",
                )
            # The session's metadata lives in its table (one store: GetSession and
            # ExportSession report the same), set by importing an empty export.
            opening = {"session_id": session_id, "variables": {}, "variable_index": {}}
            state = LocalState.init(
                session_id=session_id,
                existing_state={**opening, "metadata": metadata or {}},
                on_exit=self._restarts.exited,
            )
            now = self._clock()
            entry = _Session(
                state=state,
                created_at=time.time(),
                opened=now,
                last_active=now,
                close=functools.partial(self._give_up, session_id),
            )
            self._sessions[session_id] = entry
        self._restarts.watch(entry)
        logger.debug("session %s opened", session_id)
        return pb.OpenSessionResponse(session_id=session_id, created=True)

    @_rpc
    def CloseSession(  # noqa: N802 - the proto's RPC name
        self, request: pb.CloseSessionRequest, context: grpc.ServicerContext
    ) -> pb.CloseSessionResponse:
        with self._lock:
            entry = self._sessions.pop(request.session_id, None)
        if entry is None:
            raise _not_found(request.session_id)
        self._restarts.forget(entry.session_id)
        entry.state.cleanup()
        logger.debug("session %s closed", request.session_id)
        return pb.CloseSessionResponse()

    @_rpc
    def GetSession(  # noqa: N802 - the proto's RPC name
        self, request: pb.GetSessionRequest, context: grpc.ServicerContext
    ) -> pb.SessionInfo:
        entry = self._sessions.get(request.session_id)
        if entry is None:
            raise _not_found(request.session_id)
        # The activity before this call (which counts as activity too), on the wall
        # clock: the server's clock only measures intervals.
        last_active_at = entry.created_at + (entry.last_active - entry.opened)
        entry.last_active = self._clock()
        return pb.SessionInfo(
            session_id=request.session_id,
            variable_count=entry.state.variable_count,
            created_at=entry.created_at,
            last_active_at=last_active_at,
            ttl_seconds=self._ttl,
            metadata=codec.pack_map(entry.state.session_metadata),
        )

    @_rpc
    def Heartbeat(  # noqa: N802 - the proto's RPC name
        self, request: pb.HeartbeatRequest, context: grpc.ServicerContext
    ) -> pb.HeartbeatResponse:
        self._session(request.session_id)
        return pb.HeartbeatResponse(expires_at=time.time() + self._ttl)

    # -- variables ------------------------------------------------------------------------

    @_rpc
    def RegisterVariable(  # noqa: N802 - the proto's RPC name
        self, request: pb.RegisterVariableRequest, context: grpc.ServicerContext
    ) -> pb.RegisterVariableResponse:
        entry = self._session(request.session_id)
        name = request.name
        value = self._value(request.initial_value, name)
        constraints = self._map(request.constraints, "constraints", name)
        metadata = self._map(request.metadata, "metadata", name)
        description = request.description if request.HasField("description") else None
        with entry.lock:
            self._check_room(entry, 1)
            var_id = entry.state.register_variable(
                name,
                request.type,
                value,
                constraints=constraints,
                metadata=metadata,
                description=description,
            )
        return pb.RegisterVariableResponse(var_id=var_id)

    @_rpc
    def GetVariable(  # noqa: N802 - the proto's RPC name
        self, request: pb.GetVariableRequest, context: grpc.ServicerContext
    ) -> pb.GetVariableResponse:
        entry = self._session(request.session_id)
        record = entry.state.get_record(request.identifier)
        return pb.GetVariableResponse(
            value=codec.pack(record.value),
            version=record.version,
            record=_variable_message(record) if request.full else None,
        )

    @_rpc
    def SetVariable(  # noqa: N802 - the proto's RPC name
        self, request: pb.SetVariableRequest, context: grpc.ServicerContext
    ) -> pb.SetVariableResponse:
        entry = self._session(request.session_id)
        identifier = request.identifier
        value = self._value(request.value, identifier)
        metadata = self._map(request.metadata, "metadata", identifier)
        expected = request.expected_version if request.HasField("expected_version") else None
        version = entry.state.set_variable(identifier, value, metadata, expected_version=expected)
        return pb.SetVariableResponse(version=version)

    @_rpc
    def GetVariables(  # noqa: N802 - the proto's RPC name
        self, request: pb.GetVariablesRequest, context: grpc.ServicerContext
    ) -> pb.GetVariablesResponse:
        entry = self._session(request.session_id)
        values = entry.state.get_variables(request.identifiers)
        return pb.GetVariablesResponse(values=codec.pack(values))

    @_rpc
    def UpdateVariables(  # noqa: N802 - the proto's RPC name
        self, request: pb.UpdateVariablesRequest, context: grpc.ServicerContext
    ) -> pb.UpdateVariablesResponse:
        entry = self._session(request.session_id)
        updates = self._batch(request.updates, "updates")
        if not isinstance(updates, dict):
            raise ValidationError(
                f"updates must be a msgpack map (rule 'type', value {type(updates).__name__})",
                rule="type",
                value=type(updates).__name__,
            )
        metadata = self._map(request.metadata, "metadata", "<batch>")
        entry.state.update_variables(updates, metadata)
        return pb.UpdateVariablesResponse()

    @_rpc
    def ListVariables(  # noqa: N802 - the proto's RPC name
        self, request: pb.ListVariablesRequest, context: grpc.ServicerContext
    ) -> pb.ListVariablesResponse:
        entry = self._session(request.session_id)
        records = entry.state.list_variables(check_pattern(request.pattern))
        return pb.ListVariablesResponse(
            variables=[_variable_message(VariableRecord.from_dict(r)) for r in records]
        )

    @_rpc
    def DeleteVariable(  # noqa: N802 - the proto's RPC name
        self, request: pb.DeleteVariableRequest, context: grpc.ServicerContext
    ) -> pb.DeleteVariableResponse:
        entry = self._session(request.session_id)
        with entry.lock:
            entry.state.delete_variable(request.identifier)
        return pb.DeleteVariableResponse()

    @_rpc
    def ExportSession(  # noqa: N802 - the proto's RPC name
        self, request: pb.ExportSessionRequest, context: grpc.ServicerContext
    ) -> pb.ExportSessionResponse:
        entry = self._session(request.session_id)
        if request.columnar:
            return pb.ExportSessionResponse(
                columns=columns_to_message(entry.state.export_columns())
            )
        return pb.ExportSessionResponse(state=codec.pack(entry.state.export_state()))

    @_rpc
    def ImportSession(  # noqa: N802 - the proto's RPC name
        self, request: pb.ImportSessionRequest, context: grpc.ServicerContext
    ) -> pb.ImportSessionResponse:
        entry = self._session(request.session_id)
        if request.WhichOneof("form") == "columns":
            count = len(request.columns.ids)
            self._check_room(entry, count)  # before decoding; again under the lock
            with gc_paused(count >= BULK_ITEMS):
                imported = columns_from_message(
                    request.columns,
                    max_bytes=self._limits.max_message_bytes,
                    max_item_bytes=self._limits.max_value_bytes,
                )
        else:
            with gc_paused(len(request.state) >= BULK_ITEMS * 1000):
                exported = self._batch(request.state, "exported state")
            imported = columns_of(exported)
            count = imported.variable_count
        with entry.lock:
            self._check_room(entry, count)
            entry.state.import_columns(imported)  # checks everything, then applies
            digest = entry.state.digest() if request.want_digest else b""
        return pb.ImportSessionResponse(count=count, digest=digest)

    @_rpc
    def Watch(  # noqa: N802 - the proto's RPC name
        self, request: pb.WatchRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.VariableEvent]:
        self._session(request.session_id)
        raise NotSupported("this SessionStore does not stream changes yet (Watch)")


def _variable_message(record: VariableRecord) -> pb.Variable:
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


def _close(entry: _Session, why: str) -> bool:
    """Stop a session's actor; a failure is logged, not raised (others still close)."""
    try:
        entry.state.cleanup()
    except Exception:
        logger.exception("session %s (%s): closing its actor failed", entry.state.session_id, why)
        return False
    return True


class _TokenCheck(grpc.ServerInterceptor):
    """Refuse every call without ``authorization: Bearer <token>`` (health excepted)."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        if details.method in _HEALTH_METHODS:
            return continuation(details)
        for key, value in details.invocation_metadata or ():
            if key == "authorization":
                given = value if isinstance(value, bytes) else value.encode()
                if hmac.compare_digest(given, self._expected):
                    return continuation(details)
                break
        handler = continuation(details)
        return None if handler is None else _refusal(handler, details.method)


def _refusal(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that answers UNAUTHENTICATED.

    It never deserializes the request: unauthenticated bytes are not parsed.
    """
    error = Unauthenticated(f"{method}: missing or wrong token (authorization: Bearer <token>)")

    def refuse(request: Any, context: grpc.ServicerContext) -> Any:
        codec.abort_with_error(context, error)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse)
    return grpc.unary_unary_rpc_method_handler(refuse)


def _is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_pem(source: bytes | str | os.PathLike[str]) -> bytes:
    """PEM bytes given as such, or read from a path."""
    if isinstance(source, bytes):
        return source
    with open(source, "rb") as file:
        return file.read()


class SessionStoreServer:
    """A running SessionStore; stop it with :meth:`stop` or a ``with`` block.

    ``address`` is ``host:port`` with the real port (useful after binding ``:0``).
    """

    def __init__(
        self,
        address: str,
        *,
        token: str | None,
        tls_cert: bytes | str | os.PathLike[str] | None,
        tls_key: bytes | str | os.PathLike[str] | None,
        session_ttl: float,
        limits: Limits,
        max_workers: int | None,
        clock: Callable[[], float],
        allow_remote_without_token: bool,
        restart_policy: RestartPolicy,
        on_restart: RestartHook | None,
        on_give_up: GiveUpHook | None,
    ) -> None:
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"listen address must be HOST:PORT, got {address!r}")
        if token is None and not allow_remote_without_token and not _is_loopback(host):
            raise ValueError(
                f"refusing to listen on {address!r} without a token: only loopback "
                "addresses are served unauthenticated (give a token, or "
                "allow_remote_without_token=True)"
            )
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("TLS needs both tls_cert and tls_key")
        if session_ttl <= 0:
            raise ValueError(f"session_ttl must be positive, got {session_ttl!r}")
        self.limits = limits
        self.session_ttl = session_ttl
        self.tls = tls_cert is not None
        self._servicer = _SessionStoreServicer(
            limits, session_ttl, clock, restart_policy, on_restart, on_give_up
        )
        self._health = discovery.HealthServicer()
        self._executor = futures.ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="dspex-bridge"
        )
        self._server = grpc.server(
            self._executor,
            interceptors=[_TokenCheck(token)] if token is not None else None,
            options=[
                ("grpc.max_send_message_length", limits.max_message_bytes),
                ("grpc.max_receive_message_length", limits.max_message_bytes),
                # Without this a second server could bind the same port silently.
                ("grpc.so_reuseport", 0),
            ],
        )
        pb_grpc.add_SessionStoreServicer_to_server(self._servicer, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        discovery.enable_reflection(self._server, (SERVICE_NAME, health.SERVICE_NAME))
        reason: Exception | None = None
        try:
            if tls_cert is not None and tls_key is not None:
                credentials = grpc.ssl_server_credentials(
                    [(read_pem(tls_key), read_pem(tls_cert))]
                )
                bound = self._server.add_secure_port(address, credentials)
            else:
                bound = self._server.add_insecure_port(address)
        except RuntimeError as exc:  # grpcio reports a failed bind this way
            bound, reason = 0, exc
        if not bound:
            self._executor.shutdown()
            self._servicer.close_all()
            raise OSError(f"could not listen on {address!r}: {reason or 'bind failed'}")
        self.address = f"{host}:{bound}"
        self._stop_lock = threading.Lock()
        self._stopping = threading.Event()  # stop() began; wakes the reaper
        self._stopped = threading.Event()  # stop() finished
        # gRPC starts a serving thread of its own (and, on a graceful stop, a grace
        # timer); both end once the shutdown stop() waits for has completed, which
        # tests/test_bridge_server.py checks without naming them.
        self._server.start()
        self._health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        self._reaper = threading.Thread(
            target=self._reap_until_stopped,
            args=(min(max(session_ttl / 4, 0.01), 60.0),),
            name="dspex-bridge-reaper",
            daemon=True,
        )
        self._reaper.start()

    def reap_expired(self) -> list[str]:
        """Close the sessions idle for the TTL now; the reaper thread also does this."""
        return self._servicer.reap_expired()

    def session_state(self, session_id: str) -> LocalState:
        """The LocalState holding a session here (for supervision tools and tests).

        ``SessionNotFound`` when the server holds no such session.
        """
        return self._servicer.session_state(session_id)

    def _reap_until_stopped(self, interval: float) -> None:
        while not self._stopping.wait(interval):
            try:
                self._servicer.reap_expired()
            except Exception:  # keep reaping; a failure to stop one actor is logged
                logger.exception("reaping expired sessions failed")

    def stop(self, grace: float | None = None) -> None:
        """Stop serving; idempotent.

        New calls are refused at once; calls in flight get ``grace`` seconds to
        finish (``None``: cancelled now). Then every session is closed and every
        thread the server started is stopped. Health reports NOT_SERVING meanwhile.
        """
        with self._stop_lock:
            first = not self._stopping.is_set()
            self._stopping.set()
        if not first:  # another caller is stopping it: wait for that to finish
            self._stopped.wait()
            return
        self._health.enter_graceful_shutdown()
        self._server.stop(grace).wait()
        self._reaper.join()
        self._executor.shutdown(wait=True)
        self._servicer.close_all()
        self._stopped.set()

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        """Block until :meth:`stop` has finished (or ``timeout`` passes); True if it has."""
        return self._stopped.wait(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "stopped" if self._stopping.is_set() else "serving"
        return f"<SessionStoreServer {self.address} ({state})>"


def serve(
    address: str = DEFAULT_ADDRESS,
    *,
    token: str | None = None,
    tls_cert: bytes | str | os.PathLike[str] | None = None,
    tls_key: bytes | str | os.PathLike[str] | None = None,
    session_ttl: float = 3600.0,
    max_sessions: int = Limits.max_sessions,
    max_variables_per_session: int = Limits.max_variables_per_session,
    max_value_bytes: int = Limits.max_value_bytes,
    max_message_bytes: int = Limits.max_message_bytes,
    max_workers: int | None = None,
    clock: Callable[[], float] = time.monotonic,
    allow_remote_without_token: bool = False,
    max_restarts: int = RestartPolicy.max_restarts,
    within_seconds: float = RestartPolicy.within_seconds,
    on_restart: RestartHook | None = None,
    on_give_up: GiveUpHook | None = None,
) -> SessionStoreServer:
    """Start a SessionStore on ``address`` (loopback, ephemeral port by default).

    ``token``: every call must carry ``authorization: Bearer <token>`` (health is
    exempt). ``tls_cert``/``tls_key`` (PEM bytes or paths) switch on TLS. Sessions
    idle for ``session_ttl`` seconds are closed; ``clock`` (monotonic seconds) is
    injectable so tests expire sessions without waiting. A non-loopback address
    needs a token unless ``allow_remote_without_token``. A session whose actor dies
    is restarted unless it died ``max_restarts`` times within ``within_seconds``
    (then it is closed); ``on_restart(session_id, error)`` hears each restart and
    ``on_give_up(session_id, failure)`` each session closed that way.
    Returns the running server.
    """
    return SessionStoreServer(
        address,
        token=token,
        tls_cert=tls_cert,
        tls_key=tls_key,
        session_ttl=session_ttl,
        limits=Limits(
            max_sessions=max_sessions,
            max_variables_per_session=max_variables_per_session,
            max_value_bytes=max_value_bytes,
            max_message_bytes=max_message_bytes,
        ),
        max_workers=max_workers,
        clock=clock,
        allow_remote_without_token=allow_remote_without_token,
        restart_policy=RestartPolicy(max_restarts, within_seconds),
        on_restart=on_restart,
        on_give_up=on_give_up,
    )
