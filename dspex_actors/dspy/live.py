"""Some of a session's variables, kept current in this process by one subscription.

A DSPy module reads its settings on every model call; a round trip to the session
per call would cost more than the settings are worth. :class:`LiveValues` reads the
variables once, then follows the session's change events: a call reads a snapshot
in memory, swapped whole on each change, so one call never sees half of a batch of
changes applied.

Each variable is pinned to the definition it had when bound (its type and
constraints). Every backend validates writes already; the pin guards against what a
write cannot: a variable deleted, or registered again under another type, while a
module depends on it. A value the pinned definition refuses is counted in
:attr:`LiveValues.refused` and logged, and the last good value stays. A deleted
variable keeps its last good value too.

Overflow (the subscription fell behind the session's kept history) reads every
bound variable again; ``closed`` (the session ended) keeps the last values.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from dspex_actors.delivery import Subscription
from dspex_actors.errors import StateError, ValidationError, VariableNotFound
from dspex_actors.methods import SessionMethods
from dspex_actors.streaming import Event
from dspex_actors.vartypes import Validator, compile_type

__all__ = ["LiveValues", "Snapshot"]

logger = logging.getLogger(__name__)

_GLOB_SPECIALS = frozenset("*?[]")


class Snapshot(NamedTuple):
    """The bound values at one moment: read whole, never changed in place."""

    values: Mapping[str, Any]
    versions: Mapping[str, int]
    generation: int
    """Counts the changes applied; a new generation is a new snapshot."""


class _Change(NamedTuple):
    variable_id: str
    value: Any
    version: int


class LiveValues:
    """The current values of ``names`` in the session ``handle`` holds (see the module
    docstring). Each name must exist when bound (``VariableNotFound`` otherwise).

    ``handle`` is any of this package's handles or a ``Context`` (whose subscription
    follows the session across a switch to the bridge or to Redis); use it in the
    process that runs the module (a session worker's own ``workers.session()``).
    """

    def __init__(self, handle: SessionMethods, names: Iterable[str]) -> None:
        self.handle = handle
        self.names: tuple[str, ...] = tuple(dict.fromkeys(names))
        self.refused = 0
        """Values delivered that the pinned definitions refused (never applied)."""
        self._changed = threading.Condition()
        self._pins: dict[str, Validator] = {}
        self._ids: dict[str, str] = {}  # each name's variable id (changes if registered again)
        self._heard: dict[str, int] = {}  # events heard per name: a read they overtook is stale
        self._snapshot = Snapshot(MappingProxyType({}), MappingProxyType({}), 0)
        self._subscription: Subscription | None = None
        if not self.names:
            return
        for name in self.names:
            record = handle.get_record(name)
            self._pins[name] = compile_type(name, record.type, record.constraints)
        # Subscribe first, then read: a write between the two is in both, and the
        # versions keep the newer one whatever order they arrive in.
        pattern = self.names[0] if len(self.names) == 1 else None
        if pattern is not None and _GLOB_SPECIALS & set(pattern):
            pattern = None  # a name with glob characters: filter here instead
        self._subscription = handle.subscribe(pattern, self._on_event)
        try:
            self.refresh()
        except BaseException:
            self.close()
            raise

    @property
    def snapshot(self) -> Snapshot:
        """The values now (one attribute read: no lock, no round trip)."""
        return self._snapshot

    @property
    def values(self) -> Mapping[str, Any]:
        return self.snapshot.values

    def refresh(self) -> dict[str, Any]:
        """Read every bound variable now (one round trip per variable); return the
        values that changed. What a write made before this call set is then here."""
        with self._changed:
            heard = dict(self._heard)
        changes: dict[str, _Change] = {}
        for name in self.names:
            try:
                record = self.handle.get_record(name)
            except VariableNotFound:
                continue  # deleted: keep the last good value
            changes[name] = _Change(record.id, record.value, record.version)
        return self._apply(changes, heard)

    def wait_for(
        self, name: str, version: int, timeout: float, *, variable_id: str | None = None
    ) -> bool:
        """Wait until the write of ``name`` at ``version`` (or a later one) is here:
        applied, or refused by its pin (:attr:`refused`); whether it came within
        ``timeout`` seconds. With ``variable_id`` (a record's ``id``), the write must
        be to that variable (one registered again under the name has a new id). The
        way to know a write another process made has reached this one."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._snapshot.versions.get(name, 0) < version or (
                variable_id is not None and self._ids.get(name) != variable_id
            ):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def close(self) -> None:
        """Stop following the session; the last values stay readable. Idempotent."""
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            with contextlib.suppress(StateError):  # the session or its handle ended
                self.handle.unsubscribe(subscription)

    def __enter__(self) -> LiveValues:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __deepcopy__(self, memo: dict[int, Any]) -> LiveValues:
        # DSPy's optimizers deep-copy a program: a copy reads the same values, and
        # closing it leaves the original following the session.
        return _Borrowed(self)

    def _on_event(self, event: Event) -> None:
        if event.kind == "overflow":
            try:
                self.refresh()
            except StateError as exc:  # the next event or refresh() tries again
                logger.warning("could not read %s again after an overflow: %s", self.names, exc)
        elif event.kind in ("registered", "updated") and event.name in self._pins:
            assert event.version is not None and event.variable_id is not None
            with self._changed:
                self._heard[event.name] = self._heard.get(event.name, 0) + 1
            self._apply({event.name: _Change(event.variable_id, event.value, event.version)})
        elif event.kind == "deleted" and event.name in self._pins:
            with self._changed:  # a read made before it is stale now
                self._heard[event.name] = self._heard.get(event.name, 0) + 1

    def _apply(
        self, changes: Mapping[str, _Change], heard: Mapping[str, int] | None = None
    ) -> dict[str, Any]:
        """Swap in a snapshot with each change that is newer (or of a variable
        registered again: a new id counts its versions anew) and that its pin takes.
        ``heard``: what a read saw of the events heard; a name with events heard
        since is left out (its read is older than what they said)."""
        applied: dict[str, Any] = {}
        with self._changed:
            current = self._snapshot
            values, versions = dict(current.values), dict(current.versions)
            for name, (variable_id, value, version) in changes.items():
                if heard is not None and self._heard.get(name, 0) != heard.get(name, 0):
                    continue
                same = self._ids.get(name) == variable_id
                if same and version <= versions.get(name, 0):
                    continue
                self._ids[name] = variable_id
                try:
                    checked = self._pins[name].check(name, value)
                except ValidationError as exc:
                    self.refused += 1
                    versions[name] = version  # seen: an older value must not follow it
                    logger.warning("kept the last good %r: %s", name, exc)
                    continue
                thaw = self._pins[name].thaw
                values[name] = thaw(checked) if thaw is not None else checked
                versions[name] = version
                applied[name] = values[name]
            if versions != current.versions or applied:
                self._snapshot = Snapshot(
                    MappingProxyType(values), MappingProxyType(versions), current.generation + 1
                )
            self._changed.notify_all()  # a waiter may wait for a new id, too
        return applied


class _Borrowed(LiveValues):
    """A copied program's view of its original's values: the same snapshot, waits
    and refresh; its ``close()`` leaves the original following the session (the
    original's own ``close()`` ends both)."""

    def __init__(self, original: LiveValues) -> None:  # no super().__init__: a view
        self._original = original
        self.handle = original.handle
        self.names = original.names

    @property
    def snapshot(self) -> Snapshot:
        return self._original.snapshot

    @property
    def refused(self) -> int:  # type: ignore[override]
        return self._original.refused

    def refresh(self) -> dict[str, Any]:
        return self._original.refresh()

    def wait_for(
        self, name: str, version: int, timeout: float, *, variable_id: str | None = None
    ) -> bool:
        return self._original.wait_for(name, version, timeout, variable_id=variable_id)

    def close(self) -> None:
        """A copy's close: nothing (the original follows on)."""
