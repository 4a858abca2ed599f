"""The Supervisor and its children, the Contexts: sessions that restart and move.

A :class:`Supervisor` starts contexts and restarts a session that dies, through the
one supervision policy (:mod:`dspex_actors.restarts`: one-for-one, Erlang-style
restart intensity) the SessionStore server uses too. A :class:`Context` is the
user's handle on one session: a StateProvider like every other, whose backend can
change underneath while its identity and API stay the same. Moving a session to a
shared backend is :mod:`dspex_actors.migration`; where it goes, and the heartbeats
that keep it there, :mod:`dspex_actors.sharing`.

Every public method of a Context is :class:`~dspex_actors.methods.SessionMethods`'
over :meth:`Context.run`: writes go through the context's write gate (fenced while a
switch runs) to whichever backend is current; reads go straight to it. Reads cost no
more than the backend's own: the Context binds the backend's read methods onto
itself (rebound at each switch), so a local ``get_variable`` stays a table lookup.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal, Self, TypeVar

from dspex_actors.delivery import Subscription
from dspex_actors.errors import SessionClosed, StateError
from dspex_actors.limits import check_session_id
from dspex_actors.local import LocalState
from dspex_actors.messages import Operation
from dspex_actors.methods import READ_METHODS, SessionMethods, events_of, run_on
from dspex_actors.migration import CALL_TIMEOUT, ContextSource, Moving, Switcher, SwitchHook
from dspex_actors.provider import Restartable, StateProvider, validate_provider
from dspex_actors.restarts import GiveUpHook, RestartHook, RestartPolicy, RestartSupervisor
from dspex_actors.session import new_session_id
from dspex_actors.sharing import Sharing, check_store
from dspex_actors.urls import bridge_address as bridge_address_of
from dspex_actors.urls import is_redis
from dspex_actors.workers import ROOM, Attach, SessionWorker, check_room

__all__ = ["Context", "Supervisor", "check_store"]

logger = logging.getLogger(__name__)

BackendSpec = Literal["local", "bridged"] | type[StateProvider]

_BRIDGE_PROGRAM_TYPES = frozenset({"dspy", "python"})
R = TypeVar("R")


class Supervisor:
    """Starts contexts, restarts what dies, migrates sessions to the bridge.

    ``Supervisor(...)`` or ``Supervisor.start(...)`` starts one (the options are
    documented on the constructor); ``stop()`` (or leaving the ``with`` block) stops
    every context, cleans up every backend and releases the embedded server.
    """

    def __init__(
        self,
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
    ) -> None:
        """Start a supervisor (``Supervisor.start(...)`` is the same).

        ``bridge_address`` names a running SessionStore (``HOST:PORT``,
        ``dspex://HOST:PORT`` or ``dspexs://HOST:PORT``); without it the supervisor
        uses the process's embedded one (a private one when ``token`` is given),
        started the first time a session needs the bridge. Bridged contexts send a
        heartbeat every ``heartbeat_interval`` seconds, so an idle session never
        reaches the server's TTL. A session that dies is restarted unless it died
        ``max_restarts`` times within ``within_seconds`` (``RestartPolicy``).
        ``on_switch`` hears each switch's record, ``on_restart`` each restart,
        ``on_give_up`` each context stopped for dying too often (both also hear the
        session workers, :meth:`Context.start_worker`); ``clock``
        (monotonic seconds) measures the restart-intensity window. ``cache``: bridged
        contexts read from a coherent local copy (``BridgedState.init(cache=True)``).
        ``store`` is where a session goes when it needs sharing (``ensure_bridged``):
        None, the SessionStore bridge; ``"redis://HOST:PORT/DB"``, straight into that
        Redis as a :class:`~dspex_actors.redis.state.RedisState` session, which other
        processes open by its id (and SessionStore servers on that Redis serve); or
        ``"sqlite:PATH"``/``"memory"``, the bridge on a private server with that
        store (a file: the sessions outlive this process).
        """
        if bridge_address is not None:
            bridge_address_of(bridge_address)  # a bad one is refused now, not at a switch
        self.sharing = Sharing(
            bridge_address=bridge_address,
            token=token,
            store=store,
            timeout=bridge_timeout,
            cache=cache,
            heartbeat_interval=heartbeat_interval,
            held=self.contexts,
        )
        self.store = store
        self.policy = policy = RestartPolicy(max_restarts, within_seconds)
        self.on_switch = on_switch
        self.on_restart = on_restart
        self.on_give_up = on_give_up
        self.clock = clock
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
        """Start a supervisor: the same as ``Supervisor(...)``, which documents each
        option (``start`` is the spelling DSPex's supervisors use)."""
        return cls(
            bridge_address=bridge_address,
            token=token,
            max_restarts=max_restarts,
            within_seconds=within_seconds,
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
        return self.sharing.bridge_address

    def _heartbeat_period(self) -> float:
        return self.sharing.heartbeat_period()

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
        if session_id is not None:
            check_session_id(session_id)
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
                provider = self.sharing.open_bridged(session_id)
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
        self.restarts.stop(CALL_TIMEOUT)
        self.sharing.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _failed_reader(error: StateError) -> Callable[..., Any]:
    def fail(*_args: Any, **_kwargs: Any) -> Any:
        raise error

    return fail


class Context(SessionMethods):
    """A session whose backend can change underneath, its identity and API kept.

    Made by :meth:`Supervisor.start_context`, or on its own by :meth:`init` (with a
    supervisor of its own, stopped by :meth:`cleanup`). Every StateProvider method is
    here and returns plain values, raising ``dspex_actors.errors``. The read methods
    (``get_variable``, ``get_record``, ``list_variables``...) are the current
    backend's own bound methods (rebound at each switch), so they cost what the
    backend's do. A Context is also its supervisor's child
    (:class:`~dspex_actors.restarts.Child`).
    """

    kind: ClassVar[str] = "context"

    def __init__(
        self,
        supervisor: Supervisor,
        session_id: str,
        backend: StateProvider,
        store: str | None = None,
    ) -> None:
        """A supervisor's child; use :meth:`Supervisor.start_context` or :meth:`init`."""
        self.session_id = session_id
        self._supervisor = supervisor
        self._backend = backend
        self._gate = threading.Condition()
        self._migration_lock = threading.Lock()
        self._fenced = False
        self._writers = 0
        self._stopped = False
        self._owns_supervisor = False
        self._failure: StateError | None = None
        self._programs: dict[str, dict[str, Any]] = {}
        sharing = supervisor.sharing
        self._switcher = Switcher(
            session_id, store, sharing.open_copy, supervisor.on_switch, sharing.moved
        )
        self._subscriptions: list[Subscription] = []
        self._sources: list[ContextSource] = []  # moved at a switch
        self._store = store
        self.workers: list[SessionWorker] = []
        """Its running session workers (:meth:`start_worker`)."""
        self._bind(backend)

    @classmethod
    def init(
        cls,
        *,
        session_id: str | None = None,
        existing_state: Mapping[str, Any] | None = None,
        backend: BackendSpec = "local",
        store: str | None = None,
        supervisor: Supervisor | None = None,
        **supervisor_options: Any,
    ) -> Self:
        """A context on ``supervisor``, or on a supervisor of its own (started with
        ``supervisor_options``, the keywords of :meth:`Supervisor.start`, and stopped
        by :meth:`cleanup`). ``backend`` and ``store`` are
        :meth:`Supervisor.start_context`'s; ``existing_state`` is imported first."""
        own = supervisor is None
        keeper = Supervisor.start(**supervisor_options) if supervisor is None else supervisor
        try:
            context = keeper.start_context(session_id=session_id, backend=backend, store=store)
        except BaseException:
            if own:
                keeper.stop()
            raise
        context._owns_supervisor = own
        assert isinstance(context, cls)
        return context._seeded(existing_state)

    def _bind(self, backend: StateProvider) -> None:
        """Take the backend's read methods as this context's own (those it has)."""
        for name in READ_METHODS:
            method = getattr(backend, name, None)
            if method is not None:
                setattr(self, name, method)
            else:
                self.__dict__.pop(name, None)  # the shared method: run -> forward

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
            for name in READ_METHODS:
                setattr(self, name, fail)
            backend = self._backend
        backend.cleanup()

    # -- running an operation: writes through the gate --------------------------------

    def run(self, operation: Operation[R]) -> R:
        """Run one operation on the current backend: a write through the write gate
        (it waits while a switch runs), a read straight away."""
        if operation.write:
            return self._write(operation)
        failure = self._failure
        if failure is not None:
            raise failure
        return run_on(self._backend, operation)

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

    def _write(self, operation: Operation[R]) -> R:
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
            failure = self._supervisor.restarts.ensure_running(self.session_id, CALL_TIMEOUT)
            if failure is not None:
                raise failure
        raise AssertionError("unreachable")

    # -- what a switch asks of the context (migration.Switching) ---------------------

    def _fence(self) -> StateProvider:
        with self._gate:
            if self._failure is not None:
                raise self._failure
            if self._stopped:
                raise SessionClosed(f"context {self.session_id!r} is stopped")
            self._fenced = True
            while self._writers:
                self._gate.wait()
            return self._backend

    def _swap(self, new: StateProvider) -> list[Moving]:
        with self._gate:
            self._backend = new
            self._bind(new)
            return list(self._sources)

    def _unfence(self) -> None:
        with self._gate:
            self._fenced = False
            self._gate.notify_all()

    # -- change events ------------------------------------------------------------------

    def events(self, pattern: str | None, start: int | None = None) -> ContextSource:
        """The session's events on the current backend, following the session to the
        next one at a switch, every event delivered exactly once and in order."""
        with self._gate:
            if self._failure is not None:
                raise self._failure
            if self._stopped:
                raise SessionClosed(f"context {self.session_id!r} is stopped")
            holder: list[ContextSource] = []
            source = ContextSource(
                events_of(self._backend, pattern, start),
                pattern,
                lambda: self._forget_source(holder[0]),
            )
            holder.append(source)
            self._sources.append(source)  # under the gate: no switch can miss it
            return source

    def _forget_source(self, source: ContextSource) -> None:
        with self._gate:
            if source in self._sources:
                self._sources.remove(source)

    def _subscribed(self, subscription: Subscription) -> None:
        """Kept, to be ended (``closed``) when the context stops."""
        with self._gate:
            self._subscriptions = [s for s in self._subscriptions if s.active]
            self._subscriptions.append(subscription)

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
        was, whole and writable (see :mod:`dspex_actors.migration`).
        """
        with self._migration_lock:
            if not type(self._backend).capabilities().get("distribution"):
                self._switcher.switch(self)

    def start_worker(self) -> SessionWorker:
        """A Python process working for this session (:mod:`dspex_actors.workers`);
        the first moves the session where other processes reach it."""
        self.ensure_bridged()
        boss = self._supervisor
        sharing = boss.sharing
        attach = Attach.to(
            self._backend, self._store or sharing.store, sharing.token, sharing.timeout
        )
        with self._gate, ROOM:  # one supervisor-wide count: see workers.ROOM
            if self._stopped:
                raise SessionClosed(f"session {self.session_id!r}: the context is stopped")
            check_room(len(self.workers), sum(len(c.workers) for c in boss.contexts()))
            worker = SessionWorker(
                attach, boss.policy, clock=boss.clock, on_stop=self.workers.remove
            )
            worker.on_restart, worker.on_give_up = boss.on_restart, boss.on_give_up
            self.workers.append(worker)
        return worker

    def backend_info(self) -> dict[str, Any]:
        """Which backend holds the session, and the history of its switches."""
        backend = self._backend
        cls = type(backend)
        history = self._switcher.history
        return {
            "type": backend.kind,
            "module": f"{cls.__module__}.{cls.__qualname__}",
            "requires_bridge": cls.requires_bridge(),
            "capabilities": self._capabilities(backend),
            "switches": len(history),
            "history": [dict(event) for event in history],
            "last_switch_ms": history[-1]["duration_ms"] if history else None,
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

    @classmethod
    def requires_bridge(cls) -> bool:
        """A context starts wherever its supervisor puts it; it needs no bridge."""
        return False

    @classmethod
    def capabilities(cls) -> dict[str, bool]:
        """What a context on this package's backends (local, bridged, Redis) keeps
        whatever its backend: atomic batches and streaming. ``persistence`` and
        ``distribution`` are the current backend's: see ``backend_info()``; a
        context on a backend class of your own has that class's flags."""
        return {
            "atomic_updates": True,
            "streaming": True,
            "persistence": False,
            "distribution": False,
        }

    # -- the end ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop the session: clean up its backend and leave the supervisor; idempotent."""
        with self._gate:
            while self._fenced:
                self._gate.wait()
            if self._stopped:
                return
            self._stopped = True
            backend = self._backend
            stale, self._switcher.stale_copy = self._switcher.stale_copy, None
            subscriptions, self._subscriptions = self._subscriptions, []
        for worker in list(self.workers):
            worker.stop()
        try:
            backend.cleanup()
            if stale is not None:
                stale.cleanup()  # one more try at removing it, then let the TTL do it
        finally:
            for subscription in subscriptions:
                subscription.end()
            self._supervisor._forget(self)

    def cleanup(self) -> None:
        """Stop the session (:meth:`stop`), and the supervisor too if the context has
        one of its own (:meth:`init`); idempotent."""
        self.stop()
        if self._owns_supervisor:
            self._supervisor.stop()

    def __repr__(self) -> str:
        return f"<Context {self.session_id} on {type(self._backend).__name__}>"
