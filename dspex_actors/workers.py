"""Session workers: a Python process working for one session, under its supervisor.

``ctx.start_worker()`` moves the session where other processes reach it (the bridge,
or the supervisor's Redis store: the migration a session makes when it first needs
the bridge) and spawns one process that attaches to it. ``worker.submit(fn, *args)``
runs ``fn(*args)`` there and returns a :class:`concurrent.futures.Future`; inside,
:func:`session` is that process's handle on the session, attached (``create=False``).

Processes are spawned, never forked: the parent runs gRPC's and Pykka's threads,
which a fork would copy mid-flight. The address, token and session id reach the
worker as the pool initializer's arguments, over its pipe, never on a command line
(where other users could read a token). ``fn`` and its arguments go the same way,
pickled by the standard library between this machine's own processes; nothing is
pickled over the bridge.

A worker that dies takes the calls it was running with it (their futures fail with
``BrokenProcessPool``) and is started again at the next ``submit``, the session
intact (it lives in the store), under the supervisor's one policy: more than
``max_restarts`` deaths within ``within_seconds`` and it stays stopped (``submit``
raises why). The supervisor's hooks hear both, as for a context: ``on_restart``
(session id, the ``BrokenProcessPool``) and ``on_give_up`` (session id, the final
``StateError``). A restart happens at the next ``submit``, not when the process
dies: a worker holds no state of the session's, so nothing waits on it meanwhile.
Stopping the context stops its workers. Workers are bounded: at most
:data:`MAX_PER_SESSION` per context and :data:`MAX_WORKERS` per supervisor.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, NamedTuple

from dspex_actors.errors import LimitExceeded, SessionClosed, StateError
from dspex_actors.methods import SessionMethods
from dspex_actors.provider import StateProvider
from dspex_actors.restarts import GiveUpHook, RestartHook, RestartPolicy, run_hook

__all__ = [
    "MAX_PER_SESSION",
    "MAX_WORKERS",
    "ROOM",
    "STOP_GRACE",
    "Attach",
    "SessionWorker",
    "session",
]

logger = logging.getLogger(__name__)

MAX_PER_SESSION = 4
"""Workers one context may run: each is a whole Python process."""

MAX_WORKERS = 32
"""Workers one supervisor may run in all."""

_here: list[SessionMethods] = []
"""In a worker: its session's handle (empty in any other process)."""

_pending: list[Attach] = []
"""In a worker: how to attach (its handle is opened again if the first try failed)."""

ROOM = threading.Lock()
"""Held while a worker is counted against the bounds and added: one supervisor-wide
decision, so two contexts starting workers at once cannot both pass the bound."""

STOP_GRACE = 5.0
"""Seconds a stopped worker's running call may take to end before its process is
killed."""


class Attach(NamedTuple):
    """What a worker needs to attach: a bridge address and token, or a Redis URL."""

    session_id: str
    address: str | None = None
    token: str | None = None
    redis_url: str | None = None
    timeout: float = 5.0

    @classmethod
    def to(
        cls, backend: StateProvider, redis_url: str | None, token: str | None, timeout: float
    ) -> Attach:
        """How to reach the session ``backend`` holds: in Redis at ``redis_url``
        (a RedisState), else at the bridge address the backend tells; each call of
        the worker's handle within ``timeout`` (the supervisor's ``bridge_timeout``)."""
        session_id = backend.session_id
        if backend.kind == "redis":
            return cls(session_id, redis_url=redis_url, timeout=timeout)
        return cls(session_id, getattr(backend, "address", None), token, timeout=timeout)


def session() -> SessionMethods:
    """This worker's handle on its session; ``StateError`` outside a worker. A worker
    whose first attach failed (its server unreachable, say) tries again here, and
    raises why it cannot (``BridgeUnavailable``, ``SessionNotFound``...)."""
    if not _here:
        if not _pending:
            raise StateError("not in a session worker: session() is for what a worker runs")
        _open(_pending[0])
    return _here[0]


def _attach(attach: Attach) -> None:
    """The worker's first act (the pool's initializer): open its handle. A failure
    is kept for :func:`session` to raise (and retry), not raised here: a failing
    initializer kills the process, and its caller would hear only a
    ``BrokenProcessPool`` while the pool respawned it forever."""
    _pending.append(attach)
    with contextlib.suppress(StateError):
        _open(attach)


def _open(attach: Attach) -> None:
    handle: SessionMethods
    if attach.redis_url is not None:
        from dspex_actors.redis.state import RedisState

        handle = RedisState.init(
            session_id=attach.session_id,
            url=attach.redis_url,
            create=False,
            timeout=attach.timeout,
        )
    else:
        from dspex_actors.bridge.client.bridged import BridgedState

        handle = BridgedState.init(
            session_id=attach.session_id,
            address=attach.address,
            token=attach.token,
            create=False,
            timeout=attach.timeout,
        )
    _here.append(handle)
    atexit.register(handle.cleanup)  # detaches: a worker never owns its session


class SessionWorker:
    """One process working for one session (see the module docstring)."""

    def __init__(
        self,
        attach: Attach,
        policy: RestartPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_stop: Callable[[SessionWorker], None] | None = None,
    ) -> None:
        self.session_id = attach.session_id
        self.restarts = 0
        self._attach = attach
        self._policy = policy
        self._clock = clock
        self._on_stop = on_stop
        self.on_restart: RestartHook | None = None
        """Hears each restart: (session id, the death's ``BrokenProcessPool``)."""
        self.on_give_up: GiveUpHook | None = None
        """Hears the give-up: (session id, the final ``StateError``)."""
        self._deaths: deque[float] = deque()
        self._lock = threading.Lock()
        self._stopped: StateError | None = None
        self._pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_attach,
            initargs=(self._attach,),
        )

    @property
    def alive(self) -> bool:
        """Whether it takes work (it may still be starting its process)."""
        with self._lock:
            return self._stopped is None

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Run ``fn(*args, **kwargs)`` in the worker (``fn`` importable by name there:
        a module-level function). A worker that died is started again first, within
        the supervisor's policy; past it, or once stopped, ``StateError``."""
        with self._lock:
            if self._stopped is not None:
                raise self._stopped
            pool = self._pool
            try:
                return pool.submit(fn, *args, **kwargs)
            except BrokenProcessPool as exc:
                death = exc
                refusal = self._restart(pool)
            if refusal is None:
                future = self._pool.submit(fn, *args, **kwargs)
        # The hooks run without the lock: one may well submit to this worker.
        if refusal is not None:
            self._ended()
            run_hook(self.on_give_up, "on_give_up", self.session_id, refusal)
            raise refusal
        run_hook(self.on_restart, "on_restart", self.session_id, death)
        return future

    def _restart(self, broken: ProcessPoolExecutor) -> StateError | None:
        """A fresh process for a dead one (with the lock held), or the policy's refusal."""
        broken.shutdown(wait=False, cancel_futures=True)
        now = self._clock()
        self._deaths.append(now)
        while self._deaths and now - self._deaths[0] > self._policy.within_seconds:
            self._deaths.popleft()
        if len(self._deaths) > self._policy.max_restarts:
            self._stopped = StateError(
                f"the worker of session {self.session_id!r} died {len(self._deaths)} times "
                f"within {self._policy.within_seconds}s (rule 'max_restarts', "
                f"value {self._policy.max_restarts}); it stays stopped",
                session_id=self.session_id,
            )
            return self._stopped
        self.restarts += 1
        self._pool = self._start()
        return None

    def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop the process: what it runs now gets ``grace`` seconds to end, then the
        process is killed (its call's future fails); idempotent."""
        with self._lock:
            if self._stopped is None:
                self._stopped = SessionClosed(
                    f"the worker of session {self.session_id!r} is stopped"
                )
            pool = self._pool
        # The pool offers no terminate; its processes (a private map in 3.11's
        # ProcessPoolExecutor) are the only handle on a call that never returns.
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + grace
        for process in processes:
            process.join(max(deadline - time.monotonic(), 0))
            if process.is_alive():
                logger.warning(
                    "session %s: its worker did not stop within %ss; killed",
                    self.session_id,
                    grace,
                )
                process.kill()
                process.join()
        pool.shutdown(wait=True)  # its own threads: quick once the process is gone
        self._ended()

    def _ended(self) -> None:
        on_stop, self._on_stop = self._on_stop, None
        if on_stop is not None:
            on_stop(self)

    def __enter__(self) -> SessionWorker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "alive" if self.alive else "stopped"
        return f"<SessionWorker of {self.session_id} ({state})>"


def check_room(session_workers: int, all_workers: int) -> None:
    """``LimitExceeded`` when one more worker would pass a bound."""
    for count, limit, rule in (
        (session_workers, MAX_PER_SESSION, "max_workers_per_session"),
        (all_workers, MAX_WORKERS, "max_workers"),
    ):
        if count >= limit:
            raise LimitExceeded(
                f"no more session workers: {count} running (rule {rule!r}, value {limit})",
                limit=rule,
            )
