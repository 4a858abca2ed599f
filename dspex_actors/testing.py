"""The StateProvider compliance kit: one pytest class a backend inherits to prove the contract.

This is the Python form of the seed's ``use DSPex.Bridge.StateProviderTest, provider: X``::

    from dspex_actors.testing import StateProviderContract

    class TestMyBackend(StateProviderContract):
        provider = MyBackend

A backend that needs options (an address, a token) overrides the ``provider_options``
fixture; its dict is passed as keyword arguments to every ``provider.init(...)``::

    class TestBridged(StateProviderContract):
        provider = BridgedState

        @pytest.fixture
        def provider_options(self, bridge_server):
            return {"address": bridge_server.address}

What the kit proves: the seed's four tests, then every type and constraint (accepted
values, coercions, each bad value rejected with a ``ValidationError`` that names the
variable, the rule and the value, and changes nothing), bad constraint definitions,
versions and ``expected_version`` (including concurrent compare-and-set writers that
must lose no update), metadata, batches that are all or nothing, export/import
fidelity and rejection of bad exports, capabilities, cleanup and the context manager,
readers that never see half a batch, and exports and listings taken while a writer
registers, sets, deletes and updates that are each one consistent moment.

The kit only uses the public contract (:class:`~dspex_actors.provider.StateProvider`
and :mod:`dspex_actors.errors`), so it runs unchanged against any backend. It is
deterministic: threads meet on barriers, events and queues, every loop is bounded, and
nothing is timed; the only timeout is a hang guard that turns a call that never
returns into a failure instead of a stuck test run.

Every provider the kit opens goes through the ``open_state`` factory fixture, which
cleans each one up after the test, pass or fail. A cleanup that raises there is
reported as a test error: cleanup must be idempotent and must not fail.

For pytest's detailed assertion messages inside the kit, register it for assertion
rewriting in your ``conftest.py`` before anything imports it::

    pytest.register_assert_rewrite("dspex_actors.testing")
"""

from __future__ import annotations

import copy
import math
import queue
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, NamedTuple

import msgpack
import pytest

from dspex_actors import exports
from dspex_actors.errors import (
    InvalidExport,
    NotSupported,
    PartialFailure,
    StateError,
    ValidationError,
    VariableExists,
    VariableNotFound,
    VersionConflict,
)
from dspex_actors.provider import (
    CAPABILITY_KEYS,
    StateProvider,
    get_capabilities,
    is_provider,
    validate_provider,
)

__all__ = ["RECORD_KEYS", "StateProviderContract"]

RECORD_KEYS = frozenset(exports.RECORD_KEYS)
"""Keys every variable record (``list_variables``, ``export_state`` variables) has."""

EXPORT_KEYS = frozenset({"session_id", "variables", "variable_index", "metadata"})

HANG_GUARD_SECONDS = 30.0
"""Default time one call may take before the kit calls it a hang (never a timing assert)."""

WORKER_GUARD_SECONDS = 60.0
"""How long the kit's worker threads may take to finish their bounded work."""

Opener = Callable[..., StateProvider]

TENSOR_2X2: dict[str, Any] = {"shape": [2, 2], "data": [1.0, 2.0, 3.0, 4.0]}


# --------------------------------------------------------------------------- helpers


def same(a: Any, b: Any) -> bool:
    """Deep equality that is strict about types (``1 != 1.0``, ``True != 1``) and nan."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _record(state: StateProvider, name: str) -> dict[str, Any]:
    """The ``list_variables`` record of the variable called ``name``."""
    for record in state.list_variables():
        if record["name"] == name:
            return record
    raise AssertionError(f"no variable named {name!r} in list_variables()")


def _assert_unchanged(state: StateProvider, before: list[dict[str, Any]]) -> None:
    after = state.list_variables()
    assert same(after, before), (
        f"a failed call changed the state:\nbefore={before!r}\nafter={after!r}"
    )


def _assert_validation_error(
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


def _guarded(
    label: str, call: Callable[[], Any], guard: float
) -> tuple[Any, BaseException | None]:
    """Run ``call`` in a helper thread; fail if it has not returned within ``guard`` s."""
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


def _run_threads(targets: list[Callable[[], None]]) -> None:
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


def _race_reader_against_writer(
    write: Callable[[int], None], rounds: int, read: Callable[[bool], None]
) -> None:
    """Run ``write(i)`` for ``i`` in 1..rounds in one thread, ``read`` in another.

    Before each round the writer waits until the reader has completed a read since
    the last round, so writes land among reads rather than in one burst while the
    reader waits for its turn. The reader reads until it has read once after the
    last round; ``read(finished)`` is told whether the writer had finished before
    that read began. A failing reader releases the writer, which then stops.
    """
    max_reads = 1_000_000  # bounds the reader should the writer get stuck
    barrier = threading.Barrier(2)
    written = threading.Event()
    have_read = threading.Event()
    reader_gone = threading.Event()

    def writer() -> None:
        barrier.wait(WORKER_GUARD_SECONDS)
        try:
            for i in range(1, rounds + 1):
                assert have_read.wait(WORKER_GUARD_SECONDS), "the reader stopped reading"
                if reader_gone.is_set():
                    return
                have_read.clear()
                write(i)
        finally:
            written.set()

    def reader() -> None:
        barrier.wait(WORKER_GUARD_SECONDS)
        try:
            for _ in range(max_reads):
                finished = written.is_set()
                read(finished)
                have_read.set()
                if finished:
                    return
        finally:
            reader_gone.set()
            have_read.set()

    # Hand the GIL over sooner than the default 5 ms: each round is a hand-off
    # between the two threads, and the reader never blocks on its own.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.0002)
    try:
        _run_threads([writer, reader])
    finally:
        sys.setswitchinterval(interval)


def _check_export_snapshot(exported: Any, session_id: str) -> dict[str, dict[str, Any]]:
    """Assert one export is whole and msgpack-encodable; return its records by name.

    Whole: ``variable_index`` maps exactly the names of ``variables`` to their ids,
    every record carries its own key as ``id``, and no name appears twice.
    """
    assert isinstance(exported, dict), f"export_state returned {type(exported).__name__}"
    missing = EXPORT_KEYS - set(exported)
    assert not missing, f"export lacks {sorted(missing)}"
    assert exported["session_id"] == session_id
    variables, index = exported["variables"], exported["variable_index"]
    assert isinstance(variables, dict), f"export variables is {type(variables).__name__}"
    assert isinstance(index, dict), f"export variable_index is {type(index).__name__}"
    by_name: dict[str, dict[str, Any]] = {}
    for var_id, record in variables.items():
        assert isinstance(record, dict), f"export record {var_id!r} is {record!r}"
        lacking = RECORD_KEYS - set(record)
        assert not lacking, f"export record {var_id!r} lacks {sorted(lacking)}"
        assert record["id"] == var_id, f"export record under {var_id!r} has id {record['id']!r}"
        assert record["name"] not in by_name, f"export names {record['name']!r} twice"
        by_name[record["name"]] = record
    expected_index = {name: record["id"] for name, record in by_name.items()}
    assert index == expected_index, (
        f"variable_index {index!r} does not match the variables {expected_index!r}"
    )
    assert isinstance(msgpack.packb(exported), bytes)
    return by_name


def _check_listing(records: Any) -> dict[str, dict[str, Any]]:
    """Assert one ``list_variables`` result has unique ids and names; return it by name."""
    assert isinstance(records, list), f"list_variables returned {type(records).__name__}"
    for record in records:
        assert isinstance(record, dict), f"list_variables gave a record {record!r}"
        lacking = RECORD_KEYS - set(record)
        assert not lacking, f"listed record {record.get('id')!r} lacks {sorted(lacking)}"
    ids = [record["id"] for record in records]
    names = [record["name"] for record in records]
    assert len(set(ids)) == len(ids), f"list_variables repeats an id: {ids}"
    assert len(set(names)) == len(names), f"list_variables repeats a name: {names}"
    return {record["name"]: record for record in records}


def _export_of_integers(names: list[str], value: int) -> dict[str, Any]:
    """An export map of integer variables ``names``, each holding ``value``."""
    now = time.time()
    records = {
        f"var_{uuid.uuid4().hex}": {
            "name": name,
            "type": "integer",
            "value": value,
            "constraints": {},
            "metadata": {},
            "version": 0,
            "created_at": now,
            "last_updated_at": now,
        }
        for name in names
    }
    for var_id, record in records.items():
        record["id"] = var_id
    return {
        "session_id": "elsewhere",
        "variables": records,
        "variable_index": {r["name"]: var_id for var_id, r in records.items()},
        "metadata": {},
    }


def _snapshots(state: StateProvider) -> list[tuple[str, dict[str, dict[str, Any]]]]:
    """An export, then a listing, each checked whole; each as its records by name."""
    exported = _check_export_snapshot(state.export_state(), state.session_id)
    listed = _check_listing(state.list_variables())
    return [("export_state", exported), ("list_variables", listed)]


def _advance(last: int, now: int, source: str, finished: bool, rounds: int) -> int:
    """``now``, the write a read saw, after checking it never goes back and, for a
    read begun after the writer finished, that it is the last of ``rounds``."""
    assert now >= last, f"{source} went back in time: {last} then {now}"
    if finished:
        assert now == rounds, f"{source} after the last write saw write {now}"
    return now


def _assert_one_version(record: Mapping[str, Any], source: str) -> int:
    """The record's value was written at its version (the writer sets value = version)."""
    value, version = record["value"], record["version"]
    assert type(version) is int, f"{source}: {record['name']!r} version is {version!r}"
    assert same(value, version), (
        f"{source}: {record['name']!r} mixes two writes: value {value!r} at version {version}"
    )
    return version


# ----------------------------------------------------------------------- type tables


class Accepted(NamedTuple):
    """A value a type accepts, and what is stored (after coercion)."""

    vtype: str
    constraints: dict[str, Any]
    value: Any
    stored: Any


class Rejected(NamedTuple):
    """A value a type rejects, with a good value for the same variable and the rule."""

    vtype: str
    constraints: dict[str, Any]
    good: Any
    bad: Any
    rule: str | tuple[str, ...]


class BadConstraints(NamedTuple):
    """A constraint set that must be refused at registration, and the rule it breaks.

    The message must name the variable, the rule and ``mentions`` (the offending key,
    when it is not the rule itself).
    """

    vtype: str
    constraints: dict[str, Any]
    value: Any
    rule: str
    mentions: str = ""


_BOUNDED = {"min": 0.0, "max": 2.0}

ACCEPTED = [
    Accepted("float", {}, 0.5, 0.5),
    Accepted("float", {}, 1, 1.0),
    Accepted("float", {}, -3, -3.0),
    Accepted("float", {}, math.inf, math.inf),
    Accepted("float", {}, -math.inf, -math.inf),
    Accepted("float", {}, math.nan, math.nan),
    Accepted("float", _BOUNDED, 0.0, 0.0),
    Accepted("float", _BOUNDED, 2, 2.0),
    Accepted("float", {"min": 0.0}, math.inf, math.inf),
    Accepted("float", {"max": 0.0}, -math.inf, -math.inf),
    Accepted("integer", {}, 42, 42),
    Accepted("integer", {}, -7, -7),
    Accepted("integer", {}, 2**40, 2**40),
    Accepted("integer", {"min": 1, "max": 10}, 1, 1),
    Accepted("integer", {"min": 1, "max": 10}, 10, 10),
    Accepted("string", {}, "", ""),
    Accepted("string", {}, "héllo ✓", "héllo ✓"),
    Accepted("string", {"min_length": 2, "max_length": 4}, "ab", "ab"),
    Accepted("string", {"min_length": 2, "max_length": 4}, "abcd", "abcd"),
    Accepted("string", {"pattern": "^[a-z]+$"}, "abc", "abc"),
    Accepted("string", {"enum": ["concise", "verbose"]}, "verbose", "verbose"),
    Accepted("boolean", {}, True, True),
    Accepted("boolean", {}, False, False),
    Accepted("choice", {"choices": ["a", "b", "c"]}, "b", "b"),
    Accepted("module", {}, "ChainOfThought", "ChainOfThought"),
    Accepted("module", {"allowed_modules": ["Predict", "ChainOfThought"]}, "Predict", "Predict"),
    Accepted("embedding", {}, [0.25, -1.5], [0.25, -1.5]),
    Accepted("embedding", {}, [1, 2, 3], [1.0, 2.0, 3.0]),
    Accepted("embedding", {"dimensions": 3}, [0.1, 0.2, 0.3], [0.1, 0.2, 0.3]),
    Accepted("tensor", {}, TENSOR_2X2, TENSOR_2X2),
    Accepted(
        "tensor",
        {"shape": [3]},
        {"shape": [3], "data": [1.0, 2.0, 3.0]},
        {"shape": [3], "data": [1.0, 2.0, 3.0]},
    ),
]

REJECTED = [
    Rejected("float", {}, 0.5, "0.5", "type"),
    Rejected("float", {}, 0.5, True, "type"),
    Rejected("float", {}, 0.5, None, "type"),
    Rejected("float", {}, 0.5, [1.0], "type"),
    Rejected("float", _BOUNDED, 1.0, 2.5, "max"),
    Rejected("float", _BOUNDED, 1.0, -0.1, "min"),
    Rejected("float", _BOUNDED, 1.0, math.inf, "max"),
    Rejected("float", {"min": 0.0}, 1.0, -math.inf, "min"),
    Rejected("float", _BOUNDED, 1.0, math.nan, ("min", "max")),
    Rejected("float", {"max": 2.0}, 1.0, math.nan, "max"),
    Rejected("integer", {}, 1, 1.5, "type"),
    Rejected("integer", {}, 1, True, "type"),
    Rejected("integer", {}, 1, "3", "type"),
    Rejected("integer", {}, 1, None, "type"),
    Rejected("integer", {"min": 1, "max": 10}, 5, 0, "min"),
    Rejected("integer", {"min": 1, "max": 10}, 5, 11, "max"),
    Rejected("string", {}, "ok", None, "type"),
    Rejected("string", {}, "ok", 5, "type"),
    Rejected("string", {}, "ok", b"bytes", "type"),
    Rejected("string", {"min_length": 2}, "ok", "a", "min_length"),
    Rejected("string", {"max_length": 3}, "ok", "abcd", "max_length"),
    Rejected("string", {"pattern": "^[a-z]+$"}, "ok", "ABC", "pattern"),
    Rejected("string", {"enum": ["concise", "verbose"]}, "concise", "chatty", "enum"),
    Rejected("boolean", {}, True, 1, "type"),
    Rejected("boolean", {}, True, 0, "type"),
    Rejected("boolean", {}, True, "true", "type"),
    Rejected("boolean", {}, True, None, "type"),
    Rejected("choice", {"choices": ["a", "b"]}, "a", "c", "choices"),
    Rejected("module", {}, "Predict", 5, "type"),
    Rejected("module", {}, "Predict", None, "type"),
    Rejected("module", {"allowed_modules": ["Predict"]}, "Predict", "ReAct", "allowed_modules"),
    Rejected("embedding", {}, [1.0], "0.1,0.2", "type"),
    Rejected("embedding", {}, [1.0], 1.0, "type"),
    Rejected("embedding", {}, [1.0], [1.0, "a"], "type"),
    Rejected("embedding", {}, [1.0], [1.0, None], "type"),
    Rejected("embedding", {"dimensions": 3}, [1.0, 2.0, 3.0], [1.0, 2.0], "dimensions"),
    Rejected("tensor", {}, TENSOR_2X2, [1.0, 2.0], "type"),
    # A size that does not match the shape: no ``shape`` constraint is involved, so the
    # rule may be reported as "type" or as "shape".
    Rejected(
        "tensor", {}, TENSOR_2X2, {"shape": [2, 2], "data": [1.0, 2.0, 3.0]}, ("type", "shape")
    ),
    Rejected("tensor", {}, TENSOR_2X2, {"data": [1.0]}, "type"),
    Rejected("tensor", {}, TENSOR_2X2, {"shape": [2], "data": ["a", "b"]}, "type"),
    Rejected(
        "tensor",
        {"shape": [2, 2]},
        TENSOR_2X2,
        {"shape": [4], "data": [1.0, 2.0, 3.0, 4.0]},
        "shape",
    ),
]

BAD_CONSTRAINTS = [
    BadConstraints("float", {"min": 2.0, "max": 1.0}, 1.5, "min"),
    BadConstraints("integer", {"min": 10, "max": 1}, 5, "min"),
    BadConstraints("float", {"min": "0"}, 1.0, "min"),
    BadConstraints("string", {"min_length": 5, "max_length": 2}, "abc", "min_length"),
    BadConstraints("string", {"min_length": -1}, "abc", "min_length"),
    BadConstraints("string", {"pattern": "[unclosed"}, "abc", "pattern"),
    # A key that does not belong to the type: rule "constraints", the key in the message.
    BadConstraints("float", {"pattern": "^a$"}, 1.0, "constraints", "pattern"),
    BadConstraints("boolean", {"min": 0}, True, "constraints", "min"),
    BadConstraints("integer", {"choices": [1, 2]}, 1, "constraints", "choices"),
    BadConstraints("string", {"colour": "red"}, "abc", "constraints", "colour"),
    BadConstraints("choice", {}, "a", "choices"),
    BadConstraints("embedding", {"dimensions": "three"}, [1.0], "dimensions"),
    BadConstraints("embedding", {"dimensions": -1}, [1.0], "dimensions"),
    BadConstraints("tensor", {"shape": "2x2"}, TENSOR_2X2, "shape"),
    BadConstraints("module", {"allowed_modules": "Predict"}, "Predict", "allowed_modules"),
]


def _case_id(vtype: str, constraints: Mapping[str, Any], value: Any) -> str:
    keys = "+".join(sorted(constraints)) or "plain"
    return f"{vtype}-{keys}-{value!r}"


# -------------------------------------------------------------------- export mutations


_GHOST_ID = "var_" + "0" * 32
_OTHER_ID = "var_" + "f" * 32


def _beta(export: dict[str, Any]) -> dict[str, Any]:
    record: dict[str, Any] = export["variables"][export["variable_index"]["beta"]]
    return record


def _drop(key: str) -> Callable[[dict[str, Any]], Any]:
    def mutate(export: dict[str, Any]) -> Any:
        del export[key]
        return export

    return mutate


def _drop_record_key(key: str) -> Callable[[dict[str, Any]], Any]:
    def mutate(export: dict[str, Any]) -> Any:
        del _beta(export)[key]
        return export

    return mutate


def _set_record(key: str, value: Any) -> Callable[[dict[str, Any]], Any]:
    def mutate(export: dict[str, Any]) -> Any:
        _beta(export)[key] = value
        return export

    return mutate


def _ghost_in_index(export: dict[str, Any]) -> Any:
    export["variable_index"]["ghost"] = _GHOST_ID
    return export


def _unindexed(export: dict[str, Any]) -> Any:
    del export["variable_index"]["beta"]
    return export


def _swapped_index(export: dict[str, Any]) -> Any:
    index = export["variable_index"]
    index["alpha"], index["beta"] = index["beta"], index["alpha"]
    return export


def _variables_as_list(export: dict[str, Any]) -> Any:
    export["variables"] = list(export["variables"].values())
    return export


class BadExport(NamedTuple):
    """A way to break a good export, what import must raise, and what the message names."""

    label: str
    mutate: Callable[[dict[str, Any]], Any]
    raises: tuple[type[StateError], ...]
    names: tuple[str, ...]


_MALFORMED = (InvalidExport,)
_MALFORMED_OR_INVALID = (InvalidExport, ValidationError)

BAD_EXPORTS = [
    BadExport("not-a-mapping", lambda e: [e], _MALFORMED, ("",)),
    BadExport("missing-session_id", _drop("session_id"), _MALFORMED, ("session_id",)),
    BadExport("missing-variables", _drop("variables"), _MALFORMED, ("variables",)),
    BadExport("missing-variable_index", _drop("variable_index"), _MALFORMED, ("variable_index",)),
    BadExport("variables-not-a-mapping", _variables_as_list, _MALFORMED, ("variables",)),
    BadExport("index-names-unknown-id", _ghost_in_index, _MALFORMED, ("ghost", _GHOST_ID)),
    BadExport("variable-missing-from-index", _unindexed, _MALFORMED, ("beta",)),
    BadExport("index-swapped", _swapped_index, _MALFORMED, ("alpha", "beta")),
    BadExport(
        "record-id-differs-from-key",
        _set_record("id", _OTHER_ID),
        _MALFORMED,
        ("beta", _OTHER_ID),
    ),
    BadExport("record-without-value", _drop_record_key("value"), _MALFORMED_OR_INVALID, ("beta",)),
    BadExport(
        "record-without-version", _drop_record_key("version"), _MALFORMED_OR_INVALID, ("beta",)
    ),
    BadExport(
        "record-version-not-int", _set_record("version", "one"), _MALFORMED_OR_INVALID, ("beta",)
    ),
    BadExport("unknown-type", _set_record("type", "quaternion"), (ValidationError,), ("beta",)),
    BadExport("value-breaks-max", _set_record("value", 99), (ValidationError,), ("beta",)),
    BadExport("value-wrong-type", _set_record("value", "ten"), (ValidationError,), ("beta",)),
    BadExport(
        "constraint-min-above-max",
        _set_record("constraints", {"min": 10, "max": 1}),
        (ValidationError,),
        ("beta",),
    ),
    BadExport(
        "constraint-foreign-key",
        _set_record("constraints", {"pattern": "^a$"}),
        (ValidationError,),
        ("beta",),
    ),
]


# ------------------------------------------------------------------------------ kit


class _ContractBase:
    """Fixtures shared by every part of the kit."""

    provider: ClassVar[type[StateProvider]]
    hang_guard_seconds: ClassVar[float] = HANG_GUARD_SECONDS
    """Seconds a single call may block before the kit reports a hang."""

    @pytest.fixture
    def provider_options(self) -> dict[str, Any]:
        """Extra keyword arguments for every ``provider.init``; override per backend."""
        return {}

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


class _SeedContract(_ContractBase):
    """The seed's four tests (``DSPex.Bridge.StateProviderTest``), translated."""

    def test_implements_all_required_callbacks(self) -> None:
        validate_provider(self.provider)  # raises TypeError naming what is missing
        assert is_provider(self.provider)

    def test_basic_variable_lifecycle(self, open_state: Opener) -> None:
        state = open_state(session_id="test")

        var_id = state.register_variable("test_var", "string", "hello")
        assert isinstance(var_id, str)
        assert var_id

        assert state.get_variable("test_var") == "hello"
        assert state.get_variable(var_id) == "hello"

        state.set_variable("test_var", "world", {})
        assert state.get_variable("test_var") == "world"

        state.delete_variable("test_var")
        with pytest.raises(VariableNotFound):
            state.get_variable("test_var")

        assert state.cleanup() is None

    def test_batch_operations(self, open_state: Opener) -> None:
        state = open_state(session_id="test")
        state.register_variable("a", "integer", 1)
        state.register_variable("b", "integer", 2)
        state.register_variable("c", "integer", 3)

        values = state.get_variables(["a", "b", "c"])
        assert values["a"] == 1
        assert values["b"] == 2
        assert values["c"] == 3

        assert state.update_variables({"a": 10, "b": 20, "c": 30}, {}) is None

        assert state.get_variable("a") == 10
        assert state.get_variable("b") == 20
        assert state.get_variable("c") == 30
        state.cleanup()

    def test_export_and_import_state(self, open_state: Opener) -> None:
        state1 = open_state(session_id="test")
        state1.register_variable("x", "float", 3.14)
        state1.register_variable("y", "string", "test")

        exported = state1.export_state()
        assert exported["session_id"] == "test"
        assert len(exported["variables"]) == 2

        state2 = open_state(session_id="test2")
        assert state2.import_state(exported) is None

        assert state2.get_variable("x") == 3.14
        assert state2.get_variable("y") == "test"

        state1.cleanup()
        state2.cleanup()

    def test_capabilities_and_metadata(self) -> None:
        caps = self.provider.capabilities()
        assert isinstance(caps, dict)
        assert isinstance(caps["atomic_updates"], bool)
        assert isinstance(caps["streaming"], bool)
        assert isinstance(self.provider.requires_bridge(), bool)


class _TypesContract(_ContractBase):
    """Every type and constraint: accepted, coerced, rejected, and bad definitions."""

    @pytest.mark.parametrize(
        "case", ACCEPTED, ids=[_case_id(c.vtype, c.constraints, c.value) for c in ACCEPTED]
    )
    def test_type_accepts_value(self, state: StateProvider, case: Accepted) -> None:
        name = f"knob_{case.vtype}"
        var_id = state.register_variable(
            name,
            case.vtype,
            copy.deepcopy(case.value),
            constraints=copy.deepcopy(case.constraints),
        )
        for got in (
            state.get_variable(name),
            state.get_variable(var_id),
            state.get_variables([name])[name],
            _record(state, name)["value"],
            state.export_state()["variables"][var_id]["value"],
        ):
            assert same(got, case.stored), f"stored {got!r}, expected {case.stored!r}"

        # The same value through set_variable is accepted and coerced the same way.
        assert state.set_variable(name, copy.deepcopy(case.value)) == 1
        assert same(state.get_variable(name), case.stored)
        record = _record(state, name)
        assert record["type"] == case.vtype
        assert same(record["constraints"], case.constraints)

    @pytest.mark.parametrize("path", ["register", "set", "update"])
    @pytest.mark.parametrize(
        "case", REJECTED, ids=[_case_id(c.vtype, c.constraints, c.bad) for c in REJECTED]
    )
    def test_type_rejects_value(self, state: StateProvider, case: Rejected, path: str) -> None:
        name = f"knob_{case.vtype}"
        # The tables are shared by every test: the backend only ever sees copies.
        bad, good, constraints = copy.deepcopy((case.bad, case.good, case.constraints))
        state.register_variable("bystander", "integer", 7)
        if path == "register":
            before = state.list_variables()
            with pytest.raises(ValidationError) as info:
                state.register_variable(name, case.vtype, bad, constraints=constraints)
            _assert_validation_error(info.value, name=name, rule=case.rule, value=case.bad)
            _assert_unchanged(state, before)
            with pytest.raises(VariableNotFound):
                state.get_variable(name)
            return

        state.register_variable(name, case.vtype, good, constraints=constraints)
        state.set_variable(name, copy.deepcopy(good))  # version 1: "unchanged" is not "fresh"
        before = state.list_variables()
        if path == "set":
            with pytest.raises(ValidationError) as info:
                state.set_variable(name, bad, {"touched": True})
            _assert_validation_error(info.value, name=name, rule=case.rule, value=case.bad)
        else:
            with pytest.raises(PartialFailure) as batch:
                state.update_variables({"bystander": 8, name: bad}, {"touched": True})
            assert set(batch.value.errors) == {name}
            _assert_validation_error(
                batch.value.errors[name], name=name, rule=case.rule, value=case.bad
            )
        _assert_unchanged(state, before)

    @pytest.mark.parametrize(
        "case",
        BAD_CONSTRAINTS,
        ids=[_case_id(c.vtype, c.constraints, c.value) for c in BAD_CONSTRAINTS],
    )
    def test_bad_constraints_rejected_at_registration(
        self, state: StateProvider, case: BadConstraints
    ) -> None:
        name = f"knob_{case.vtype}"
        before = state.list_variables()
        value, constraints = copy.deepcopy((case.value, case.constraints))
        with pytest.raises(ValidationError) as info:
            state.register_variable(name, case.vtype, value, constraints=constraints)
        err = info.value
        assert err.variable == name
        assert err.rule == case.rule, f".rule is {err.rule!r}, expected {case.rule!r}"
        message = str(err)
        assert name in message, f"message {message!r} does not name {name!r}"
        assert case.rule in message, f"message {message!r} does not name {case.rule!r}"
        assert case.mentions in message, f"message {message!r} does not name {case.mentions!r}"
        _assert_unchanged(state, before)
        with pytest.raises(VariableNotFound):
            state.get_variable(name)

    @pytest.mark.parametrize("type_name", ["quaternion", "", "Float"])
    def test_unknown_type_rejected(self, state: StateProvider, type_name: str) -> None:
        before = state.list_variables()
        with pytest.raises(ValidationError) as info:
            state.register_variable("mystery", type_name, 1.0)
        _assert_validation_error(info.value, name="mystery", rule="type", value=type_name)
        _assert_unchanged(state, before)

    def test_metadata_must_be_plain_data(self, state: StateProvider) -> None:
        before = state.list_variables()
        not_plain: list[Any] = [{"handle": object()}, {1: "int key"}, {"nested": {"s": {1, 2}}}]
        for bad in not_plain:
            with pytest.raises(ValidationError) as info:
                state.register_variable("knob", "integer", 1, metadata=bad)
            assert "knob" in str(info.value), f"message {str(info.value)!r} does not name knob"
        _assert_unchanged(state, before)

        state.register_variable("knob", "integer", 1)
        state.register_variable("other", "integer", 2)
        before = state.list_variables()
        with pytest.raises(ValidationError) as info:
            state.set_variable("knob", 2, {"handle": object()})
        assert "knob" in str(info.value), f"message {str(info.value)!r} does not name knob"
        # A batch whose metadata is not plain data: refused as a whole, nothing applied.
        with pytest.raises((PartialFailure, ValidationError)):
            state.update_variables({"knob": 3, "other": 4}, {"handle": object()})
        _assert_unchanged(state, before)

    def test_coerced_values_have_the_stored_type(self, state: StateProvider) -> None:
        state.register_variable("temperature", "float", 1)
        assert type(state.get_variable("temperature")) is float
        state.set_variable("temperature", 2)
        assert type(state.get_variable("temperature")) is float
        state.update_variables({"temperature": 0})
        assert type(state.get_variable("temperature")) is float

        state.register_variable("vector", "embedding", [1, 2])
        assert [type(x) for x in state.get_variable("vector")] == [float, float]
        state.update_variables({"vector": [3, 4]})
        assert state.get_variable("vector") == [3.0, 4.0]
        assert [type(x) for x in state.get_variable("vector")] == [float, float]


class _VariablesContract(_ContractBase):
    """Registration, lookup by name and id, versions, metadata, records and deletion."""

    def test_register_returns_distinct_ids_usable_as_identifiers(
        self, state: StateProvider
    ) -> None:
        ids = [state.register_variable(f"v{i}", "integer", i) for i in range(5)]
        assert all(isinstance(i, str) and i for i in ids)
        assert len(set(ids)) == 5
        assert set(ids).isdisjoint({f"v{i}" for i in range(5)})
        for i, var_id in enumerate(ids):
            assert state.get_variable(var_id) == i
            assert state.get_variable(f"v{i}") == i
            assert _record(state, f"v{i}")["id"] == var_id

    def test_register_taken_name_raises_variable_exists(self, state: StateProvider) -> None:
        state.register_variable("temperature", "float", 0.7)
        before = state.list_variables()
        with pytest.raises(VariableExists) as info:
            state.register_variable("temperature", "integer", 3)
        assert info.value.variable == "temperature"
        assert "temperature" in str(info.value)
        _assert_unchanged(state, before)
        assert state.get_variable("temperature") == 0.7

    def test_versions_start_at_zero_and_grow_by_one(self, state: StateProvider) -> None:
        var_id = state.register_variable("temperature", "float", 0.7)
        assert _record(state, "temperature")["version"] == 0
        assert state.set_variable("temperature", 0.8) == 1
        assert state.set_variable(var_id, 0.9) == 2
        assert state.set_variable("temperature", 0.9) == 3  # same value is still a write
        assert _record(state, "temperature")["version"] == 3
        assert state.export_state()["variables"][var_id]["version"] == 3

        with pytest.raises(ValidationError):
            state.set_variable("temperature", "hot")
        assert _record(state, "temperature")["version"] == 3

    def test_update_variables_bumps_each_updated_variable_once(self, state: StateProvider) -> None:
        a_id = state.register_variable("a", "integer", 0)
        state.register_variable("b", "integer", 0)
        state.register_variable("c", "integer", 0)
        state.set_variable("b", 1)
        state.update_variables({a_id: 5, "b": 6})
        versions = {r["name"]: r["version"] for r in state.list_variables()}
        assert versions == {"a": 1, "b": 2, "c": 0}
        assert state.get_variables(["a", "b", "c"]) == {"a": 5, "b": 6, "c": 0}

    def test_expected_version_current_succeeds(self, state: StateProvider) -> None:
        state.register_variable("temperature", "float", 0.7)
        assert state.set_variable("temperature", 0.8, expected_version=0) == 1
        assert state.set_variable("temperature", 0.9, expected_version=1) == 2
        assert state.get_variable("temperature") == 0.9

    @pytest.mark.parametrize("expected", [0, 5])
    def test_expected_version_stale_raises_version_conflict(
        self, state: StateProvider, expected: int
    ) -> None:
        state.register_variable("temperature", "float", 0.7)
        state.set_variable("temperature", 0.8)
        before = state.list_variables()
        with pytest.raises(VersionConflict) as info:
            state.set_variable("temperature", 1.5, {"by": "stale"}, expected_version=expected)
        err = info.value
        assert err.variable == "temperature"
        assert err.expected == expected
        assert err.actual == 1
        assert "temperature" in str(err)
        _assert_unchanged(state, before)
        assert state.get_variable("temperature") == 0.8

    def test_expected_version_concurrent_writers_lose_no_update(
        self, state: StateProvider
    ) -> None:
        """Compare-and-set increments from several threads: every increment lands once."""
        state.register_variable("counter", "integer", 0)
        writers, increments = 4, 60
        max_attempts = increments * 200
        barrier = threading.Barrier(writers)
        conflicts: list[int] = [0] * writers

        def increment(index: int) -> Callable[[], None]:
            def run() -> None:
                barrier.wait(WORKER_GUARD_SECONDS)
                done = attempts = 0
                while done < increments:
                    attempts += 1
                    assert attempts <= max_attempts, f"writer {index} made no progress"
                    record = _record(state, "counter")
                    try:
                        new_version = state.set_variable(
                            "counter", record["value"] + 1, expected_version=record["version"]
                        )
                    except VersionConflict as exc:
                        assert exc.expected == record["version"]
                        assert exc.actual is not None
                        assert exc.actual > record["version"]
                        conflicts[index] += 1
                        continue
                    assert new_version == record["version"] + 1
                    done += 1

            return run

        _run_threads([increment(i) for i in range(writers)])
        record = _record(state, "counter")
        assert record["value"] == writers * increments, f"lost updates ({conflicts=})"
        assert record["version"] == writers * increments

    def test_set_variable_merges_metadata(self, state: StateProvider) -> None:
        state.register_variable(
            "style",
            "choice",
            "concise",
            constraints={"choices": ["concise", "verbose"]},
            metadata={"owner": "tuner", "round": 1},
            description="Prompt style",
        )
        record = _record(state, "style")
        assert record["metadata"]["owner"] == "tuner"
        assert record["metadata"]["round"] == 1
        assert record["metadata"]["description"] == "Prompt style"

        state.set_variable("style", "verbose", {"round": 2, "source": "optimizer"})
        metadata = _record(state, "style")["metadata"]
        assert metadata == {
            "owner": "tuner",
            "round": 2,
            "source": "optimizer",
            "description": "Prompt style",
        }
        state.set_variable("style", "concise")  # no metadata: metadata kept
        assert _record(state, "style")["metadata"] == metadata

    def test_update_variables_merges_metadata_into_each(self, state: StateProvider) -> None:
        state.register_variable("a", "integer", 1, metadata={"keep": True})
        state.register_variable("b", "integer", 2)
        state.register_variable("c", "integer", 3)
        state.update_variables({"a": 10, "b": 20}, {"source": "batch"})
        records = {r["name"]: r for r in state.list_variables()}
        assert records["a"]["metadata"] == {"keep": True, "source": "batch"}
        assert records["b"]["metadata"] == {"source": "batch"}
        assert records["c"]["metadata"] == {}

    def test_description_is_kept_in_metadata(self, state: StateProvider) -> None:
        var_id = state.register_variable(
            "max_tokens", "integer", 256, description="Completion budget"
        )
        assert _record(state, "max_tokens")["metadata"] == {"description": "Completion budget"}
        exported = state.export_state()["variables"][var_id]
        assert exported["metadata"]["description"] == "Completion budget"

    def test_list_variables_records_in_creation_order(self, state: StateProvider) -> None:
        names = ["zeta", "alpha", "mu", "beta"]
        t0 = time.time()
        ids = [state.register_variable(n, "integer", i) for i, n in enumerate(names)]
        state.register_variable("vector", "embedding", [1.0, 2.0], constraints={"dimensions": 2})
        t1 = time.time()
        records = state.list_variables()
        assert isinstance(records, list)
        assert [r["name"] for r in records] == [*names, "vector"]
        assert [r["id"] for r in records[:4]] == ids
        for record in records:
            assert set(record) >= RECORD_KEYS, f"record lacks {RECORD_KEYS - set(record)}"
            assert isinstance(record["id"], str)
            assert isinstance(record["name"], str)
            assert isinstance(record["type"], str)
            assert isinstance(record["constraints"], dict)
            assert isinstance(record["metadata"], dict)
            assert type(record["version"]) is int
            assert type(record["created_at"]) is float
            assert type(record["last_updated_at"]) is float
            # Epoch seconds (loose bounds: a sanity check on the clock, not a timing test).
            assert t0 - 60 <= record["created_at"] <= t1 + 60
            assert record["created_at"] <= record["last_updated_at"]
        assert records[4]["type"] == "embedding"
        assert records[4]["constraints"] == {"dimensions": 2}

        # Deleting and re-registering moves a name to the end.
        state.delete_variable("alpha")
        state.register_variable("alpha", "integer", 9)
        assert [r["name"] for r in state.list_variables()] == [
            "zeta",
            "mu",
            "beta",
            "vector",
            "alpha",
        ]

    def test_timestamps_follow_writes(self, state: StateProvider) -> None:
        state.register_variable("a", "integer", 1)
        first = _record(state, "a")
        state.set_variable("a", 2)
        second = _record(state, "a")
        assert second["created_at"] == first["created_at"]
        assert second["last_updated_at"] >= first["last_updated_at"]
        state.update_variables({"a": 3})
        third = _record(state, "a")
        assert third["created_at"] == first["created_at"]
        assert third["last_updated_at"] >= second["last_updated_at"]

    def test_get_missing_raises_variable_not_found(self, state: StateProvider) -> None:
        with pytest.raises(VariableNotFound) as info:
            state.get_variable("nope")
        assert isinstance(info.value, KeyError)
        assert info.value.variable == "nope"
        assert "nope" in str(info.value)

    def test_set_missing_raises_variable_not_found(self, state: StateProvider) -> None:
        state.register_variable("a", "integer", 1)
        before = state.list_variables()
        with pytest.raises(VariableNotFound) as info:
            state.set_variable("nope", 1)
        assert info.value.variable == "nope"
        assert "nope" in str(info.value)
        _assert_unchanged(state, before)

    def test_delete_then_get_raises_variable_not_found(self, state: StateProvider) -> None:
        a_id = state.register_variable("a", "integer", 1)
        b_id = state.register_variable("b", "integer", 2)
        assert state.delete_variable("a") is None
        assert state.delete_variable(b_id) is None
        for identifier in ("a", a_id, "b", b_id):
            with pytest.raises(VariableNotFound) as info:
                state.get_variable(identifier)
            assert isinstance(info.value, KeyError)
            assert info.value.variable == identifier
        assert state.list_variables() == []
        assert state.get_variables(["a", b_id]) == {}
        exported = state.export_state()
        assert exported["variables"] == {}
        assert exported["variable_index"] == {}

    def test_delete_missing_raises_variable_not_found(self, state: StateProvider) -> None:
        state.register_variable("a", "integer", 1)
        state.delete_variable("a")
        before = state.list_variables()
        for identifier in ("a", "never"):
            with pytest.raises(VariableNotFound) as info:
                state.delete_variable(identifier)
            assert info.value.variable == identifier
            assert identifier in str(info.value)
        _assert_unchanged(state, before)

    def test_deleted_name_can_be_registered_again(self, state: StateProvider) -> None:
        old_id = state.register_variable("a", "integer", 1)
        state.set_variable("a", 2)
        state.delete_variable("a")
        new_id = state.register_variable("a", "string", "fresh")
        assert new_id != old_id
        assert state.get_variable("a") == "fresh"
        assert _record(state, "a")["version"] == 0
        with pytest.raises(VariableNotFound):
            state.get_variable(old_id)

    def test_returned_values_are_copies(self, state: StateProvider) -> None:
        initial = [1.0, 2.0]
        meta = {"tags": ["x"]}
        var_id = state.register_variable("vector", "embedding", initial, metadata=meta)
        initial.append(99.0)  # the caller's list is not the stored one
        meta["tags"].append("y")

        state.get_variable("vector").append(3.0)
        state.get_variables(["vector"])["vector"].append(4.0)
        record = _record(state, "vector")
        record["value"].append(5.0)
        record["metadata"]["tags"].append("z")
        record["constraints"]["dimensions"] = 1
        exported = state.export_state()
        exported["variables"][var_id]["value"].append(6.0)
        exported["variables"][var_id]["metadata"]["added"] = True
        exported["variable_index"]["ghost"] = var_id

        assert state.get_variable("vector") == [1.0, 2.0]
        record = _record(state, "vector")
        assert record["metadata"] == {"tags": ["x"]}
        assert record["constraints"] == {}
        assert state.export_state()["variable_index"] == {"vector": var_id}

        tensor = copy.deepcopy(TENSOR_2X2)
        state.register_variable("weights", "tensor", tensor)
        tensor["data"][0] = 42.0
        state.get_variable("weights")["data"][1] = 42.0
        assert state.get_variable("weights") == TENSOR_2X2

        value = [7.0, 8.0]
        state.set_variable("vector", value)
        value.append(9.0)
        assert state.get_variable("vector") == [7.0, 8.0]

        # Coercion makes new values; the caller's objects are left as they were.
        ints = [1, 2]
        state.register_variable("coerced", "embedding", ints)
        state.set_variable("coerced", ints)
        state.update_variables({"coerced": ints})
        assert same(ints, [1, 2])
        assert same(state.get_variable("coerced"), [1.0, 2.0])


class _BatchContract(_ContractBase):
    """get_variables and all-or-nothing update_variables."""

    def test_get_variables_keyed_as_given_and_skips_missing(self, state: StateProvider) -> None:
        state.register_variable("a", "integer", 1)
        b_id = state.register_variable("b", "string", "two")
        got = state.get_variables(["a", b_id, "missing", "var_missing"])
        assert got == {"a": 1, b_id: "two"}
        assert state.get_variables([]) == {}
        assert state.get_variables(("a",)) == {"a": 1}
        assert state.get_variables(n for n in ["b", "a"]) == {"b": "two", "a": 1}

    def test_update_variables_by_name_and_id(self, state: StateProvider) -> None:
        a_id = state.register_variable("a", "integer", 1)
        state.register_variable("b", "string", "x")
        assert state.update_variables({a_id: 2, "b": "y"}) is None
        assert state.get_variables(["a", "b"]) == {"a": 2, "b": "y"}
        state.update_variables({})
        assert {r["name"]: r["version"] for r in state.list_variables()} == {"a": 1, "b": 1}

    def test_update_variables_one_bad_value_changes_nothing(self, state: StateProvider) -> None:
        state.register_variable("a", "integer", 1)
        state.register_variable("b", "integer", 2, constraints={"max": 10})
        state.register_variable("c", "integer", 3)
        before = state.list_variables()
        with pytest.raises(PartialFailure) as info:
            state.update_variables({"a": 10, "b": 99, "c": 30}, {"source": "batch"})
        assert set(info.value.errors) == {"b"}
        _assert_validation_error(info.value.errors["b"], name="b", rule="max", value=99)
        assert "b" in str(info.value)
        _assert_unchanged(state, before)
        assert state.get_variables(["a", "b", "c"]) == {"a": 1, "b": 2, "c": 3}

    def test_update_variables_unknown_identifier_changes_nothing(
        self, state: StateProvider
    ) -> None:
        state.register_variable("a", "integer", 1)
        state.register_variable("c", "integer", 3)
        before = state.list_variables()
        with pytest.raises(PartialFailure) as info:
            state.update_variables({"a": 10, "nope": 5, "c": 30})
        assert set(info.value.errors) == {"nope"}
        error = info.value.errors["nope"]
        assert isinstance(error, VariableNotFound)
        assert error.variable == "nope"
        assert "nope" in str(info.value)
        _assert_unchanged(state, before)

    def test_update_variables_reports_every_failing_entry(self, state: StateProvider) -> None:
        a_id = state.register_variable("a", "integer", 1)
        state.register_variable("b", "string", "ok", constraints={"max_length": 3})
        state.register_variable("c", "integer", 3)
        before = state.list_variables()
        with pytest.raises(PartialFailure) as info:
            state.update_variables({a_id: "ten", "b": "long", "ghost": 1, "c": 30})
        errors = info.value.errors
        assert set(errors) == {a_id, "b", "ghost"}
        _assert_validation_error(errors[a_id], name="a", rule="type", value="ten")
        _assert_validation_error(errors["b"], name="b", rule="max_length", value="long")
        assert isinstance(errors["ghost"], VariableNotFound)
        for identifier in (a_id, "b", "ghost"):
            assert identifier in str(info.value)
        _assert_unchanged(state, before)


class _ExportImportContract(_ContractBase):
    """export_state shape and msgpack, import_state fidelity and refusal of bad exports."""

    @staticmethod
    def _populate(state: StateProvider) -> None:
        state.register_variable(
            "temperature",
            "float",
            0.7,
            constraints={"min": 0.0, "max": 2.0},
            description="Sampling temperature",
        )
        state.register_variable("max_tokens", "integer", 256, metadata={"unit": "tokens"})
        state.register_variable(
            "style", "choice", "concise", constraints={"choices": ["concise", "verbose"]}
        )
        state.register_variable("module", "module", "ChainOfThought")
        state.register_variable("enabled", "boolean", True)
        state.register_variable("prompt", "string", "héllo", constraints={"max_length": 64})
        state.register_variable("vector", "embedding", [1, 2, 3], constraints={"dimensions": 3})
        state.register_variable(
            "weights", "tensor", copy.deepcopy(TENSOR_2X2), constraints={"shape": [2, 2]}
        )
        state.register_variable("unbounded", "float", math.inf)
        state.set_variable("temperature", 0.9, {"by": "optimizer", "nested": {"k": [1, 2]}})
        state.set_variable("temperature", 1.1)
        state.update_variables({"max_tokens": 512, "style": "verbose"}, {"source": "batch"})

    def test_export_state_shape(self, state: StateProvider) -> None:
        self._populate(state)
        exported = state.export_state()
        assert isinstance(exported, dict)
        assert set(exported) >= EXPORT_KEYS
        assert exported["session_id"] == state.session_id
        assert isinstance(exported["metadata"], dict)
        variables, index = exported["variables"], exported["variable_index"]
        records = state.list_variables()
        assert list(index) == [r["name"] for r in records]
        assert same(variables, {r["id"]: r for r in records})
        for var_id, record in variables.items():
            assert set(record) >= RECORD_KEYS
            assert record["id"] == var_id
            assert index[record["name"]] == var_id

    def test_export_state_is_msgpack_plain_data(
        self, state: StateProvider, open_state: Opener
    ) -> None:
        self._populate(state)
        exported = state.export_state()
        packed = msgpack.packb(exported)
        assert isinstance(packed, bytes)
        restored = msgpack.unpackb(packed)
        assert same(restored, exported)
        target = open_state()
        target.import_state(restored)
        assert same(target.list_variables(), state.list_variables())

    def test_import_state_keeps_everything(self, state: StateProvider, open_state: Opener) -> None:
        self._populate(state)
        exported = state.export_state()
        source_records = state.list_variables()

        target = open_state()
        assert target.import_state(exported) is None
        assert same(target.list_variables(), source_records)
        target_export = target.export_state()
        assert target_export["session_id"] == target.session_id
        assert same(target_export["variables"], exported["variables"])
        assert target_export["variable_index"] == exported["variable_index"]
        for record in source_records:
            assert same(target.get_variable(record["id"]), record["value"])
            assert same(target.get_variable(record["name"]), record["value"])

        # The copy lives on: versions continue, constraints hold, the source is separate.
        temperature = _record(state, "temperature")
        assert target.set_variable("temperature", 1.5) == temperature["version"] + 1
        with pytest.raises(ValidationError) as info:
            target.set_variable("temperature", 2.5)
        _assert_validation_error(info.value, name="temperature", rule="max", value=2.5)
        with pytest.raises(ValidationError):
            target.set_variable("vector", [1.0, 2.0])
        assert same(state.list_variables(), source_records)

    def test_import_state_adds_to_existing_variables(
        self, state: StateProvider, open_state: Opener
    ) -> None:
        state.register_variable("x", "float", 3.14)
        state.set_variable("x", 2.71)
        target = open_state()
        target.register_variable("local", "integer", 1)
        target.import_state(state.export_state())
        assert [r["name"] for r in target.list_variables()] == ["local", "x"]
        assert _record(target, "x")["version"] == 1
        assert target.get_variable("local") == 1

    def test_init_with_existing_state_imports_it(
        self, state: StateProvider, open_state: Opener
    ) -> None:
        self._populate(state)
        exported = state.export_state()
        session_id = f"compliance-{uuid.uuid4().hex}"
        target = open_state(session_id=session_id, existing_state=exported)
        assert target.session_id == session_id
        assert same(target.list_variables(), state.list_variables())

    def test_init_with_bad_existing_state_raises(
        self, state: StateProvider, open_state: Opener
    ) -> None:
        state.register_variable("x", "float", 3.14)
        exported = state.export_state()
        del exported["variables"]
        with pytest.raises(InvalidExport):
            open_state(existing_state=exported)

    @staticmethod
    def _source_export(state: StateProvider) -> dict[str, Any]:
        state.register_variable("alpha", "float", 0.5)
        state.register_variable("beta", "integer", 5, constraints={"min": 0, "max": 10})
        state.set_variable("beta", 6)
        return state.export_state()

    @pytest.mark.parametrize("case", BAD_EXPORTS, ids=[c.label for c in BAD_EXPORTS])
    def test_import_rejects_bad_export(
        self, state: StateProvider, open_state: Opener, case: BadExport
    ) -> None:
        source = self._source_export(state)
        bad = case.mutate(copy.deepcopy(source))
        target = open_state()
        target.register_variable("keep", "integer", 1)
        target.set_variable("keep", 2)
        before = target.list_variables()
        with pytest.raises(case.raises) as info:
            target.import_state(bad)
        message = str(info.value)
        beta_id = source["variable_index"]["beta"]
        named = [*case.names, beta_id] if "beta" in case.names else case.names
        assert any(n in message for n in named), (
            f"message {message!r} mentions none of {case.names!r}"
        )
        _assert_unchanged(target, before)
        with pytest.raises(VariableNotFound):
            target.get_variable("alpha")

    def test_import_rejects_name_clash(self, state: StateProvider, open_state: Opener) -> None:
        exported = self._source_export(state)
        target = open_state()
        target.register_variable("beta", "string", "mine")
        before = target.list_variables()
        with pytest.raises(VariableExists) as info:
            target.import_state(exported)
        assert info.value.variable == "beta"
        assert "beta" in str(info.value)
        _assert_unchanged(target, before)

    def test_import_rejects_id_clash(self, state: StateProvider, open_state: Opener) -> None:
        exported = self._source_export(state)
        target = open_state()
        target.import_state(exported)
        renamed = copy.deepcopy(exported)
        beta_id = renamed["variable_index"].pop("beta")
        del renamed["variables"][renamed["variable_index"].pop("alpha")]
        renamed["variables"][beta_id]["name"] = "gamma"
        renamed["variable_index"]["gamma"] = beta_id
        before = target.list_variables()
        with pytest.raises(VariableExists) as info:
            target.import_state(renamed)
        assert beta_id in str(info.value) or "gamma" in str(info.value)
        _assert_unchanged(target, before)

    def test_import_same_export_twice_changes_nothing(
        self, state: StateProvider, open_state: Opener
    ) -> None:
        exported = self._source_export(state)
        target = open_state()
        target.import_state(exported)
        before = target.list_variables()
        with pytest.raises(VariableExists):
            target.import_state(exported)
        _assert_unchanged(target, before)


class _SessionContract(_ContractBase):
    """Session ids, capabilities, cleanup, the context manager and subscriptions."""

    def test_session_id_given_is_kept(self, open_state: Opener) -> None:
        session_id = f"compliance-{uuid.uuid4().hex}"
        state = open_state(session_id=session_id)
        assert state.session_id == session_id
        assert state.export_state()["session_id"] == session_id

    def test_generated_session_ids_are_distinct(self, open_state: Opener) -> None:
        states = [open_state(session_id=None) for _ in range(5)]
        ids = [s.session_id for s in states]
        assert all(isinstance(i, str) and len(i) >= 16 for i in ids), ids
        assert len(set(ids)) == len(ids)
        for state in states:
            assert state.export_state()["session_id"] == state.session_id

    def test_capabilities_are_exact_booleans(self) -> None:
        caps = self.provider.capabilities()
        assert isinstance(caps, dict)
        assert set(caps) >= set(CAPABILITY_KEYS)
        for key in CAPABILITY_KEYS:
            assert type(caps[key]) is bool, f"capabilities()[{key!r}] is {caps[key]!r}"
        assert get_capabilities(self.provider) == caps
        assert type(self.provider.requires_bridge()) is bool

    def test_cleanup_is_idempotent(self, open_state: Opener) -> None:
        state = open_state()
        state.register_variable("a", "integer", 1)
        _, error = _guarded("cleanup", state.cleanup, self.hang_guard_seconds)
        assert error is None, f"first cleanup raised {error!r}"
        _, error = _guarded("second cleanup", state.cleanup, self.hang_guard_seconds)
        assert error is None, f"second cleanup raised {error!r}"

    def test_operations_after_cleanup_raise_promptly(
        self, state: StateProvider, open_state: Opener
    ) -> None:
        var_id = state.register_variable("a", "integer", 1)
        state.cleanup()
        other = open_state()
        other.register_variable("z", "integer", 1)
        other_export = other.export_state()
        operations: dict[str, Callable[[], Any]] = {
            "get_variable": lambda: state.get_variable("a"),
            "get_variable(id)": lambda: state.get_variable(var_id),
            "set_variable": lambda: state.set_variable("a", 2),
            "register_variable": lambda: state.register_variable("b", "integer", 1),
            "list_variables": state.list_variables,
            "get_variables": lambda: state.get_variables(["a"]),
            "update_variables": lambda: state.update_variables({"a": 3}),
            "delete_variable": lambda: state.delete_variable("a"),
            "export_state": state.export_state,
            "import_state": lambda: state.import_state(other_export),
        }
        for label, operation in operations.items():
            result, error = _guarded(label, operation, self.hang_guard_seconds)
            assert isinstance(error, StateError), (
                f"{label} after cleanup returned {result!r} / raised {error!r}; "
                "expected a StateError"
            )

    def test_context_manager_cleans_up(self, open_state: Opener) -> None:
        state = open_state()
        with state as entered:
            assert entered is state
            entered.register_variable("a", "integer", 1)
            assert entered.get_variable("a") == 1
        _, error = _guarded(
            "get_variable after with", lambda: state.get_variable("a"), self.hang_guard_seconds
        )
        assert isinstance(error, StateError), f"after the with block: {error!r}"

        failing = open_state()
        with pytest.raises(RuntimeError, match="boom"), failing:
            raise RuntimeError("boom")
        _, error = _guarded(
            "list_variables after with", failing.list_variables, self.hang_guard_seconds
        )
        assert isinstance(error, StateError), f"after a failing with block: {error!r}"

    def test_subscribe_without_streaming_is_not_supported(self, state: StateProvider) -> None:
        if self.provider.capabilities()["streaming"]:
            pytest.skip("backend streams; subscriptions are covered by its own tests")
        with pytest.raises(NotSupported):
            state.subscribe("*", lambda event: None)
        with pytest.raises(NotSupported):
            state.unsubscribe(object())


class _ConcurrencyContract(_ContractBase):
    """Readers against writers: whole batches and whole snapshots only, and reads see
    completed writes."""

    def test_readers_never_see_half_a_batch(self, state: StateProvider) -> None:
        if not self.provider.capabilities()["atomic_updates"]:
            pytest.skip("backend does not claim atomic_updates")
        state.register_variable("a", "integer", 0)
        state.register_variable("b", "integer", 0)
        # Readers spin until the writer is done; max_reads only bounds the loop should
        # the writer get stuck (the hang guard then fails the test).
        rounds, readers, max_reads = 100, 1, 5_000_000
        barrier = threading.Barrier(readers + 1)
        written = threading.Event()

        def writer() -> None:
            barrier.wait(WORKER_GUARD_SECONDS)
            try:
                for i in range(1, rounds + 1):
                    state.update_variables({"a": i, "b": -i})
            finally:
                written.set()

        def reader() -> None:
            barrier.wait(WORKER_GUARD_SECONDS)
            last = 0
            for _ in range(max_reads):
                finished = written.is_set()
                got = state.get_variables(["a", "b"])
                assert got["a"] == -got["b"], f"half a batch: {got}"
                assert got["a"] >= last, f"went back in time: {last} then {got['a']}"
                last = got["a"]
                if finished:
                    assert got["a"] == rounds, f"a read after the last batch saw {got}"
                    return

        _run_threads([writer, *[reader] * readers])
        assert state.get_variables(["a", "b"]) == {"a": rounds, "b": -rounds}

    # Bystanders registered before the threads start: every snapshot must hold them,
    # unchanged, and copying them widens the window in which a writer can strike.
    _FILLERS = 16

    def _register_fillers(self, state: StateProvider) -> dict[str, int]:
        fillers = {f"filler{f}": f for f in range(self._FILLERS)}
        for name, value in fillers.items():
            state.register_variable(name, "integer", value)
        return fillers

    @staticmethod
    def _assert_fillers(records: Mapping[str, Any], fillers: dict[str, int], source: str) -> None:
        lost = sorted(set(fillers) - set(records))
        assert not lost, f"{source} lost variables nobody deleted: {lost}"
        for name, value in fillers.items():
            record = records[name]
            assert same(record["value"], value) and record["version"] == 0, (
                f"{source}: untouched {name!r} reads {record['value']!r} "
                f"at version {record['version']!r}"
            )

    def test_export_and_list_are_whole_under_writes(self, state: StateProvider) -> None:
        """export_state and list_variables against a writer that registers, sets, deletes.

        Every export must be internally consistent and msgpack-encodable, every list
        free of duplicates, and the ``anchor`` record (set to ``i`` at version ``i``)
        one whole write, never moving back, while variables come and go around it.
        """
        rounds = 300
        state.register_variable("anchor", "integer", 0)
        fillers = self._register_fillers(state)
        steady = {"anchor", *fillers}
        churn = {f"churn{i}" for i in range(1, rounds + 1)}

        def write(i: int) -> None:
            state.register_variable(f"churn{i}", "integer", i)
            version = state.set_variable("anchor", i)
            assert version == i, f"anchor set to {i} got version {version}"
            state.set_variable(f"churn{i}", -i)
            if i > 1:
                state.delete_variable(f"churn{i - 1}")
            if i == rounds:
                state.delete_variable(f"churn{i}")

        last = 0

        def read(finished: bool) -> None:
            nonlocal last
            for source, records in _snapshots(state):
                self._assert_fillers(records, fillers, source)
                strays = sorted(set(records) - steady - churn)
                assert not strays, f"{source} shows variables never registered: {strays}"
                last = _advance(
                    last, _assert_one_version(records["anchor"], source), source, finished, rounds
                )
                if finished:
                    assert set(records) == steady, (
                        f"{source} after the last write: {sorted(records)}"
                    )

        _race_reader_against_writer(write, rounds, read)
        listed = _check_listing(state.list_variables())
        assert set(listed) == steady
        assert _assert_one_version(listed["anchor"], "list_variables") == rounds

    def test_export_never_shows_half_a_batch(self, state: StateProvider) -> None:
        """A batch ``{a: i, b: i}`` is all in an export (and a listing) or not at all."""
        if not self.provider.capabilities()["atomic_updates"]:
            pytest.skip("backend does not claim atomic_updates")
        rounds = 300
        # a and b sit at the two ends of the session, the fillers between them.
        state.register_variable("a", "integer", 0)
        fillers = self._register_fillers(state)
        state.register_variable("b", "integer", 0)

        def write(i: int) -> None:
            state.update_variables({"a": i, "b": i})

        last = 0

        def read(finished: bool) -> None:
            nonlocal last
            for source, records in _snapshots(state):
                self._assert_fillers(records, fillers, source)
                a, b = records["a"], records["b"]
                assert same(a["value"], b["value"]) and a["version"] == b["version"], (
                    f"half a batch in {source}: a={a['value']!r} (version {a['version']!r})"
                    f", b={b['value']!r} (version {b['version']!r})"
                )
                last = _advance(last, _assert_one_version(a, source), source, finished, rounds)

        _race_reader_against_writer(write, rounds, read)
        assert state.get_variables(["a", "b"]) == {"a": rounds, "b": rounds}

    def test_readers_never_see_half_an_import(self, state: StateProvider) -> None:
        """An import's variables appear together: every read (a batch get, an export,
        a listing) holds all of an import's variables or none, and never loses one."""
        if not self.provider.capabilities()["atomic_updates"]:
            pytest.skip("backend does not claim atomic_updates")
        rounds, width = 60, 8
        fillers = self._register_fillers(state)
        names = {i: [f"imported{i}_{j}" for j in range(width)] for i in range(1, rounds + 1)}
        every_name = [name for group in names.values() for name in group]

        def write(i: int) -> None:
            state.import_state(_export_of_integers(names[i], i))

        last = 0

        def seen(present: Mapping[str, Any], source: str) -> int:
            """The last import ``present`` (name -> value) holds whole, failing on a
            partial one or a value the import did not write."""
            whole = 0
            for i, group in names.items():
                held = [name for name in group if name in present]
                assert len(held) in (0, width), (
                    f"{source} shows {len(held)} of the {width} variables of import {i}"
                )
                if held:
                    assert whole == i - 1, f"{source} holds import {i} but not {whole + 1}"
                    wrong = {name: present[name] for name in held if not same(present[name], i)}
                    assert not wrong, f"{source}: import {i} wrote {i}, reads {wrong}"
                    whole = i
            return whole

        def read(finished: bool) -> None:
            nonlocal last
            reads: list[tuple[str, Mapping[str, Any]]] = [
                ("get_variables", state.get_variables(every_name))
            ]
            for source, records in _snapshots(state):
                self._assert_fillers(records, fillers, source)
                reads.append((source, {n: r["value"] for n, r in records.items()}))
            for source, present in reads:
                last = _advance(last, seen(present, source), source, finished, rounds)

        _race_reader_against_writer(write, rounds, read)

    def test_writer_reads_its_own_writes(self, state: StateProvider) -> None:
        writers, rounds = 3, 100
        for w in range(writers):
            state.register_variable(f"w{w}", "integer", -1)
        barrier = threading.Barrier(writers)

        def write(w: int) -> Callable[[], None]:
            name = f"w{w}"

            def run() -> None:
                barrier.wait(WORKER_GUARD_SECONDS)
                for i in range(rounds):
                    state.set_variable(name, 2 * i)
                    assert state.get_variable(name) == 2 * i
                    state.update_variables({name: 2 * i + 1})
                    assert state.get_variables([name]) == {name: 2 * i + 1}

            return run

        _run_threads([write(w) for w in range(writers)])
        for w in range(writers):
            record = _record(state, f"w{w}")
            assert record["value"] == 2 * rounds - 1
            assert record["version"] == 2 * rounds

    def test_completed_write_is_visible_to_other_threads(self, state: StateProvider) -> None:
        state.register_variable("progress", "integer", 0)
        rounds = 200
        handoff: queue.Queue[int | None] = queue.Queue()

        def writer() -> None:
            try:
                for i in range(1, rounds + 1):
                    state.set_variable("progress", i)
                    handoff.put(i)
            finally:
                handoff.put(None)  # releases the reader even when a write fails

        def reader() -> None:
            for _ in range(rounds):
                seen = handoff.get(timeout=WORKER_GUARD_SECONDS)
                if seen is None:
                    return
                got = state.get_variable("progress")
                assert got >= seen, f"writer finished {seen} but a reader saw {got}"

        _run_threads([writer, reader])


class StateProviderContract(
    _SeedContract,
    _TypesContract,
    _VariablesContract,
    _BatchContract,
    _ExportImportContract,
    _SessionContract,
    _ConcurrencyContract,
):
    """Inherit in a ``Test*`` class and set ``provider`` to run the whole contract.

    Override the ``provider_options`` fixture to pass backend options to ``init``.
    """
