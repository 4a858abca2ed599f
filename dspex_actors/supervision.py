"""Supervisor, Context and the local -> bridged migration.

A :class:`Supervisor` owns a Pykka actor that restarts a session actor that dies
(one-for-one, with Erlang-style restart intensity), and starts contexts. A
:class:`Context` is the user's handle on one session; it keeps the same identity
and API while its backend changes underneath.

Migration (``Context.ensure_bridged``) is seal+export -> import (one RPC, with the
server's digest of what it stored) -> verify -> swap -> retire the old actor. It
runs in the calling thread under the context's own lock, so one slow bridge never
delays another session's restart. Writes through the Context are fenced while it
runs: they wait, then go to whichever backend is current, each applied exactly
once; the old actor itself refuses writes from the seal on, so a write made on the
old backend directly cannot slip past the export either (it waits and is then
forwarded). Reads keep answering from the last committed values. Nothing is cleaned
up before the new backend holds a verified copy, and any failure leaves the session
on its old backend, whole and writable, with the half-made remote session removed.

Reads cost no more than the backend's own: the Context binds the backend's read
methods onto itself (rebound at each switch) instead of wrapping them, so a local
``get_variable`` stays a table lookup. A retired LocalState forwards to its
successor, so read methods bound before a switch keep reading live values.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self

import pykka

from dspex_actors.bridge import BridgedState, embedded, serve
from dspex_actors.bridge.server import SessionStoreServer
from dspex_actors.errors import SessionClosed, StateError
from dspex_actors.exports import ExportColumns, columns_digest
from dspex_actors.local import LocalState, ask_actor
from dspex_actors.provider import StateProvider, validate_provider
from dspex_actors.session import new_session_id

__all__ = ["Context", "Supervisor"]

logger = logging.getLogger(__name__)

BackendSpec = Literal["local", "bridged"] | type[StateProvider]
SwitchHook = Callable[[dict[str, Any]], None]
RestartHook = Callable[[str, BaseException | None], None]

_BRIDGE_PROGRAM_TYPES = frozenset({"dspy", "python"})
_CALL_TIMEOUT = 60.0


@dataclass
class _Child:
    """One supervised context and its restart record.

    The supervisor handle keeps the children (it adds and removes them); only the
    supervisor actor reads and changes ``restarts`` and ``failure``, one restart
    decision at a time, in its own thread. A child that failed for good stays
    listed until its context is stopped; its calls raise the failure.
    """

    context: Context
    restarts: deque[float] = field(default_factory=deque)
    failure: StateError | None = None


class _SupervisorActor(pykka.ThreadingActor):
    """Decides restarts, one at a time, for the handle's children."""

    use_daemon_thread = True

    def __init__(self, handle: Supervisor) -> None:
        super().__init__()
        self.handle = handle

    def on_receive(self, message: Any) -> Any:
        operation, *args = message
        if operation == "exited":
            self._ensure_running(*args)  # a forgotten child is left alone
            return None
        if operation == "ensure_running":
            return self._ensure_running(*args)
        return super().on_receive(message)

    def _ensure_running(
        self, session_id: str, error: BaseException | None = None
    ) -> StateError | None:
        """Restart the child's session actor if it died; None when it runs again."""
        child = self.handle._child(session_id)
        if child is None:
            return SessionClosed(f"context {session_id!r} is stopped")
        if child.failure is not None:
            return child.failure
        backend = child.context.backend
        if not isinstance(backend, LocalState) or backend.alive or child.context.stopped:
            return None
        handle = self.handle
        now = handle.clock()
        window = handle.within_seconds
        while child.restarts and now - child.restarts[0] > window:
            child.restarts.popleft()
        if len(child.restarts) >= handle.max_restarts:
            child.failure = StateError(
                f"context {session_id!r} stopped: its session actor died more than "
                f"{handle.max_restarts} times within {window}s (last error: {error!r})"
            )
            logger.error("%s", child.failure)
            child.context._fail(child.failure)
            return child.failure
        child.restarts.append(now)
        try:
            backend.restart()
        except StateError as exc:
            return exc
        logger.warning(
            "restarted session actor of context %r (restart %d within %.1fs): %r",
            session_id,
            len(child.restarts),
            window,
            error,
        )
        if handle.on_restart is not None:
            try:
                handle.on_restart(session_id, error)
            except Exception:
                logger.exception("on_restart hook failed")
        return None


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
        max_restarts: int,
        within_seconds: float,
        bridge_timeout: float,
        heartbeat_interval: float,
        on_switch: SwitchHook | None,
        on_restart: RestartHook | None,
        clock: Callable[[], float],
    ) -> None:
        if max_restarts < 0 or within_seconds <= 0 or heartbeat_interval <= 0:
            raise ValueError(
                "max_restarts must be >= 0, within_seconds and heartbeat_interval > 0"
            )
        self.max_restarts = max_restarts
        self.within_seconds = within_seconds
        self.token = token
        self.bridge_timeout = bridge_timeout
        self.heartbeat_interval = heartbeat_interval
        self.on_switch = on_switch
        self.on_restart = on_restart
        self.clock = clock
        self._bridge_address = bridge_address
        self._private_server: SessionStoreServer | None = None
        self._uses_shared_server = False
        self._heartbeats: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._children: dict[str, _Child | None] = {}  # None: being started
        self._stopped = False
        self._ref = _SupervisorActor.start(self)

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
        clock: Callable[[], float] = time.monotonic,
    ) -> Self:
        """Start a supervisor.

        ``bridge_address`` names a running SessionStore; without it the supervisor
        uses the process's embedded one (a private one when ``token`` is given),
        started the first time a session needs the bridge. Bridged contexts send a
        heartbeat every ``heartbeat_interval`` seconds, so an idle session never
        reaches the server's TTL. ``on_switch`` hears each switch's record,
        ``on_restart`` each restart; ``clock`` (monotonic seconds) measures the
        restart-intensity window.
        """
        return cls(
            bridge_address=bridge_address,
            token=token,
            max_restarts=max_restarts,
            within_seconds=within_seconds,
            bridge_timeout=bridge_timeout,
            heartbeat_interval=heartbeat_interval,
            on_switch=on_switch,
            on_restart=on_restart,
            clock=clock,
        )

    @property
    def bridge_address(self) -> str | None:
        """The SessionStore address in use once the bridge is up (None before)."""
        with self._lock:
            return self._bridge_address

    def _ensure_bridge(self) -> str:
        """The bridge address, starting the embedded server and heartbeats on first need."""
        with self._lock:
            if self._stopped:
                raise SessionClosed("the supervisor is stopped")
            if self._bridge_address is None:
                if self.token is None:
                    self._bridge_address = embedded.acquire()
                    self._uses_shared_server = True
                else:
                    self._private_server = serve(token=self.token)
                    self._bridge_address = self._private_server.address
                logger.info("using embedded SessionStore at %s", self._bridge_address)
            if self._heartbeats is None:
                self._heartbeats = threading.Thread(
                    target=self._send_heartbeats, name="dspex-heartbeats", daemon=True
                )
                self._heartbeats.start()
            return self._bridge_address

    def _send_heartbeats(self) -> None:
        """Keep bridged sessions of idle contexts from expiring on the server."""
        while not self._stopping.wait(self.heartbeat_interval):
            for context in self.contexts():
                backend = context.backend
                if isinstance(backend, BridgedState):
                    try:
                        backend.heartbeat()
                    except StateError as exc:
                        logger.warning("heartbeat of %s failed: %s", context.session_id, exc)

    def open_bridged(self, session_id: str) -> BridgedState:
        """A BridgedState for ``session_id`` on this supervisor's bridge."""
        return BridgedState.init(
            session_id=session_id,
            address=self._ensure_bridge(),
            token=self.token,
            timeout=self.bridge_timeout,
        )

    def start_context(
        self, *, session_id: str | None = None, backend: BackendSpec = "local"
    ) -> Context:
        """Start a supervised session; ``backend`` is "local", "bridged" or a provider class."""
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
                provider = LocalState.init(session_id=session_id, on_exit=self._child_exited)
            elif backend == "bridged":
                provider = self.open_bridged(session_id)
            else:
                assert isinstance(backend, type)
                provider = backend.init(session_id=session_id)
        except BaseException:
            with self._lock:
                self._children.pop(session_id, None)
            raise
        context = Context(self, session_id, provider)
        with self._lock:
            stopped = self._stopped
            if not stopped:
                self._children[session_id] = _Child(context)
        if stopped:  # stop() ran meanwhile and could not see this context
            provider.cleanup()
            raise SessionClosed("the supervisor is stopped")
        return context

    def contexts(self) -> list[Context]:
        """The running contexts."""
        with self._lock:
            return [c.context for c in self._children.values() if c is not None]

    def _child(self, session_id: str) -> _Child | None:
        """The running child of that session, if any."""
        with self._lock:
            return self._children.get(session_id)

    def _child_exited(self, session_id: str, error: BaseException | None) -> None:
        """on_exit hook of supervised session actors (runs in the dying actor's thread)."""
        # A stopped supervisor has nothing to restart.
        with contextlib.suppress(pykka.ActorDeadError):
            self._ref.tell(("exited", session_id, error))

    def _ask(self, *message: Any) -> Any:
        return ask_actor(self._ref, message, _CALL_TIMEOUT, "supervisor")

    def _forget(self, context: Context) -> None:
        with self._lock:
            self._children.pop(context.session_id, None)

    def stop(self) -> None:
        """Stop every context, the heartbeats, the supervisor actor and its server."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            contexts = [c.context for c in self._children.values() if c is not None]
        for context in contexts:
            context.stop()
        self._stopping.set()
        if self._heartbeats is not None:
            self._heartbeats.join(_CALL_TIMEOUT)
        self._ref.stop(block=True, timeout=_CALL_TIMEOUT)
        if self._private_server is not None:
            self._private_server.stop(grace=None)
        if self._uses_shared_server:
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


def _failed_reader(error: StateError) -> Callable[..., Any]:
    def fail(*_args: Any, **_kwargs: Any) -> Any:
        raise error

    return fail


class Context:
    """A session handle whose API stays the same while its backend changes.

    Every StateProvider operation is here and returns plain values, raising
    ``dspex_actors.errors``. ``get_variable``, ``get_variables``,
    ``list_variables``, ``export_state`` and ``export_columns`` are the current
    backend's own bound methods (rebound at each switch), so they cost what the
    backend's do.
    """

    get_variable: Callable[[str], Any]
    get_variables: Callable[[Iterable[str]], dict[str, Any]]
    list_variables: Callable[[], list[dict[str, Any]]]
    export_state: Callable[[], dict[str, Any]]
    export_columns: Callable[[], ExportColumns]

    def __init__(self, supervisor: Supervisor, session_id: str, backend: StateProvider) -> None:
        self.session_id = session_id
        self._supervisor = supervisor
        self._backend = backend
        self._gate = threading.Condition()
        self._migration_lock = threading.Lock()
        self._fenced = False
        self._writers = 0
        self._stopped = False
        self._failure: StateError | None = None
        self._programs: dict[str, dict[str, Any]] = {}
        self._history: list[dict[str, Any]] = []
        self._bind(backend)

    def _bind(self, backend: StateProvider) -> None:
        self.get_variable = backend.get_variable
        self.get_variables = backend.get_variables
        self.list_variables = backend.list_variables
        self.export_state = backend.export_state
        self.export_columns = backend.export_columns

    def _fail(self, error: StateError) -> None:
        """Called by the supervisor when the child exceeded its restart intensity."""
        with self._gate:
            self._failure = error
            fail = _failed_reader(error)
            self.get_variable = self.get_variables = fail
            self.list_variables = self.export_state = self.export_columns = fail
            backend = self._backend
        backend.cleanup()

    @property
    def backend(self) -> StateProvider:
        """The current backend (changes at a switch; keep the Context, not this)."""
        return self._backend

    @property
    def stopped(self) -> bool:
        return self._stopped

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

    def _write(self, operation: Callable[[StateProvider], Any]) -> Any:
        """Run a write on the current backend; after a session-actor death, wait for
        the supervisor's restart and retry once (the dead actor never applied it)."""
        for attempt in (0, 1):
            backend = self._enter()
            try:
                return operation(backend)
            except SessionClosed:
                if attempt or self._stopped or not isinstance(backend, LocalState):
                    raise
            finally:
                self._leave()
            # Outside the gate: a migration may be waiting for writers to drain.
            self._supervisor._ask("ensure_running", self.session_id)
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
        return str(
            self._write(
                lambda b: b.register_variable(
                    name,
                    type,
                    initial_value,
                    constraints=constraints,
                    metadata=metadata,
                    description=description,
                )
            )
        )

    def set_variable(
        self,
        identifier: str,
        new_value: Any,
        metadata: Mapping[str, Any] | None = None,
        *,
        expected_version: int | None = None,
    ) -> int:
        return int(
            self._write(
                lambda b: b.set_variable(
                    identifier, new_value, metadata, expected_version=expected_version
                )
            )
        )

    def update_variables(
        self, updates: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
    ) -> None:
        self._write(lambda b: b.update_variables(updates, metadata))

    def delete_variable(self, identifier: str) -> None:
        self._write(lambda b: b.delete_variable(identifier))

    def import_state(self, exported: Mapping[str, Any]) -> None:
        self._write(lambda b: b.import_state(exported))

    def import_columns(self, columns: ExportColumns) -> None:
        self._write(lambda b: b.import_columns(columns))

    def subscribe(self, pattern: str, subscriber: Callable[[dict[str, Any]], None]) -> Any:
        return self._backend.subscribe(pattern, subscriber)

    def unsubscribe(self, subscription: Any) -> None:
        self._backend.unsubscribe(subscription)

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
        """Move the session to the bridge now; idempotent.

        Raises a StateError naming the failed step; the session then stays where it
        was, whole and writable.
        """
        with self._migration_lock:
            if not isinstance(self._backend, BridgedState):
                self._migrate()

    def _migrate(self) -> None:
        """seal+export -> import -> verify -> swap -> retire the old backend."""
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
        new: BridgedState | None = None
        swapped = False
        step = "export"
        try:
            columns = old.seal() if isinstance(old, LocalState) else old.export_columns()
            try:
                step = "import"
                new = self._supervisor.open_bridged(self.session_id)
                if not new.owner:
                    # Someone else's session already has this id: never import into it.
                    raise StateError(f"session {self.session_id!r} already exists on the bridge")
                digest = new.import_with_digest(columns)
                step = "verify"
                # The server hashed what it stored: equal digests mean equal ids, names,
                # types, values, versions, constraints, metadata and timestamps.
                if digest != columns_digest(columns):
                    raise StateError(
                        "verification failed: the bridged copy differs from the export"
                    )
            except BaseException:
                if new is not None:
                    with contextlib.suppress(Exception):
                        new.cleanup()  # the owner's cleanup removes the half-made session
                if isinstance(old, LocalState):
                    old.unseal()
                raise
            with self._gate:
                self._backend = new
                self._bind(new)
            swapped = True
        except Exception as exc:
            raise StateError(
                f"migration of session {self.session_id!r} to the bridge failed at step "
                f"{step!r}; it stays on {type(old).__name__}: {exc}"
            ) from exc
        finally:
            with self._gate:
                self._fenced = False
                self._gate.notify_all()
        if swapped:
            if isinstance(old, LocalState):
                old.retire(successor=new)
            else:
                old.cleanup()
            self._record_switch(old, new, started, columns.variable_count)

    def _record_switch(
        self, old: StateProvider, new: StateProvider, started: float, variables: int
    ) -> None:
        elapsed_ms = (time.perf_counter() - started) * 1000
        event = {
            "session_id": self.session_id,
            "from": _kind(old),
            "to": _kind(new),
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
            "type": _kind(backend),
            "module": f"{cls.__module__}.{cls.__qualname__}",
            "requires_bridge": cls.requires_bridge(),
            "capabilities": cls.capabilities(),
            "switches": len(self._history),
            "history": [dict(event) for event in self._history],
            "last_switch_ms": self._history[-1]["duration_ms"] if self._history else None,
        }

    def stop(self) -> None:
        """Stop the session: clean up its backend and leave the supervisor; idempotent."""
        with self._gate:
            while self._fenced:
                self._gate.wait()
            if self._stopped:
                return
            self._stopped = True
            backend = self._backend
        try:
            backend.cleanup()
        finally:
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


def _kind(backend: StateProvider) -> str:
    if isinstance(backend, LocalState):
        return "local"
    if isinstance(backend, BridgedState):
        return "bridged"
    return "custom"
