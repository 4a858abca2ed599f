"""The fixtures every part of the kit shares, and the checks its modules have in common.

A backend's test class overrides what it needs here: the ``provider`` attribute, the
``provider_options`` fixture (keyword arguments for every ``provider.init``) and, for
a slow transport, ``hang_guard_seconds``. ``open_state`` and ``state`` are the only
ways the kit opens a provider, so each one is cleaned up after its test.
"""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import pytest

from dspex_actors import exports
from dspex_actors.errors import ValidationError
from dspex_actors.provider import StateProvider

__all__ = [
    "EXPORT_KEYS",
    "HANG_GUARD_SECONDS",
    "RECORD_KEYS",
    "TENSOR_2X2",
    "WORKER_GUARD_SECONDS",
    "ContractBase",
    "Opener",
    "assert_unchanged",
    "assert_validation_error",
    "guarded_call",
    "record_of",
    "run_threads",
    "same",
]

RECORD_KEYS = frozenset(exports.RECORD_KEYS)
"""Keys every variable record (``list_variables``, ``export_state`` variables) has."""

EXPORT_KEYS = frozenset({"session_id", "variables", "variable_index", "metadata"})
"""Keys every ``export_state`` result has."""

HANG_GUARD_SECONDS = 30.0
"""Default time one call may take before the kit calls it a hang (never a timing assert)."""

WORKER_GUARD_SECONDS = 60.0
"""How long the kit's worker threads may take to finish their bounded work."""

Opener = Callable[..., StateProvider]
"""The ``open_state`` factory: keyword arguments for ``init`` in, an open provider out."""

TENSOR_2X2: dict[str, Any] = {"shape": [2, 2], "data": [1.0, 2.0, 3.0, 4.0]}
"""A valid tensor value; tests pass copies of it, never the table itself."""


def same(a: Any, b: Any) -> bool:
    """Deep equality that is strict about types (``1 != 1.0``, ``True != 1``) and nan.
    Dicts compare by their items whatever their class: a VariableRecord is the plain
    dict of its items (an export's variable, a decoded listing entry)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if type(a) is not type(b):
        return False
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def record_of(state: StateProvider, name: str) -> dict[str, Any]:
    """The ``list_variables`` record of the variable called ``name``."""
    for record in state.list_variables():
        if record["name"] == name:
            return record
    raise AssertionError(f"no variable named {name!r} in list_variables()")


def assert_unchanged(state: StateProvider, before: Sequence[Mapping[str, Any]]) -> None:
    """The session still lists exactly ``before``: a failed call changed nothing."""
    after = state.list_variables()
    assert same(after, before), (
        f"a failed call changed the state:\nbefore={before!r}\nafter={after!r}"
    )


def assert_validation_error(
    err: BaseException, *, name: str, rule: str | tuple[str, ...], value: Any
) -> None:
    """``err`` is a ValidationError naming ``name``, one of ``rule``, and ``repr(value)``."""
    assert isinstance(err, ValidationError), (
        f"expected ValidationError, got {type(err).__name__}: {err}"
    )
    assert isinstance(err, ValueError)
    rules = (rule,) if isinstance(rule, str) else rule
    assert err.variable == name, f".variable is {err.variable!r}, expected {name!r}"
    assert err.rule in rules, f".rule is {err.rule!r}, expected one of {rules!r}"
    assert same(err.value, value), f".value is {err.value!r}, expected {value!r}"
    message = str(err)
    assert name in message, f"message {message!r} does not name the variable {name!r}"
    assert str(err.rule) in message, f"message {message!r} does not name the rule {err.rule!r}"
    assert repr(value) in message, f"message {message!r} does not show the value {value!r}"


def run_threads(targets: list[Callable[[], None]]) -> None:
    """Run each target in its own thread, join them all, re-raise the first failure."""
    failures: list[BaseException] = []

    def wrap(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # collected and re-raised in the test thread
                failures.append(exc)

        return run

    threads = [
        threading.Thread(target=wrap(t), name=f"compliance-worker-{i}", daemon=True)
        for i, t in enumerate(targets)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WORKER_GUARD_SECONDS)
    stuck = [t.name for t in threads if t.is_alive()]
    if stuck:
        pytest.fail(f"worker threads did not finish within {WORKER_GUARD_SECONDS}s: {stuck}")
    if failures:
        raise failures[0]


def guarded_call(
    label: str, call: Callable[[], Any], guard: float
) -> tuple[Any, BaseException | None]:
    """Run ``call`` in a helper thread; fail if it has not returned within ``guard`` s.

    Returns ``(result, None)`` or ``(None, error)``. A call that hangs leaves its
    helper thread behind (a daemon): the test fails instead of the run hanging.
    """
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = call()
        except BaseException as exc:  # reported to the test thread
            box["error"] = exc

    thread = threading.Thread(target=run, name=f"compliance-guard-{label}", daemon=True)
    thread.start()
    thread.join(guard)
    if thread.is_alive():
        pytest.fail(f"{label} did not return within {guard}s (it hangs)")
    return box.get("result"), box.get("error")


class ContractBase:
    """What every concern class of the kit builds on: the backend under test and the
    fixtures that open it."""

    provider: ClassVar[type[StateProvider]]
    hang_guard_seconds: ClassVar[float] = HANG_GUARD_SECONDS
    """Seconds a single call may block before the kit reports a hang."""

    @pytest.fixture
    def provider_options(self) -> dict[str, Any]:
        """Extra keyword arguments for every ``provider.init``; override per backend."""
        return {}

    def opened(self, state: StateProvider) -> None:
        """Called on every provider the kit opens, before a test uses it: override it
        to bring the provider into the state under test (a Context moved to the
        bridge, say). Does nothing by default."""

    @pytest.fixture
    def open_state(self, provider_options: dict[str, Any]) -> Iterator[Opener]:
        """A factory: ``open_state(**init_kwargs)`` opens a provider, cleaned up after.

        Without a ``session_id`` argument each call gets a fresh unique one; pass
        ``session_id=None`` to let the backend generate it.
        """
        provider = getattr(self, "provider", None)
        if provider is None:
            pytest.fail(f"{type(self).__name__} must set `provider = YourBackend`")
        opened: list[StateProvider] = []

        def open_(**kwargs: Any) -> StateProvider:
            options = {**provider_options, **kwargs}
            options.setdefault("session_id", f"compliance-{uuid.uuid4().hex}")
            state: StateProvider = provider.init(**options)
            opened.append(state)
            self.opened(state)
            return state

        yield open_
        errors: list[BaseException] = []
        for state in reversed(opened):
            try:
                state.cleanup()
            except Exception as exc:  # every state is cleaned before reporting
                errors.append(exc)
        if errors:
            raise errors[0]

    @pytest.fixture
    def state(self, open_state: Opener) -> StateProvider:
        """One open provider with a unique session id."""
        return open_state()
