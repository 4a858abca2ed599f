"""Pythonic access to a session: what :class:`~dspex_actors.methods.SessionMethods`'
item, attribute, batch and variable forms build on, each over a public method.

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
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from dspex_actors.errors import AttributeNotFound, NotSupported, VariableNotFound

if TYPE_CHECKING:
    from dspex_actors.methods import SessionMethods
    from dspex_actors.records import VariableRecord

__all__ = ["Variable", "Variables", "gathered", "gathering", "refuse_delete_in_batch"]

_batches = threading.local()
"""This thread's open batches: handle -> the values gathered for it."""


def gathered(state: object) -> dict[str, Any] | None:
    """The values this thread's open batch on ``state`` gathered (None: no batch)."""
    pending: dict[object, dict[str, Any]] | None = getattr(_batches, "open", None)
    return None if pending is None else pending.get(state)


def refuse_delete_in_batch(state: object, name: str) -> None:
    """``NotSupported`` for ``del`` inside a batch (it gathers sets only)."""
    if gathered(state) is not None:
        raise NotSupported(
            f"del {name!r} inside a batch: a batch gathers sets only (rule 'batch'); "
            "delete it before or after the block"
        )


@contextlib.contextmanager
def gathering(state: SessionMethods) -> Iterator[dict[str, Any]]:
    """``state.batch()``: see the module docstring. A batch opened inside another on
    the same handle joins it."""
    pending: dict[object, dict[str, Any]] = getattr(_batches, "open", None) or {}
    _batches.open = pending
    if state in pending:  # nested: the outer batch applies everything
        yield pending[state]
        return
    values = pending[state] = {}
    try:
        yield values
    except BaseException:
        del pending[state]
        raise
    del pending[state]
    if values:
        state.update_variables(values)


class Variables:
    """A session's variables as attributes (``state.v``); a name that is not an
    identifier is read with ``state["name"]``."""

    __slots__ = ("_state",)

    def __init__(self, state: SessionMethods) -> None:
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

    def __init__(self, state: SessionMethods, name: str) -> None:
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
