"""The SessionStore server: sessions shared over gRPC, served from a store.

:func:`serve` starts one. It runs ``grpc.aio`` on an event loop in a thread of its
own (``dspex-bridge-loop``): the RPCs (``servicer.py``) are coroutines, so a call
waiting for its request body, its session's actor, or (later) a change to watch
costs no thread, and a stalled client cannot exhaust a worker pool — there is
none. The sessions live in a :class:`~dspex_actors.stores.Store` (the memory store,
one SessionActor per session, by default; a SQLite file; or Redis).

Admission (``admission.py``): at most ``Limits.max_concurrent_calls`` calls run at
once (more are refused with RESOURCE_EXHAUSTED at once) and each connection may
open at most ``Limits.max_calls_per_connection`` streams. With a token, a call
without it is refused from its headers alone: the refusal never waits for, or
parses, a body. The standard health service (exempt from the token, so probes
need no secret) and server reflection (v1 and v1alpha) are served beside the
SessionStore.

Observability: a structured log line (``logs.py``, logger ``dspex_actors.server``)
for each session lifecycle event and each refused call; with ``metrics=HOST:PORT``
the server counts calls, refusals, sessions, watches and its store
(``metrics.py``) and serves them in Prometheus' text format (``exposition.py``,
the ``metrics`` extra).

Sessions idle for longer than the TTL expire. Session actors are supervised by the
policy the Supervisor uses (:mod:`dspex_actors.restarts`).

Threads: the loop's thread, gRPC's own poller (which ends shortly after the last
server or channel of the process closes), one actor thread per session, the
restart supervisor's actor, the loop's executor for work that blocks (closing
sessions, decoding large imports), and with metrics the scrape endpoint's thread
(and one per scrape under way). :meth:`SessionStoreServer.stop` stops them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import ipaddress
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Self, TypeVar

import grpc

from dspex_actors.bridge.server import discovery, lifecycle
from dspex_actors.bridge.server.admission import Admission
from dspex_actors.bridge.server.metrics import ServerMetrics
from dspex_actors.bridge.server.servicer import SessionStoreServicer
from dspex_actors.engine import ActorSession
from dspex_actors.errors import StateError
from dspex_actors.limits import DEFAULT_LIMITS, Limits
from dspex_actors.restarts import GiveUpHook, RestartHook, RestartPolicy
from dspex_actors.stores.base import Store
from dspex_actors.stores.memory import MemoryStore
from dspex_actors.streaming import DEFAULT_HISTORY
from dspex_actors.urls import bridge_address
from dspex_actors.v1 import session_store_pb2 as pb
from dspex_actors.wire import codec, keepalive
from dspex_actors.wire.tls import read_pem

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from dspex_actors.bridge.server.exposition import MetricsEndpoint

__all__ = ["DEFAULT_ADDRESS", "Limits", "SessionStoreServer", "serve"]

logger = logging.getLogger(__name__)

DEFAULT_ADDRESS = "127.0.0.1:0"
SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["SessionStore"].full_name
_START_TIMEOUT = 30.0
_T = TypeVar("_T")


def _is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_LAST_REFUSALS = 0.25
"""Seconds a graceful stop gives the calls it is refusing to be answered."""


class SessionStoreServer:
    """A running SessionStore; stop it with :meth:`stop` or a ``with`` block.

    ``address`` is ``host:port`` with the real port (useful after binding ``:0``);
    With ``metrics``: ``metrics_address`` likewise for the Prometheus endpoint,
    ``metrics_registry`` its ``prometheus_client`` registry (for a program that
    exposes it its own way) and ``metrics`` the counts behind it; all None without.
    """

    def __init__(
        self,
        address: str,
        *,
        token: str | None,
        tls_cert: bytes | str | os.PathLike[str] | None,
        tls_key: bytes | str | os.PathLike[str] | None,
        store: Store,
        limits: Limits,
        allow_remote_without_token: bool,
        metrics: str | None = None,
    ) -> None:
        self.metrics = ServerMetrics(store.kind) if metrics is not None else None
        self.metrics_address: str | None = None
        self.metrics_registry: CollectorRegistry | None = None
        self._endpoint: MetricsEndpoint | None = None
        self._servicer: SessionStoreServicer | None = None
        self._admission = Admission(limits.max_concurrent_calls, token, self.metrics)
        try:
            address = bridge_address(address, listening=True)[0]
            host = _listen_host(address, token, allow_remote_without_token)
            if (tls_cert is None) != (tls_key is None):
                raise ValueError("TLS needs both tls_cert and tls_key")
            credentials = (
                grpc.ssl_server_credentials([(read_pem(tls_key), read_pem(tls_cert))])
                if tls_cert is not None and tls_key is not None
                else None
            )
            if self.metrics is not None and metrics is not None:
                self._serve_metrics(metrics, self.metrics, store)  # a taken port fails now
        except BaseException:
            asyncio.run(_close(store))  # the server owns its store from the start
            raise
        self.limits = limits
        self.store = store
        self.tls = credentials is not None
        self._stop_lock = threading.Lock()
        self._stopping = threading.Event()  # stop() began
        self._stopped = threading.Event()  # stop() finished
        self._loop = asyncio.new_event_loop()
        # Health needs no token: its watches may take at most a quarter of the call
        # slots, so unauthenticated probes can never lock authenticated clients out.
        self._health = discovery.HealthServicer(
            min(discovery.MAX_WATCHES, max(1, limits.max_concurrent_calls // 4))
        )
        self._server: grpc.aio.Server | None = None
        self._reaper: asyncio.Task[None] | None = None
        started: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run_loop,
            args=(address, credentials, started),
            name="dspex-bridge-loop",
            daemon=True,
        )
        self._thread.start()
        try:
            bound = started.result(_START_TIMEOUT)
        except BaseException:
            self._thread.join(_START_TIMEOUT)
            if self._endpoint is not None:
                self._endpoint.close()
            raise
        self.address = f"{host}:{bound}"

    def _serve_metrics(self, address: str, metrics: ServerMetrics, store: Store) -> None:
        """Start the scrape endpoint on ``address``."""
        from dspex_actors.bridge.server import exposition  # prometheus_client: the extra

        gauges = exposition.Gauges(
            calls_in_flight=lambda: self._servicer.calls_in_flight if self._servicer else 0,
            call_streams=lambda: self._servicer.call_streams if self._servicer else 0,
            rpcs_open=lambda: self._admission.running,
            store=store,
        )
        self.metrics_registry = exposition.registry_for(metrics, gauges)
        self._endpoint = exposition.MetricsEndpoint(address, self.metrics_registry)
        self.metrics_address = self._endpoint.address

    # -- the loop's thread ------------------------------------------------------------

    def _run_loop(
        self,
        address: str,
        credentials: grpc.ServerCredentials | None,
        started: concurrent.futures.Future[int],
    ) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            try:
                port = loop.run_until_complete(self._start(address, credentials))
            except BaseException as exc:
                loop.run_until_complete(self._close_store())
                started.set_exception(exc)
                return
            started.set_result(port)
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    async def _start(self, address: str, credentials: grpc.ServerCredentials | None) -> int:
        limits = self.limits
        server = grpc.aio.server(
            # Admission counts and refuses past max_concurrent_calls itself (so the
            # refusals are counted and logged): no maximum_concurrent_rpcs here.
            interceptors=[self._admission],
            options=[
                # Headroom over the payload limit for protobuf's own framing: a batch
                # of exactly max_message_bytes must still reach the store's check.
                ("grpc.max_send_message_length", limits.max_message_bytes + codec.FRAMING_BYTES),
                (
                    "grpc.max_receive_message_length",
                    limits.max_message_bytes + codec.FRAMING_BYTES,
                ),
                ("grpc.max_concurrent_streams", limits.max_calls_per_connection),
                # Without this a second server could bind the same port silently.
                ("grpc.so_reuseport", 0),
                *keepalive.server_options(),
            ],
        )
        self._servicer = SessionStoreServicer(self.store, limits, self.metrics)
        server.add_generic_rpc_handlers((self._servicer.handler(),))
        from grpc_health.v1 import health_pb2_grpc

        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        discovery.enable_reflection(server, (SERVICE_NAME, discovery.HEALTH_SERVICE))
        try:
            bound = (
                server.add_secure_port(address, credentials)
                if credentials is not None
                else server.add_insecure_port(address)
            )
        except RuntimeError as exc:  # grpcio reports a failed bind this way
            raise OSError(f"could not listen on {address!r}: {exc}") from exc
        if not bound:
            raise OSError(f"could not listen on {address!r}: bind failed")
        await server.start()
        await self._health.set(SERVICE_NAME, discovery.SERVING)
        self._server = server
        ttl = getattr(self.store, "session_ttl", 3600.0)
        self._reaper = asyncio.get_running_loop().create_task(
            self._reap_until_stopped(min(max(ttl / 4, 0.01), 60.0))
        )
        return bound

    async def _reap_until_stopped(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)  # a periodic chore, not synchronisation
            try:
                await self._reap()
            except Exception:  # keep reaping; a failure to stop one actor is logged
                logger.exception("reaping expired sessions failed")

    async def _reap(self) -> list[str]:
        """Close the sessions idle for the TTL; log and count each."""
        expired = await self.store.reap_expired()
        lifecycle.expired(expired, self.store.kind, self.metrics)
        return expired

    def crashed(self, session_id: str, failure: BaseException) -> None:
        """A session was closed after its actor died too often (called in the restart
        supervisor's thread by the hook :func:`serve` gives the store): logged, and
        counted on the loop."""
        lifecycle.crashed(session_id, failure, self.store.kind)
        if self.metrics is not None and not self._stopped.is_set():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self.metrics.lifecycle_event, "crashed")

    async def _close_store(self) -> None:
        await _close(self.store)

    async def _shut_down(self, grace: float | None) -> None:
        await self._health.shut_down()
        await self.store.end_watches()  # watchers hear "closed" now, not at the grace's end
        if self._reaper is not None:
            self._reaper.cancel()
        server, self._server = self._server, None
        if server is not None:
            # New calls are refused from now on, unary and streamed alike; within the
            # one grace the running ones finish, and each Calls stream ends once its
            # calls are answered rather than at the grace's end.
            until = time.monotonic() + (grace or 0.0)
            if self._servicer is not None:
                await self._servicer.end_calls(grace)
            # What runs now is only our quick refusals: a moment lets them be sent,
            # rather than cut off (a call cut off reads as CANCELLED: unknown).
            left = max(until - time.monotonic(), _LAST_REFUSALS) if grace else grace
            await server.stop(left)
        del server  # see stop(): the poller thread waits for the last server object
        await self._close_store()

    def _on_loop(self, work: Callable[[], Awaitable[_T]]) -> _T:
        """Run a coroutine on the server's loop from another thread; its result."""
        return asyncio.run_coroutine_threadsafe(_awaited(work), self._loop).result()

    # -- the public surface -------------------------------------------------------------

    def reap_expired(self) -> list[str]:
        """Close the sessions idle for the TTL now; the reaper task also does this."""
        return self._on_loop(self._reap)

    def session_engine(self, session_id: str) -> ActorSession:
        """The engine holding a session here (memory and SQLite stores; for supervision
        tools and tests). ``SessionNotFound`` when the server holds no such session."""
        if not isinstance(self.store, MemoryStore):
            raise TypeError(f"a {self.store.kind} store holds no session actor")
        return self.store.session_engine(session_id)

    def stop(self, grace: float | None = None) -> None:
        """Stop serving; idempotent.

        New calls are refused at once; calls in flight get ``grace`` seconds to
        finish (``None``: cancelled now); health watches end at once, saying
        NOT_SERVING. Then every session is closed and the loop's thread stops.
        """
        with self._stop_lock:
            first = not self._stopping.is_set()
            self._stopping.set()
        if not first:  # another caller is stopping it: wait for that to finish
            self._stopped.wait()
            return
        try:
            self._on_loop(lambda: self._shut_down(grace))
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            # grpc.aio's process-wide poller thread ends once no aio server object is
            # left; an aborted call's traceback keeps ours in a reference cycle, so
            # collect it now rather than whenever the collector next runs.
            gc.collect()
            if self._endpoint is not None:  # last: a final scrape sees the whole run
                self._endpoint.close()
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
        return f"<SessionStoreServer {self.address} ({self.store.kind}, {state})>"


async def _awaited(work: Callable[[], Awaitable[_T]]) -> _T:
    return await work()


async def _close(store: Store) -> None:
    try:
        await store.aclose()
    except Exception:
        logger.exception("closing the store failed")


def _listen_host(address: str, token: str | None, allow_remote_without_token: bool) -> str:
    """The host of a listen address (``HOST:PORT``, or as ``dspex://``), after the
    checks of its token."""
    host = bridge_address(address, listening=True)[0].rpartition(":")[0]
    if token is not None and not token:
        raise ValueError(
            "an empty token would let every call in: give a non-empty token, or none at all"
        )
    if token is None and not allow_remote_without_token and not _is_loopback(host):
        raise ValueError(
            f"refusing to listen on {address!r} without a token: only loopback "
            "addresses are served unauthenticated (give a token, or "
            "allow_remote_without_token=True)"
        )
    return host


def serve(
    address: str = DEFAULT_ADDRESS,
    *,
    token: str | None = None,
    tls_cert: bytes | str | os.PathLike[str] | None = None,
    tls_key: bytes | str | os.PathLike[str] | None = None,
    session_ttl: float = 3600.0,
    limits: Limits = DEFAULT_LIMITS,
    max_sessions: int | None = None,
    max_variables_per_session: int | None = None,
    max_value_bytes: int | None = None,
    max_message_bytes: int | None = None,
    max_concurrent_calls: int | None = None,
    clock: Callable[[], float] = time.monotonic,
    allow_remote_without_token: bool = False,
    max_restarts: int = RestartPolicy.max_restarts,
    within_seconds: float = RestartPolicy.within_seconds,
    on_restart: RestartHook | None = None,
    on_give_up: GiveUpHook | None = None,
    event_history: int = DEFAULT_HISTORY,
    store: Store | str | None = None,
    metrics: str | None = None,
) -> SessionStoreServer:
    """Start a SessionStore on ``address`` (loopback, ephemeral port by default).

    ``token``: every call must carry ``authorization: Bearer <token>`` (health is
    exempt); an empty token is refused. ``tls_cert``/``tls_key`` (PEM bytes or
    paths) switch on TLS. ``limits`` (:mod:`dspex_actors.limits`; the ``max_*``
    keywords override single ones) bound sizes, counts and concurrent calls.
    Sessions idle for ``session_ttl`` seconds are closed; ``clock`` (monotonic
    seconds) is injectable so tests expire sessions without waiting. A non-loopback
    address needs a token unless ``allow_remote_without_token``. A session whose
    actor dies is restarted unless it died ``max_restarts`` times within
    ``within_seconds`` (then it is closed); ``on_restart(session_id, error)`` hears
    each restart and ``on_give_up(session_id, failure)`` each session closed that
    way; each session keeps its last ``event_history`` change events for watchers
    that fall behind or resume. ``store`` is where sessions live: a spec for
    :func:`~dspex_actors.stores.open_store` ("memory", the default; "sqlite:PATH",
    which keeps them across restarts; "redis://HOST:PORT/DB", which keeps them in
    Redis for every server on it), built with the settings above, or a Store
    instance (whose settings then are its own). ``metrics`` (``HOST:PORT``, port 0
    picks one: see ``metrics_address``) serves Prometheus' text format there (the
    ``metrics`` extra; see :mod:`~dspex_actors.bridge.server.exposition`). Session
    lifecycle events and refused calls are logged on ``dspex_actors.server``
    either way. Returns the running server.
    """
    overrides = {
        name: value
        for name, value in (
            ("max_sessions", max_sessions),
            ("max_variables_per_session", max_variables_per_session),
            ("max_value_bytes", max_value_bytes),
            ("max_message_bytes", max_message_bytes),
            ("max_concurrent_calls", max_concurrent_calls),
        )
        if value is not None
    }
    if overrides:
        limits = Limits(**{**limits.__dict__, **overrides})
    if bridge_address(address, listening=True)[1] and (tls_cert is None or tls_key is None):
        raise ValueError(f"{address!r} asks for TLS (dspexs://): give tls_cert and tls_key")
    _listen_host(address, token, allow_remote_without_token)  # before a store exists
    served: list[SessionStoreServer] = []  # the server, once there is one

    def given_up(session_id: str, failure: StateError) -> None:
        if served:
            served[0].crashed(session_id, failure)
        if on_give_up is not None:
            on_give_up(session_id, failure)

    if store is None or isinstance(store, str):
        from dspex_actors.stores import open_store  # the package of every store

        store = open_store(
            store or "memory",
            limits=limits,
            session_ttl=session_ttl,
            clock=clock,
            policy=RestartPolicy(max_restarts, within_seconds),
            on_restart=on_restart,
            on_give_up=given_up,
            event_history=event_history,
        )
    served.append(
        SessionStoreServer(
            address,
            token=token,
            tls_cert=tls_cert,
            tls_key=tls_key,
            store=store,
            limits=limits,
            allow_remote_without_token=allow_remote_without_token,
            metrics=metrics,
        )
    )
    return served[0]
