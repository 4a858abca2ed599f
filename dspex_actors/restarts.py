"""One supervision policy, one implementation: the Supervisor and the server share it.

Erlang's one-for-one restart intensity: a child (a session) that dies is restarted
in place, its variables kept; one that dies ``max_restarts`` times within
``within_seconds`` is given up on instead, and its failure is final. Deaths are
counted the same way everywhere, and a clean exit the child did not ask for (an
external ``actor_ref.stop()``) is a death like a crash: a session that should run
and does not is restarted.

:class:`RestartSupervisor` is a Pykka actor that takes those decisions one at a
time, in its own thread, for the children registered with it. What a child is —
a Context under a Supervisor, a session held by the SessionStore — is the
:class:`Child` protocol: whether it needs a restart, how to restart it, what giving
up means. ``on_restart(session_id, error)`` hears every restart and
``on_give_up(session_id, failure)`` every child given up on (tests wait on them,
never on log text).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import pykka

from dspex_actors.errors import SessionClosed, StateError

__all__ = [
    "Child",
    "GiveUpHook",
    "RestartHook",
    "RestartPolicy",
    "RestartSupervisor",
    "run_hook",
]

logger = logging.getLogger(__name__)

RestartHook = Callable[[str, BaseException | None], None]
"""Called with (session_id, the error that killed it, or None) after each restart."""

GiveUpHook = Callable[[str, StateError], None]
"""Called with (session_id, its final failure) once a child is given up on."""


@dataclass(frozen=True)
class RestartPolicy:
    """Restart intensity: at most ``max_restarts`` restarts within ``within_seconds``."""

    max_restarts: int = 3
    within_seconds: float = 5.0

    def __post_init__(self) -> None:
        if type(self.max_restarts) is not int or self.max_restarts < 0:
            raise ValueError(f"max_restarts must be an int >= 0, got {self.max_restarts!r}")
        if not self.within_seconds > 0:
            raise ValueError(f"within_seconds must be positive, got {self.within_seconds!r}")


class Child(Protocol):
    """Something a RestartSupervisor keeps running."""

    @property
    def session_id(self) -> str: ...

    def needs_restart(self) -> bool:
        """Whether it should be running and is not."""
        ...

    def restart(self) -> None:
        """Bring it back (raises StateError if it cannot)."""
        ...

    def give_up(self, error: StateError) -> None:
        """It died too often: make ``error`` its final state."""
        ...


@dataclass
class _Record:
    child: Child
    restarts: deque[float] = field(default_factory=deque)
    failure: StateError | None = None


class _Message:
    __slots__ = ()

    def apply(self, supervisor: RestartSupervisor) -> Any:
        raise NotImplementedError


@dataclass(slots=True)
class _Watch(_Message):
    child: Child

    def apply(self, supervisor: RestartSupervisor) -> None:
        supervisor.records[self.child.session_id] = _Record(self.child)


@dataclass(slots=True)
class _Forget(_Message):
    session_id: str

    def apply(self, supervisor: RestartSupervisor) -> None:
        supervisor.records.pop(self.session_id, None)


@dataclass(slots=True)
class _EnsureRunning(_Message):
    session_id: str
    error: BaseException | None

    def apply(self, supervisor: RestartSupervisor) -> StateError | None:
        return supervisor.ensure_running(self.session_id, self.error)


class RestartSupervisor(pykka.ThreadingActor):
    """Decides restarts, one at a time, for the children registered with it.

    Use :meth:`start_supervisor`; talk to it through the returned
    :class:`SupervisorRef`.
    """

    use_daemon_thread = True

    def __init__(
        self,
        policy: RestartPolicy,
        on_restart: RestartHook | None,
        on_give_up: GiveUpHook | None,
        clock: Callable[[], float],
        what: str,
    ) -> None:
        super().__init__()
        self.policy = policy
        self.on_restart = on_restart
        self.on_give_up = on_give_up
        self.clock = clock
        self.what = what
        self.records: dict[str, _Record] = {}

    @classmethod
    def start_supervisor(
        cls,
        policy: RestartPolicy,
        *,
        on_restart: RestartHook | None = None,
        on_give_up: GiveUpHook | None = None,
        clock: Callable[[], float] = time.monotonic,
        what: str = "session",
    ) -> SupervisorRef:
        """Start one; ``clock`` (monotonic seconds) measures the intensity window."""
        return SupervisorRef(cls.start(policy, on_restart, on_give_up, clock, what))

    def on_receive(self, message: _Message) -> Any:
        return message.apply(self)

    def ensure_running(self, session_id: str, error: BaseException | None) -> StateError | None:
        """Restart the child if it needs it; None when it runs, else why it cannot."""
        record = self.records.get(session_id)
        if record is None:
            return SessionClosed(f"{self.what} {session_id!r} is stopped", session_id=session_id)
        if record.failure is not None:
            return record.failure
        child = record.child
        if not child.needs_restart():
            return None
        policy = self.policy
        now = self.clock()
        while record.restarts and now - record.restarts[0] > policy.within_seconds:
            record.restarts.popleft()
        if len(record.restarts) >= policy.max_restarts:
            record.failure = StateError(
                f"{self.what} {session_id!r} stopped: it died more than "
                f"{policy.max_restarts} times within {policy.within_seconds}s "
                f"(last error: {error!r})",
                session_id=session_id,
            )
            logger.error("%s", record.failure)
            try:
                child.give_up(record.failure)
            except Exception:
                logger.exception("giving up on %s %s failed", self.what, session_id)
            run_hook(self.on_give_up, "on_give_up", session_id, record.failure)
            return record.failure
        record.restarts.append(now)
        try:
            child.restart()
        except StateError as exc:
            return exc
        logger.warning(
            "restarted %s %s (restart %d within %gs): %r",
            self.what,
            session_id,
            len(record.restarts),
            policy.within_seconds,
            error,
        )
        run_hook(self.on_restart, "on_restart", session_id, error)
        return None


def run_hook(hook: Callable[[str, Any], None] | None, name: str, *args: Any) -> None:
    """A user hook's failure is logged, never raised into the supervisor."""
    if hook is not None:
        try:
            hook(*args)
        except Exception:
            logger.exception("%s hook failed", name)


class SupervisorRef:
    """The handle on a running :class:`RestartSupervisor` (typed, thread-safe)."""

    __slots__ = ("_ref",)

    def __init__(self, ref: pykka.ActorRef[RestartSupervisor]) -> None:
        self._ref = ref

    def watch(self, child: Child) -> None:
        """Keep ``child`` running from now on (told: it never blocks the caller)."""
        self._ref.tell(_Watch(child))

    def forget(self, session_id: str) -> None:
        """Stop supervising a child (it was stopped on purpose)."""
        with contextlib.suppress(pykka.ActorDeadError):  # stopping: nothing to forget
            self._ref.tell(_Forget(session_id))

    def exited(self, session_id: str, error: BaseException | None) -> None:
        """A child's session died (its exit hook); decide in the supervisor's thread."""
        with contextlib.suppress(pykka.ActorDeadError):  # stopped: nothing to restart
            self._ref.tell(_EnsureRunning(session_id, error))

    def ensure_running(self, session_id: str, timeout: float) -> StateError | None:
        """Restart the child now if it died; None when it runs, else why it cannot."""
        try:
            answer: Any = self._ref.ask(_EnsureRunning(session_id, None), timeout=timeout)
        except pykka.ActorDeadError:
            return SessionClosed("the supervisor is stopped")
        except pykka.Timeout:
            return StateError(f"the supervisor did not answer within {timeout}s")
        result: StateError | None = answer
        return result

    def stop(self, timeout: float) -> None:
        """Stop the supervisor actor (its children are the owner's to stop)."""
        self._ref.stop(block=True, timeout=timeout)
