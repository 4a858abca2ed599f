"""Supervisor, Context and the migration of a session to a shared backend.

A :class:`Supervisor` starts contexts and restarts a session that dies, through the
one supervision policy (:mod:`dspex_actors.restarts`: one-for-one, Erlang-style
restart intensity) the SessionStore server uses too. A :class:`Context` is the
user's handle on one session; it keeps the same identity and API while its backend
changes underneath.

Migration (``Context.ensure_bridged``) is seal+export -> import (one RPC, with the
server's digest of what it stored) -> verify -> swap -> retire the old backend. It
runs in the calling thread under the context's own lock, so one slow bridge never
delays another session's restart. Writes through the Context are fenced while it
runs: they wait, then go to whichever backend is current, each applied exactly
once. A backend that implements the migration protocol
(:class:`~dspex_actors.provider.Migratable`, as LocalState does) is sealed, so a
write made on the old backend directly cannot slip past the export either (it waits
and is then forwarded); one without it is exported as it stands and cleaned up after
the swap, so only writes through the Context are fenced. Reads keep answering from
the last committed values. Nothing is cleaned up before the new backend holds a
verified copy, and any failure leaves the session on its old backend, whole and
writable, with the half-made remote session removed.

Reads cost no more than the backend's own: the Context binds the backend's read
methods onto itself (rebound at each switch) instead of wrapping them, so a local
``get_variable`` stays a table lookup. Writes are the same typed messages
(:mod:`dspex_actors.messages`) the session actor applies, run through the write
gate on whichever backend is current.

gRPC is loaded only when a session first needs the bridge.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self, TypeVar

from dspex_actors import failpoints
from dspex_actors.errors import SessionClosed, SessionNotFound, StateError
from dspex_actors.exports import ExportColumns, columns_digest, columns_of
from dspex_actors.local import LocalState
from dspex_actors.messages import (
    DeleteVariable,
    ImportState,
    Operation,
    RegisterVariable,
    SetVariable,
    UpdateVariables,
)
from dspex_actors.methods import run_on
from dspex_actors.provider import (
    Migratable,
    MigrationTarget,
    Restartable,
    StateProvider,
    validate_provider,
)
from dspex_actors.records import VariableRecord, check_pattern
from dspex_actors.restarts import GiveUpHook, RestartHook, RestartPolicy, RestartSupervisor
from dspex_actors.session import new_session_id
from dspex_actors.streaming import Closing, Event, Subscriber, check_subscriber, hand_over
from dspex_actors.urls import is_redis, redacted, store_kind

if TYPE_CHECKING:
    from dspex_actors.bridge.client.bridged import BridgedState
    from dspex_actors.bridge.server.server import SessionStoreServer

__all__ = ["Context", "ContextSubscription", "Supervisor", "check_store"]

logger = logging.getLogger(__name__)

BackendSpec = Literal["local", "bridged"] | type[StateProvider]
SwitchHook = Callable[[dict[str, Any]], None]

_BRIDGE_PROGRAM_TYPES = frozenset({"dspy", "python"})
_CALL_TIMEOUT = 60.0
_T = TypeVar("_T")


def check_store(store: str | None) -> None:
    """``ValueError`` unless ``store`` is None or a spec ``serve(store=...)`` takes."""
    if store is not None:
        store_kind(store)


class Supervisor:
    """Starts contexts, restarts what dies, migrates sessions to the bridge.

    Use ``Supervisor.start(...)``; ``stop()`` (or leaving the ``with`` block) stops
    every context, cleans up every backend and releases the embedded server.
    """

    def __init__(
        self,
        *,
        bridge_address: str | None,
        token: str | None,
        policy: RestartPolicy,
        bridge_timeout: float,
        heartbeat_interval: float,
        on_switch: SwitchHook | None,
        on_restart: RestartHook | None,
        on_give_up: GiveUpHook | None,
        clock: Callable[[], float],
        cache: bool,
        store: str | None,
    ) -> None:
        if heartbeat_interval <= 0:
            raise ValueError("heartbeat_interval must be > 0")
        check_store(store)
        self.cache = cache
        self.store = store
        self.policy = policy
        self.token = token
        self.bridge_timeout = bridge_timeout
        self.heartbeat_interval = heartbeat_interval
        self.on_switch = on_switch
        self._bridge_address = bridge_address
        self._private_server: SessionStoreServer | None = None
        self._uses_shared_server = False
        self._heartbeats: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._children: dict[str, Context | None] = {}  # None: being started
        self._stopped = False
        self.restarts = RestartSupervisor.start_supervisor(
            policy, on_restart=on_restart, on_give_up=on_give_up, clock=clock, what="context"
        )

    @classmethod
    def start(
        cls,
        *,
        bridge_address: str | None = None,
        token: str | None = None,
        max_restarts: int = 3,
        within_seconds: float = 5.0,
        bridge_timeout: float = 5.0,
        heartbeat_interval: float = 60.0,
        on_switch: SwitchHook | None = None,
        on_restart: RestartHook | None = None,
        on_give_up: GiveUpHook | None = None,
        clock: Callable[[], float] = time.monotonic,
        cache: bool = False,
        store: str | None = None,
    ) -> Self:
        """Start a supervisor.

        ``bridge_address`` names a running SessionStore; without it the supervisor
        uses the process's embedded one (a private one when ``token`` is given),
        started the first time a session needs the bridge. Bridged contexts send a
        heartbeat every ``heartbeat_interval`` seconds, so an idle session never
        reaches the server's TTL. A session that dies is restarted unless it died
        ``max_restarts`` times within ``within_seconds`` (``RestartPolicy``).
        ``on_switch`` hears each switch's record, ``on_restart`` each restart,
        ``on_give_up`` each context stopped for dying too often; ``clock``
        (monotonic seconds) measures the restart-intensity window. ``cache``: bridged
        contexts read from a coherent local copy (``BridgedState(cache=True)``).
        ``store`` is where a session goes when it needs sharing (``ensure_bridged``):
        None, the SessionStore bridge; ``"redis://HOST:PORT/DB"``, straight into that
        Redis as a :class:`~dspex_actors.redis.state.RedisState` session, which other
        processes open by its id (and SessionStore servers on that Redis serve); or
        ``"sqlite:PATH"``/``"memory"``, the bridge on a private server with that
        store (a file: the sessions outlive this process).
        """
        return cls(
            bridge_address=bridge_address,
            token=token,
            policy=RestartPolicy(max_restarts, within_seconds),
            bridge_timeout=bridge_timeout,
            heartbeat_interval=heartbeat_interval,
            on_switch=on_switch,
            on_restart=on_restart,
            on_give_up=on_give_up,
            clock=clock,
            cache=cache,
            store=store,
        )

    @property
    def bridge_address(self) -> str | None:
        """The SessionStore address in use once the bridge is up (None before)."""
        with self._lock:
            return self._bridge_address

    def _ensure_bridge(self) -> str:
        """The bridge address, starting the embedded server and heartbeats on first need."""
        from dspex_actors.bridge import embedded, serve

        with self._lock:
            if self._stopped:
                raise SessionClosed("the supervisor is stopped")
            if self._bridge_address is None:
                if self.token is None and self.store is None:
                    self._bridge_address = embedded.acquire()
                    self._uses_shared_server = True
                else:
                    self._private_server = serve(token=self.token, store=self.store)
                    self._bridge_address = self._private_server.address
                logger.info("using embedded SessionStore at %s", self._bridge_address)
            self._start_heartbeats()
            return self._bridge_address

    def _start_heartbeats(self) -> None:
        """Start the heartbeat thread once a session lives somewhere with a TTL."""
        if self._heartbeats is None:
            self._heartbeats = threading.Thread(
                target=self._send_heartbeats, name="dspex-heartbeats", daemon=True
            )
            self._heartbeats.start()

    def _send_heartbeats(self) -> None:
        """Keep remote sessions of idle contexts from expiring: every
        ``heartbeat_interval`` seconds, or a third of the shortest TTL a server
        reported, whichever is sooner."""
        while not self._stopping.wait(self._heartbeat_period()):
            for context in self.contexts():
                try:
                    context.backend.heartbeat()
                except StateError as exc:
                    logger.warning("heartbeat of %s failed: %s", context.session_id, exc)

    def _heartbeat_period(self) -> float:
        ttls: list[float] = [
            ttl
            for context in self.contexts()
            if (ttl := getattr(context.backend, "ttl_seconds", None)) is not None
        ]
        return min([self.heartbeat_interval, *(ttl / 3 for ttl in ttls)])

    def open_bridged(self, session_id: str, *, pending: bool = False) -> BridgedState:
        """A BridgedState for ``session_id`` on this supervisor's bridge (``pending``:
        created invisible until committed, as a migration's copy is; its cache, if
        the supervisor keeps one, starts once it is committed)."""
        from dspex_actors.bridge.client.bridged import BridgedState

        return BridgedState.init(
            session_id=session_id,
            address=self._ensure_bridge(),
            token=self.token,
            timeout=self.bridge_timeout,
            pending=pending,
            cache=self.cache and not pending,
        )

    def open_copy(
        self, session_id: str, store: str | None = None
    ) -> tuple[Any, Callable[[], None]]:
        """A new pending session to migrate ``session_id`` into, on ``store`` (a
        ``redis://`` URL: in that Redis) or else on this supervisor's bridge; and
        what to do once it is committed (a bridged copy starts its cache, if this
        supervisor keeps one). The copy is a StateProvider and a MigrationTarget."""
        if store is not None and is_redis(store):
            from dspex_actors.redis.state import RedisState

            with self._lock:
                if self._stopped:
                    raise SessionClosed("the supervisor is stopped")
                self._start_heartbeats()
            copy = RedisState.init(
                session_id=session_id, url=store, timeout=self.bridge_timeout, pending=True
            )
            return copy, lambda: None
        bridged = self.open_bridged(session_id, pending=True)
        return bridged, bridged.enable_cache if self.cache else lambda: None

    def start_context(
        self,
        *,
        session_id: str | None = None,
        backend: BackendSpec = "local",
        store: str | None = None,
    ) -> Context:
        """Start a supervised session; ``backend`` is "local", "bridged" or a provider
        class. ``store``: where this session goes when it needs sharing, instead of
        the supervisor's (a ``redis://`` URL; see :meth:`start`)."""
        if store is not None and not is_redis(store):
            raise ValueError(
                f"a context's store is a redis:// URL, got {store!r} (a supervisor's "
                "store may also be 'sqlite:PATH' or 'memory')"
            )
        if backend not in ("local", "bridged") and not isinstance(backend, type):
            raise TypeError(
                f"backend must be 'local', 'bridged' or a StateProvider class: {backend!r}"
            )
        if isinstance(backend, type):
            validate_provider(backend)
        session_id = session_id or new_session_id()
        with self._lock:
            if self._stopped:
                raise SessionClosed("the supervisor is stopped")
            if session_id in self._children:
                raise StateError(f"a context for session {session_id!r} is already running")
            self._children[session_id] = None  # reserved: a concurrent start fails above
        try:
            provider: StateProvider
            if backend == "local":
                provider = LocalState.init(session_id=session_id, on_exit=self.restarts.exited)
            elif backend == "bridged":
                provider = self.open_bridged(session_id)
            else:
                assert isinstance(backend, type)
                provider = backend.init(session_id=session_id)
        except BaseException:
            with self._lock:
                self._children.pop(session_id, None)
            raise
        context = Context(self, session_id, provider, store or self.store)
        self.restarts.watch(context)
        with self._lock:
            stopped = self._stopped
            if not stopped:
                self._children[session_id] = context
        if stopped:  # stop() ran meanwhile and could not see this context
            self.restarts.forget(session_id)
            provider.cleanup()
            raise SessionClosed("the supervisor is stopped")
        return context

    def contexts(self) -> list[Context]:
        """The running contexts."""
        with self._lock:
            return [c for c in self._children.values() if c is not None]

    def _forget(self, context: Context) -> None:
        with self._lock:
            self._children.pop(context.session_id, None)
        self.restarts.forget(context.session_id)

    def stop(self) -> None:
        """Stop every context, the heartbeats, the restart supervisor and the server."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            contexts = [c for c in self._children.values() if c is not None]
        for context in contexts:
            context.stop()
        self._stopping.set()
        if self._heartbeats is not None:
            self._heartbeats.join(_CALL_TIMEOUT)
        self.restarts.stop(_CALL_TIMEOUT)
        if self._private_server is not None:
            self._private_server.stop(grace=None)
        if self._uses_shared_server:
            from dspex_actors.bridge import embedded

            embedded.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ContextSubscription(Closing):
    """A Context's subscription: it follows the session from backend to backend.

    At a switch the old backend's subscription delivers every event up to the cut
    and ends (the retired backend closes its log), while the new backend's starts
    at the cut's sequence; its events are held until the old one has ended, so the
    subscriber sees each event once, in order. Events are handed over one at a
    time (under the subscription's lock).
    """

    def __init__(self, backend: StateProvider, pattern: str | None, subscriber: Subscriber):
        check_subscriber(subscriber)
        self.pattern = check_pattern(pattern)
        self.subscriber = subscriber
        self._lock = threading.RLock()
        self._generation = 0
        self._held: list[Event] | None = None  # the new backend's, while the old drains
        self._moved = threading.Event()
        self._moved.set()
        self._old: Any = None
        self._closed = False
        self._last: Event | None = None  # the last event handed over
        self._inner: Any = backend.subscribe(pattern, self._relay(0))

    def _relay(self, generation: int) -> Callable[[Event], None]:
        def on(event: Event) -> None:
            with self._lock:
                if generation < self._generation:  # the backend the session left
                    if event.kind == "closed":
                        self._end_move()
                    else:
                        self._give(event)
                elif self._held is not None:
                    self._held.append(event)
                else:
                    self._give(event)

        return on

    def _give(self, event: Event) -> None:
        if self._last is not None and self._last.kind == "closed":
            return  # closed once is enough
        self._last = event
        hand_over(self.subscriber, event)

    def end(self) -> None:
        """The context stopped: stop delivery, the subscriber told ``closed`` once."""
        self.close()
        with self._lock:
            last = self._last
            if last is None or last.kind != "closed":
                session_id = last.session_id if last is not None else ""
                self._give(Event(session_id, last.sequence if last is not None else 0, "closed"))

    def move(self, backend: StateProvider, start: int | None) -> None:
        """Subscribe on the session's new backend from ``start`` (the cut)."""
        with self._lock:
            self._generation += 1
            self._held = []
            self._moved.clear()
            self._old = self._inner
            if start is None:  # no cut to continue from: the old one has nothing more
                self._end_move()
        subscribe: Any = backend.subscribe
        inner = subscribe(self.pattern, self._relay(self._generation), start=start)
        with self._lock:
            closed = self._closed
            if not closed:
                self._inner = inner
        if closed:  # unsubscribed while it moved: the new one must not live on
            inner.close()

    def _end_move(self) -> None:
        held, self._held = self._held or [], None
        for event in held:
            self._give(event)
        self._moved.set()

    def finish_move(self, timeout: float) -> None:
        """After the old backend retired: wait for its last events, then stop it."""
        if not self._moved.wait(timeout):
            logger.error("a subscription did not drain the old backend in %ss", timeout)
            with self._lock:
                self._end_move()
        old, self._old = self._old, None
        if old is not None:
            old.close()

    def close(self) -> None:
        """Stop delivery; no event is delivered once this returns."""
        with self._lock:
            self._closed = True
            inners = (self._inner, self._old)
        for inner in inners:
            if inner is not None:
                inner.close()


def _failed_reader(error: StateError) -> Callable[..., Any]:
    def fail(*_args: Any, **_kwargs: Any) -> Any:
        raise error

    return fail


class Context:
    """A session handle whose API stays the same while its backend changes.

    Every StateProvider operation is here and returns plain values, raising
    ``dspex_actors.errors``. ``get_variable``, ``get_variables``, ``get_record``,
    ``list_variables``, ``export_state`` and ``export_columns`` are the current
    backend's own bound methods (rebound at each switch), so they cost what the
    backend's do. A Context is also the supervisor's child
    (:class:`~dspex_actors.restarts.Child`).
    """

    get_variable: Callable[[str], Any]
    get_variables: Callable[[Iterable[str]], dict[str, Any]]
    get_record: Callable[[str], VariableRecord]
    list_variables: Callable[..., list[dict[str, Any]]]
    export_state: Callable[[], dict[str, Any]]
    export_columns: Callable[[], ExportColumns]

    def __init__(
        self,
        supervisor: Supervisor,
        session_id: str,
        backend: StateProvider,
        store: str | None = None,
    ) -> None:
        self.session_id = session_id
        self._supervisor = supervisor
        self._store = store  # where a migration goes: Redis for a redis:// URL, else the bridge
        self._backend = backend
        self._gate = threading.Condition()
        self._migration_lock = threading.Lock()
        self._fenced = False
        self._writers = 0
        self._stopped = False
        self._failure: StateError | None = None
        self._programs: dict[str, dict[str, Any]] = {}
        self._history: list[dict[str, Any]] = []
        self._stale_copy: MigrationTarget | None = None  # left by a failed migration
        self._subscriptions: list[ContextSubscription] = []
        self._bind(backend)

    def _bind(self, backend: StateProvider) -> None:
        self.get_variable = backend.get_variable
        self.get_variables = backend.get_variables
        self.get_record = backend.get_record
        self.list_variables = backend.list_variables
        self.export_state = backend.export_state
        self.export_columns = backend.export_columns

    @property
    def backend(self) -> StateProvider:
        """The current backend (changes at a switch; keep the Context, not this)."""
        return self._backend

    @property
    def stopped(self) -> bool:
        return self._stopped

    # -- the supervisor's child --------------------------------------------------------

    def needs_restart(self) -> bool:
        """Whether the session should run and does not (a restartable backend died)."""
        backend = self._backend
        return (
            not self._stopped
            and self._failure is None
            and isinstance(backend, Restartable)
            and not backend.alive
        )

    def restart(self) -> None:
        """Restart the backend's session in place (the supervisor decided to)."""
        backend = self._backend
        if isinstance(backend, Restartable):
            backend.restart()

    def give_up(self, error: StateError) -> None:
        """The session died too often: every later call raises ``error``."""
        with self._gate:
            self._failure = error
            fail = _failed_reader(error)
            self.get_variable = self.get_variables = self.get_record = fail
            self.list_variables = self.export_state = self.export_columns = fail
            backend = self._backend
        backend.cleanup()

    # -- the write gate ----------------------------------------------------------------

    def _enter(self) -> StateProvider:
        with self._gate:
            while self._fenced:
                self._gate.wait()
            if self._failure is not None:
                raise self._failure
            if self._stopped:
                raise SessionClosed(f"context {self.session_id!r} is stopped")
            self._writers += 1
            return self._backend

    def _leave(self) -> None:
        with self._gate:
            self._writers -= 1
            if not self._writers:
                self._gate.notify_all()

    def _write(self, operation: Operation[_T]) -> _T:
        """Run a write on the current backend. A backend whose session died refused
        it (SessionClosed: not applied), so after the supervisor's restart it is
        sent once more."""
        for attempt in (0, 1):
            backend = self._enter()
            try:
                return run_on(backend, operation)
            except SessionClosed:
                if attempt or self._stopped or not isinstance(backend, Restartable):
                    raise
            finally:
                self._leave()
            # Outside the gate: a migration may be waiting for writers to drain.
            failure = self._supervisor.restarts.ensure_running(self.session_id, _CALL_TIMEOUT)
            if failure is not None:
                raise failure
        raise AssertionError("unreachable")

    # -- the provider API --------------------------------------------------------------

    def register_variable(
        self,
        name: str,
        type: str,  # the contract's word, shadowing the builtin here only
        initial_value: Any,
        *,
        constraints: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        description: str | None = None,
    ) -> str:
        return self._write(
            RegisterVariable(name, type, initial_value, constraints, metadata, description)
        )

    def set_variable(
        self,
        identifier: str,
        new_value: Any,
        metadata: Mapping[str, Any] | None = None,
        *,
        expected_version: int | None = None,
    ) -> int:
        return self._write(SetVariable(identifier, new_value, metadata, expected_version))

    def update_variables(
        self, updates: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
    ) -> None:
        self._write(UpdateVariables(updates, metadata))

    def delete_variable(self, identifier: str) -> None:
        self._write(DeleteVariable(identifier))

    def import_state(self, exported: Mapping[str, Any]) -> None:
        self._write(ImportState(columns_of(exported)))

    def import_columns(self, columns: ExportColumns) -> None:
        self._write(ImportState(columns))

    def subscribe(self, pattern: str | None, subscriber: Subscriber) -> ContextSubscription:
        """Subscribe on the current backend; the subscription moves with the session
        at a switch, every event delivered exactly once and in order."""
        with self._gate:
            if self._failure is not None:
                raise self._failure
            if self._stopped:
                raise SessionClosed(f"context {self.session_id!r} is stopped")
            subscription = ContextSubscription(self._backend, pattern, subscriber)
            self._subscriptions.append(subscription)
            return subscription

    def unsubscribe(self, subscription: Any) -> None:
        """Stop a subscription made by :meth:`subscribe`."""
        if not isinstance(subscription, ContextSubscription):
            raise TypeError(f"not a subscription of this context: {subscription!r}")
        with self._gate:
            if subscription in self._subscriptions:
                self._subscriptions.remove(subscription)
        subscription.close()

    # -- programs and the switch ---------------------------------------------------------

    def register_program(self, program_id: str, spec: Mapping[str, Any]) -> None:
        """Record a program; one that needs the bridge migrates the session now.

        A spec needs the bridge when ``requires_bridge`` is true or its ``type`` is
        "dspy" or "python".
        """
        if not isinstance(program_id, str) or not program_id:
            raise TypeError(f"program_id must be a non-empty string, got {program_id!r}")
        if not isinstance(spec, Mapping):
            raise TypeError(f"program spec must be a mapping, got {type(spec).__name__}")
        needs_bridge = (
            bool(spec.get("requires_bridge")) or spec.get("type") in _BRIDGE_PROGRAM_TYPES
        )
        if needs_bridge:
            self.ensure_bridged()
        self._programs[program_id] = dict(spec)

    def ensure_bridged(self) -> None:
        """Move the session to the bridge (or to the context's Redis store) now,
        unless its backend is already shared with other processes
        (``capabilities()["distribution"]``); idempotent.

        Raises a StateError naming the failed step; the session then stays where it
        was, whole and writable.
        """
        with self._migration_lock:
            if not type(self._backend).capabilities().get("distribution"):
                self._migrate()

    def _migrate(self) -> None:
        """seal+export -> import -> verify -> commit -> swap -> retire the old backend.

        Every step before the swap can fail and leave the session wholly on its old
        backend, unsealed and writable: the bridged copy is created pending
        (invisible to other processes) and removed again; a copy that could not be
        removed (the bridge unreachable) is remembered by its incarnation and
        removed before the next attempt, so it never blocks one. After the swap the
        bridged copy is the session: retiring the old backend cannot undo that.
        """
        old = self._backend
        started = time.perf_counter()
        with self._gate:
            if self._failure is not None:
                raise self._failure
            if self._stopped:
                raise SessionClosed(f"context {self.session_id!r} is stopped")
            self._fenced = True
            while self._writers:
                self._gate.wait()
        sealed = old if isinstance(old, Migratable) else None
        step = ["export"]
        try:
            self._remove_stale_copy()
            failpoints.hit("migration.export")
            columns = sealed.seal() if sealed is not None else old.export_columns()
            copy: MigrationTarget | None = None
            try:
                new = copy = self._copy(columns, step)
                step[0] = "swap"
                failpoints.hit("migration.swap")
            except BaseException:
                if copy is not None:  # committed already: it must not outlive the failure
                    self._discard(copy)
                if sealed is not None:
                    sealed.unseal()
                raise
            with self._gate:
                self._backend = new
                self._bind(new)
                moving = list(self._subscriptions)
        except Exception as exc:
            raise StateError(
                f"migration of session {self.session_id!r} to {self._destination()} failed "
                f"at step {step[0]!r}; it stays on {type(old).__name__}: {exc}",
                step=step[0],
            ) from exc
        finally:
            with self._gate:
                self._fenced = False
                self._gate.notify_all()
        # The switch has happened: what follows can only be logged, never undo it.
        start = columns.sequence if columns.sequence > 0 else None
        for subscription in moving:
            try:
                subscription.move(new, start)
            except Exception:
                logger.exception("session %s: a subscription could not move", self.session_id)
        self._retire(old, sealed, new)
        for subscription in moving:
            subscription.finish_move(_CALL_TIMEOUT)
        self._record_switch(old, new, started, columns.variable_count)

    def _retire(self, old: StateProvider, sealed: Migratable | None, new: StateProvider) -> None:
        """Retire the backend the session left (or clean it up, without the protocol)."""
        try:
            failpoints.hit("migration.retire")
            if sealed is not None:
                sealed.retire(successor=new)
            else:
                old.cleanup()
        except Exception:
            # The switch has happened: the old backend must not serve stale values, so
            # it is at least stopped (a handle kept from before then says SessionClosed).
            logger.exception("session %s: retiring the old backend failed", self.session_id)
            try:
                old.cleanup()
            except Exception:
                logger.exception("session %s: stopping the old backend failed", self.session_id)

    def _destination(self) -> str:
        return "the bridge" if self._store is None else redacted(self._store)

    def _copy(self, columns: ExportColumns, step: list[str]) -> Any:
        """Import ``columns`` into a new pending session (on the bridge, or in the
        context's store), verify and commit it (``step[0]`` names the step under
        way); a failure removes the half-made copy. Answers the copy: a
        StateProvider and a MigrationTarget."""
        step[0] = "import"
        failpoints.hit("migration.import")
        new, on_commit = self._supervisor.open_copy(self.session_id, self._store)
        try:
            digest = new.import_with_digest(columns, migrating=columns.sequence > 0)
            step[0] = "verify"
            failpoints.hit("migration.verify")
            # The copy's digest is of what was stored: equal digests mean equal ids,
            # names, types, values, versions, constraints, metadata and timestamps.
            if digest != columns_digest(columns):
                raise StateError("verification failed: the copy differs from the export")
            step[0] = "commit"
            failpoints.hit("migration.commit")
            new.commit()
            on_commit()
        except BaseException:
            self._discard(new)
            raise
        return new

    def _discard(self, copy: MigrationTarget) -> None:
        """Remove a half-made copy; if where it lives cannot be told, keep the handle
        so the next migration removes that incarnation first."""
        try:
            copy.close_remote()
        except SessionNotFound:
            pass  # gone already (expired, or never committed and reaped)
        except StateError as exc:
            logger.warning(
                "session %s: the half-made copy could not be removed now (%s); "
                "the next migration removes it first",
                self.session_id,
                exc,
            )
            self._stale_copy = copy
            return
        copy.cleanup()

    def _remove_stale_copy(self) -> None:
        """Remove the copy an earlier failed migration left on the bridge, if any."""
        stale, self._stale_copy = self._stale_copy, None
        if stale is not None:
            self._discard(stale)
            if self._stale_copy is not None:
                raise StateError(
                    f"a copy of session {self.session_id!r} from an earlier failed migration "
                    f"is still on {self._destination()} and could not be removed"
                )

    def _record_switch(
        self, old: StateProvider, new: StateProvider, started: float, variables: int
    ) -> None:
        elapsed_ms = (time.perf_counter() - started) * 1000
        event = {
            "session_id": self.session_id,
            "from": old.kind,
            "to": new.kind,
            "duration_ms": elapsed_ms,
            "variables": variables,
            "at": time.time(),
        }
        self._history.append(event)
        logger.info(
            "session %s switched %s -> %s in %.2f ms (%d variables)",
            self.session_id,
            event["from"],
            event["to"],
            elapsed_ms,
            variables,
            extra={"dspex_switch": event},
        )
        hook = self._supervisor.on_switch
        if hook is not None:
            try:
                hook(dict(event))
            except Exception:
                logger.exception("on_switch hook failed")

    def backend_info(self) -> dict[str, Any]:
        """Which backend holds the session, and the history of its switches."""
        backend = self._backend
        cls = type(backend)
        return {
            "type": backend.kind,
            "module": f"{cls.__module__}.{cls.__qualname__}",
            "requires_bridge": cls.requires_bridge(),
            "capabilities": self._capabilities(backend),
            "switches": len(self._history),
            "history": [dict(event) for event in self._history],
            "last_switch_ms": self._history[-1]["duration_ms"] if self._history else None,
        }

    @staticmethod
    def _capabilities(backend: StateProvider) -> dict[str, bool]:
        """The backend class's capabilities, with ``persistence`` from the handle when
        it knows better (a bridged session: whether its server's store is durable)."""
        capabilities = type(backend).capabilities()
        persistent = getattr(backend, "persistent", None)
        if isinstance(persistent, bool):
            capabilities = {**capabilities, "persistence": persistent}
        return capabilities

    def stop(self) -> None:
        """Stop the session: clean up its backend and leave the supervisor; idempotent."""
        with self._gate:
            while self._fenced:
                self._gate.wait()
            if self._stopped:
                return
            self._stopped = True
            backend = self._backend
            stale, self._stale_copy = self._stale_copy, None
            subscriptions, self._subscriptions = self._subscriptions, []
        try:
            backend.cleanup()
            if stale is not None:
                stale.cleanup()  # one more try at removing it, then let the TTL do it
        finally:
            for subscription in subscriptions:
                subscription.end()
            self._supervisor._forget(self)

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
        return f"<Context {self.session_id} on {type(self._backend).__name__}>"
