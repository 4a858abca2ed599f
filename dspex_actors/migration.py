"""The switch: a session moved from its backend to a shared one, losing and doubling no write.

seal+export -> import (one call, answered with the digest of what was stored) ->
verify -> commit -> swap -> retire the old backend. :class:`Switcher` runs it for one
:class:`~dspex_actors.supervision.Context`, in the calling thread under the context's
own lock, so one slow bridge never delays another session's restart. Writes through
the Context are fenced while it runs: they wait, then go to whichever backend is
current, each applied exactly once. A backend that implements the migration protocol
(:class:`~dspex_actors.provider.Migratable`, as LocalState does) is sealed, so a
write made on the old backend directly cannot slip past the export either (it waits
and is then forwarded); one without it is exported as it stands and cleaned up after
the swap, so only writes through the Context are fenced. Reads keep answering from
the last committed values. Nothing is cleaned up before the new backend holds a
verified copy, and any failure leaves the session on its old backend, whole and
writable, with the half-made copy removed — or, when where it lives cannot be told,
remembered and removed before the next attempt, so it never blocks one.

A context's subscriptions move with the session: each reads a :class:`ContextSource`,
which goes on from the switch's cut on the new backend once the old one has given
its last event, so each event is delivered once, in order.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from dspex_actors import failpoints
from dspex_actors.delivery import Source
from dspex_actors.errors import SessionNotFound, StateError
from dspex_actors.exports import ExportColumns, columns_digest
from dspex_actors.methods import events_of
from dspex_actors.provider import Migratable, MigrationTarget, StateProvider
from dspex_actors.streaming import Event
from dspex_actors.urls import redacted

__all__ = ["CALL_TIMEOUT", "ContextSource", "Moving", "Switcher", "Switching"]

logger = logging.getLogger(__name__)

CALL_TIMEOUT = 60.0
"""Seconds a switch waits for a moving subscription's last events from the old backend."""

OpenCopy = Callable[[str, str | None], tuple[Any, Callable[[], None]]]
Moved = Callable[[], None]
SwitchHook = Callable[[dict[str, Any]], None]


class Moving(Protocol):
    """A subscription that follows its session to the new backend."""

    def move(self, backend: StateProvider, start: int | None) -> None: ...
    def finish_move(self, timeout: float) -> None: ...


class Switching(Protocol):
    """What a switch asks of the context it moves."""

    session_id: str

    def _fence(self) -> StateProvider:
        """Stop new writes, wait for those running; answer the backend now."""
        ...

    def _swap(self, new: StateProvider) -> list[Moving]:
        """Make ``new`` the backend (reads too); answer the subscriptions to move."""
        ...

    def _unfence(self) -> None:
        """Let writes in again (to whichever backend is current)."""
        ...


class Switcher:
    """One context's switches: the switch itself, their history, and a copy that a
    failed one could not remove."""

    def __init__(
        self,
        session_id: str,
        store: str | None,
        open_copy: OpenCopy,
        on_switch: SwitchHook | None,
        moved: Moved = lambda: None,
    ) -> None:
        self.session_id = session_id
        self.store = store  # a redis:// URL: the copy goes into that Redis; else the bridge
        self.history: list[dict[str, Any]] = []
        self.stale_copy: MigrationTarget | None = None  # left by a failed switch
        self._open_copy = open_copy
        self._on_switch = on_switch
        self._moved = moved  # told at once after the swap (the heartbeats' period)

    @property
    def destination(self) -> str:
        """Where the session goes, fit for messages (no password)."""
        return "the bridge" if self.store is None else redacted(self.store)

    def switch(self, context: Switching) -> None:
        """seal+export -> import -> verify -> commit -> swap -> retire the old backend.

        Every step before the swap can fail and leave the session wholly on its old
        backend, unsealed and writable: the copy is created pending (invisible to
        other processes) and removed again. After the swap the copy is the session:
        retiring the old backend cannot undo that. Raises a ``StateError`` naming
        the failed step (``.details["step"]``).
        """
        started = time.perf_counter()
        old = context._fence()
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
            moving = context._swap(new)
        except Exception as exc:
            raise StateError(
                f"migration of session {self.session_id!r} to {self.destination} failed "
                f"at step {step[0]!r}; it stays on {type(old).__name__}: {exc}",
                step=step[0],
            ) from exc
        finally:
            context._unfence()
        # The switch has happened: what follows can only be logged, never undo it.
        self._moved()
        start = columns.sequence if columns.sequence > 0 else None
        for subscription in moving:
            try:
                subscription.move(new, start)
            except Exception:
                logger.exception("session %s: a subscription could not move", self.session_id)
        self._retire(old, sealed, new)
        for subscription in moving:
            subscription.finish_move(CALL_TIMEOUT)
        self._record(old, new, started, columns.variable_count)

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

    def _copy(self, columns: ExportColumns, step: list[str]) -> Any:
        """Import ``columns`` into a new pending session (on the bridge, or in the
        context's store), verify and commit it (``step[0]`` names the step under
        way); a failure removes the half-made copy. Answers the copy: a
        StateProvider and a MigrationTarget."""
        step[0] = "import"
        failpoints.hit("migration.import")
        new, on_commit = self._open_copy(self.session_id, self.store)
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
        so the next switch removes that incarnation first."""
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
            self.stale_copy = copy
            return
        copy.cleanup()

    def _remove_stale_copy(self) -> None:
        """Remove the copy an earlier failed switch left behind, if any."""
        stale, self.stale_copy = self.stale_copy, None
        if stale is not None:
            self._discard(stale)
            if self.stale_copy is not None:
                raise StateError(
                    f"a copy of session {self.session_id!r} from an earlier failed migration "
                    f"is still on {self.destination} and could not be removed"
                )

    def _record(self, old: StateProvider, new: StateProvider, started: float, count: int) -> None:
        """Keep the switch in the history, log it, and tell the hook."""
        elapsed_ms = (time.perf_counter() - started) * 1000
        event = {
            "session_id": self.session_id,
            "from": old.kind,
            "to": new.kind,
            "duration_ms": elapsed_ms,
            "variables": count,
            "at": time.time(),
        }
        self.history.append(event)
        logger.info(
            "session %s switched %s -> %s in %.2f ms (%d variables)",
            self.session_id,
            event["from"],
            event["to"],
            elapsed_ms,
            count,
            extra={"dspex_switch": event},
        )
        hook = self._on_switch
        if hook is not None:
            try:
                hook(dict(event))
            except Exception:
                logger.exception("on_switch hook failed")


class ContextSource:
    """A context's events across its switches (a :class:`~dspex_actors.delivery.
    Source`): its backend's source, then, once that one gave its last event (the
    retired backend's ``closed``), the new backend's, started at the switch's cut —
    so its subscriber sees each event once, in order."""

    def __init__(
        self, source: Source[Event], pattern: str | None, on_close: Callable[[], None]
    ) -> None:
        self._current = source
        self._pattern = pattern
        self._next: Source[Event] | None = None  # the new backend's, while the old drains
        self._retired: list[Source[Event]] = []  # to close, in the delivery's thread
        self._on_close = on_close
        self._lock = threading.Lock()
        self._moved = threading.Event()
        self._moved.set()
        self._closed = False

    def move(self, backend: StateProvider, start: int | None) -> None:
        """Go on from ``start`` (the cut) on the session's new backend (nothing, once
        closed: a subscription ended while its session moved opens nothing there)."""
        if self._closed:
            return
        new = events_of(backend, self._pattern, start)
        with self._lock:
            taken = not self._closed
            if taken and start is None:  # no cut to go on from: the old one is done
                self._retired.append(self._current)
                self._current = new
            elif taken:
                self._next = new
                self._moved.clear()
        if not taken:  # closed meanwhile: the new source must not live on
            new.close()

    def finish_move(self, timeout: float) -> None:
        """After the old backend retired: wait until its last events were read, else
        (a backend that never says ``closed``) go on from the new one now."""
        if self._moved.wait(timeout):
            return
        logger.error("a subscription did not drain the old backend in %ss", timeout)
        with self._lock:
            old, pending = self._current, self._next
            if pending is not None:
                self._retired.append(old)
                self._current, self._next = pending, None
        old.wake()
        self._moved.set()

    def read(self, timeout: float) -> list[Event]:
        with self._lock:
            retired, self._retired = self._retired, []
            current = self._current
        for source in retired:
            source.close()
        events = current.read(timeout)
        with self._lock:  # after the read: a move made while it waited counts
            pending = self._next if self._current is current else None
        if pending is None:
            return events
        for at, event in enumerate(events):
            if event.kind == "closed":  # the old backend is done: the new one follows
                with self._lock:
                    if self._current is current:
                        self._current, self._next = pending, None
                current.close()
                self._moved.set()
                return events[:at]
        return events

    def ready(self) -> None:
        with self._lock:
            current = self._current
        current.ready()

    @property
    def position(self) -> int | None:
        """The current backend's (the old one's while it drains: below the cut)."""
        with self._lock:
            current = self._current
        return current.position

    def wake(self) -> None:
        with self._lock:
            sources = [self._current, *([self._next] if self._next is not None else [])]
        for source in sources:
            source.wake()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sources = [self._current, *self._retired]
            if self._next is not None:
                sources.append(self._next)
            self._retired, self._next = [], None
        self._moved.set()  # nothing more to drain: a switch waiting on it goes on
        for source in sources:
            source.close()
        self._on_close()
