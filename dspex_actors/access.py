"""Pythonic access to a session, written once over the public methods.

Every handle (and a Context) reads like a mapping of its variables by name and
writes like one — ``state["temperature"]``, ``state["temperature"] = 0.9``,
``"temperature" in state``, ``del state["temperature"]``, ``len(state)``, iteration
over the names — and like an object through ``state.v`` (``state.v.temperature``).
Each stands for one method (``get_variable``, ``set_variable``, ``has_variable``,
``delete_variable``, ``session_info``, ``list_variables``) and raises what that
method raises (``VariableNotFound`` is also a ``KeyError``). Assigning a variable
sets it; it does not register one (the type and constraints are the contract's).

``with state.batch():`` gathers the item and attribute assignments this thread makes
inside the block into one ``update_variables`` at its end: all applied, or none (a
constraint one breaks, or an exception that leaves the block, applies nothing). Inside
it, an item or attribute read of a name set in the batch answers the gathered value;
methods (``set_variable``, ``delete_variable``) run at once, and ``del`` is refused.

``state.variable("temperature")`` is one variable's handle: ``.value``, ``.version``,
``.record``, ``.set(...)`` and ``.subscribe(...)`` (its events only).
"""

from __future__ import annotations

import contextlib
import glob
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from dspex_actors.errors import AttributeNotFound, NotSupported, VariableNotFound

if TYPE_CHECKING:
    from dspex_actors.records import VariableRecord

__all__ = ["MappingAccess", "Variable", "Variables"]

_batches = threading.local()
"""This thread's open batches: handle -> the values gathered for it."""


class Session(Protocol):
    """The methods this module stands on (every StateProvider has them)."""

    session_id: str

    def get_variable(self, identifier: str) -> Any: ...
    def get_record(self, identifier: str) -> VariableRecord: ...
    def has_variable(self, identifier: str) -> bool: ...
    def list_variables(self, pattern: str | None = None) -> list[VariableRecord]: ...
    def session_info(self) -> dict[str, Any]: ...
    def set_variable(
        self,
        identifier: str,
        new_value: Any,
        metadata: Mapping[str, Any] | None = None,
        *,
        expected_version: int | None = None,
    ) -> int: ...
    def update_variables(
        self, updates: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
    ) -> None: ...
    def delete_variable(self, identifier: str) -> None: ...
    def subscribe(self, pattern: str | None, subscriber: Any) -> Any: ...
    def __setitem__(self, name: str, value: Any) -> None: ...
    def __getitem__(self, name: str) -> Any: ...
    def __delitem__(self, name: str) -> None: ...
    def __iter__(self) -> Iterator[str]: ...


def _gathered(state: object) -> dict[str, Any] | None:
    pending: dict[object, dict[str, Any]] | None = getattr(_batches, "open", None)
    return None if pending is None else pending.get(state)


class MappingAccess:
    """Item access, ``v``, ``batch()`` and ``variable()`` over a provider's methods
    (a base of :class:`~dspex_actors.provider.StateProvider`)."""

    __slots__ = ()

    def __getitem__(self: Session, name: str) -> Any:
        gathered = _gathered(self)
        if gathered is not None and name in gathered:
            return gathered[name]
        return self.get_variable(name)

    def __setitem__(self: Session, name: str, value: Any) -> None:
        gathered = _gathered(self)
        if gathered is not None:
            gathered[name] = value
        else:
            self.set_variable(name, value)

    def __delitem__(self: Session, name: str) -> None:
        if _gathered(self) is not None:
            raise NotSupported(
                f"del {name!r} inside a batch: a batch gathers sets only (rule 'batch'); "
                "delete it before or after the block"
            )
        self.delete_variable(name)

    def __contains__(self: Session, name: object) -> bool:
        return isinstance(name, str) and self.has_variable(name)

    def __iter__(self: Session) -> Iterator[str]:
        """The names, in creation order, as one listing read them (a snapshot)."""
        return iter([record["name"] for record in self.list_variables()])

    def __len__(self: Session) -> int:
        return int(self.session_info()["variable_count"])

    def __bool__(self) -> bool:
        """A handle is true even when its session holds no variable (``len`` is 0)."""
        return True

    @property
    def v(self: Session) -> Variables:
        """The variables as attributes: ``state.v.temperature``, ``state.v.temperature
        = 0.9``, ``del state.v.temperature``."""
        return Variables(self)

    @contextlib.contextmanager
    def batch(self: Session) -> Iterator[dict[str, Any]]:
        """Gather this thread's item and attribute assignments into one all-or-nothing
        ``update_variables`` when the block ends (nothing if it raises); yields the
        gathered values. A batch opened inside another on the same handle joins it."""
        pending: dict[object, dict[str, Any]] = getattr(_batches, "open", None) or {}
        _batches.open = pending
        if self in pending:  # nested: the outer batch applies everything
            yield pending[self]
            return
        gathered = pending[self] = {}
        try:
            yield gathered
        except BaseException:
            del pending[self]
            raise
        del pending[self]
        if gathered:
            self.update_variables(gathered)

    def variable(self: Session, name: str) -> Variable:
        """One variable's handle (the variable is read when its handle is used)."""
        return Variable(self, name)


class Variables:
    """A session's variables as attributes (``state.v``); a name that is not an
    identifier is read with ``state["name"]``."""

    __slots__ = ("_state",)

    def __init__(self, state: Session) -> None:
        object.__setattr__(self, "_state", state)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self._state[name]
        except VariableNotFound as exc:  # also an AttributeError: hasattr works
            raise AttributeNotFound(exc.message, **exc.details) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self._state[name] = value

    def __delattr__(self, name: str) -> None:
        del self._state[name]

    def __dir__(self) -> list[str]:
        return list(self._state)

    def __repr__(self) -> str:
        return f"<variables of session {self._state.session_id!r}>"


class Variable:
    """One variable of a session, by name: each use reads or writes the session."""

    __slots__ = ("name", "state")

    def __init__(self, state: Session, name: str) -> None:
        self.state = state
        self.name = name

    @property
    def value(self) -> Any:
        return self.state.get_variable(self.name)

    @property
    def record(self) -> VariableRecord:
        """Its value, version and the rest, from one moment."""
        return self.state.get_record(self.name)

    @property
    def version(self) -> int:
        return self.record.version

    def set(
        self,
        value: Any,
        metadata: dict[str, Any] | None = None,
        *,
        expected_version: int | None = None,
    ) -> int:
        """``set_variable``: the new version (``VersionConflict`` if
        ``expected_version`` is not the current one)."""
        return self.state.set_variable(
            self.name, value, metadata, expected_version=expected_version
        )

    def subscribe(self, subscriber: Any) -> Any:
        """``subscribe`` to this variable's events only."""
        return self.state.subscribe(glob.escape(self.name), subscriber)

    def __repr__(self) -> str:
        return f"<variable {self.name!r} of session {self.state.session_id!r}>"
