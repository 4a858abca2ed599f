"""Bad input, alike everywhere: the same error class locally and bridged, nothing changed.

A corpus of bad input runs through a LocalState and a BridgedState holding the
same variables: every type with each of its constraints broken, NaN, infinities,
-0.0, booleans where numbers are wanted, integers past 64 bits, lone surrogates,
values, metadata and constraints over their size limits, deep and self-referential
nesting, malformed exports, and session ids too long or not UTF-8. Each case must
raise a ``dspex_actors.errors`` exception of the same class on both backends and
change nothing (``list_variables()`` before and after). Edge values that are valid
(-0.0, 3.0 for an integer, 1 for a listed 1.0) must be stored alike.

Then raw garbage straight at the server over a raw grpcio channel, for every
SessionStore method: random bytes (not protobuf), and valid protobuf whose msgpack
fields are fuzzed. Each call gets a status, never hangs, never INTERNAL; the
server stays healthy. And a hypothesis property run: generated types,
constraints, values and metadata are accepted or refused alike on both backends.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import grpc
import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dspex_actors import LocalState
from dspex_actors.bridge import BridgedState, SessionStoreServer, serve
from dspex_actors.errors import PartialFailure, StateError
from dspex_actors.limits import DEFAULT_LIMITS
from dspex_actors.provider import StateProvider
from dspex_actors.v1 import session_store_pb2 as pb

NAN = math.nan
INF = math.inf
VAR_ID = "var_" + "1" * 32

Case = Callable[[Any], Any]
"""One bad call, given the backend to make it on."""


def _call(method: str, *args: Any, **kwargs: Any) -> Case:
    """The case calling ``method`` with these arguments on whichever backend."""
    return lambda state: getattr(state, method)(*args, **kwargs)


# The variables every corpus session holds: one per type, each with its constraints.
BASE: list[tuple[str, str, Any, dict[str, Any] | None]] = [
    ("f", "float", 0.5, {"min": 0, "max": 1}),
    ("i", "integer", 1, {"min": 0, "max": 10}),
    ("s", "string", "ab", {"min_length": 1, "max_length": 5, "pattern": "^[a-z]+$"}),
    ("e_", "string", "ab", {"enum": ["ab", "cd"]}),
    ("b", "boolean", True, None),
    ("c", "choice", "x", {"choices": ["x", 1.0, 2.5]}),
    ("m", "module", "CoT", {"allowed_modules": ["CoT", "Predict"]}),
    ("v", "embedding", [1.0, 2.0], {"dimensions": 2}),
    ("t", "tensor", {"shape": [2], "data": [1, 2]}, {"shape": [None]}),
    ("free", "float", 0.0, None),
    ("n", "integer", 0, None),
    ("text", "string", "", None),
]


def _populate(state: StateProvider) -> None:
    for name, type_name, value, constraints in BASE:
        state.register_variable(name, type_name, value, constraints=constraints)


def _deep(levels: int) -> list[Any]:
    nested: list[Any] = []
    for _ in range(levels):
        nested = [nested]
    return nested


def _recursive() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


def _export(**record: Any) -> dict[str, Any]:
    """An export of one variable "z", its record fields overridden by ``record``."""
    fields = {
        "id": VAR_ID,
        "name": "z",
        "type": "integer",
        "value": 1,
        "constraints": {},
        "metadata": {},
        "version": 0,
        "created_at": 1.0,
        "last_updated_at": 1.0,
    }
    fields.update(record)
    return {
        "session_id": "x",
        "variables": {VAR_ID: fields},
        "variable_index": {fields["name"] if isinstance(fields["name"], str) else "z": VAR_ID},
    }


MAX_VALUE = DEFAULT_LIMITS.max_value_bytes
MAX_METADATA = DEFAULT_LIMITS.max_metadata_bytes
LONGEST_ASCII = MAX_VALUE - 5  # a str32 header takes 5 bytes


def _bad_values() -> Iterator[tuple[str, Case]]:
    """Every type with each of its rules broken, by set_variable and register_variable."""
    bad: dict[str, list[Any]] = {
        "f": ["1", None, True, False, [1], {"a": 1}, b"1", 10**400, NAN, INF, -INF, 2, -1],
        "i": ["1", None, True, False, 3.5, NAN, INF, -INF, 2**64, -(2**63) - 1, 1e300, 11, -1],
        "s": [1, None, b"ab", "\ud800", "", "abcdef", "AB", "a1", ["ab"]],
        "e_": ["ef", "", 1, None, "\udfff"],
        "b": [1, 0, 1.0, "true", None, NAN, [True]],
        "c": ["y", True, "1", NAN, None, [1.0], 3],
        "m": ["", None, 1, "Other", "\ud800", ["CoT"]],
        "v": [
            [1, 2, 3],
            [True, False],
            [1, "2"],
            "ab",
            None,
            {"a": 1},
            [[1], [2]],
            [2**1100, 1],
            1.0,
        ],
        "t": [
            {"shape": [2], "data": [1]},
            {"shape": [True], "data": [1]},
            {"shape": [-1], "data": []},
            {"shape": [2], "data": [1, 2], "extra": 1},
            {"shape": [2]},
            {"shape": [1, 2], "data": [1, 2]},
            {"shape": [2], "data": [True, 1]},
            {"shape": [2], "data": ["1", 2]},
            {"shape": 2, "data": [1, 2]},
            {"shape": [2**62, 2**62], "data": []},
            [2, 1, 2],
            None,
        ],
    }
    for name, values in bad.items():
        type_name, constraints = next((t, c) for n, t, _, c in BASE if n == name)
        for value in values:
            shown = repr(value)[:40]
            yield (
                f"set {name} {shown}",
                _call("set_variable", name, value),
            )
            yield (
                f"register {type_name} {shown}",
                _call("register_variable", "new", type_name, value, constraints=constraints),
            )
    yield "set embedding nested 40 deep", _call("set_variable", "v", _deep(40))
    yield "set embedding nested 5000 deep", _call("set_variable", "v", _deep(5000))
    yield "set embedding self-referential", _call("set_variable", "v", _recursive())
    yield "set string self-referential", _call("set_variable", "s", _recursive())
    yield (
        "set tensor data nested",
        _call("set_variable", "t", {"shape": [1], "data": _deep(40)}),
    )
    yield "set unhashable-ish object", _call("set_variable", "free", object())
    yield "set a set", _call("set_variable", "v", {1.0, 2.0})


def _bad_constraints() -> Iterator[tuple[str, Case]]:
    bad: list[tuple[Any, Any]] = [
        ("float", {"min": NAN}),
        ("float", {"max": NAN}),
        ("float", {"min": 2, "max": 1}),
        ("float", {"min": True}),
        ("float", {"min": "0"}),
        ("float", {"min": 10**400}),
        ("float", {"step": 1}),
        ("integer", {"min": 0.5}),
        ("integer", {"min": 1.0}),
        ("integer", {"max": True}),
        ("integer", {"min": 5, "max": 4}),
        ("integer", {"min": None}),
        ("string", {"min_length": -1}),
        ("string", {"min_length": True}),
        ("string", {"max_length": 1.5}),
        ("string", {"min_length": 3, "max_length": 2}),
        ("string", {"pattern": "(a)\\1"}),  # a backreference: not RE2
        ("string", {"pattern": "(?=a)"}),  # lookahead: not RE2
        ("string", {"pattern": "("}),
        ("string", {"pattern": 1}),
        ("string", {"pattern": "\ud800"}),
        ("string", {"pattern": "((((a{100}){100}){100}){100})"}),  # too large compiled
        ("string", {"enum": []}),
        ("string", {"enum": [1]}),
        ("string", {"enum": "ab"}),
        ("string", {"enum": ["\ud800"]}),
        ("boolean", {"min": 0}),
        ("choice", {}),
        ("choice", None),
        ("choice", {"choices": []}),
        ("choice", {"choices": [None]}),
        ("choice", {"choices": [[1]]}),
        ("choice", {"choices": "abc"}),
        ("choice", {"choices": [b"x"]}),
        ("choice", {"choices": [2**64]}),
        ("choice", {"choices": ["\ud800"]}),
        ("module", {"allowed_modules": []}),
        ("module", {"allowed_modules": [1]}),
        ("embedding", {"dimensions": 0}),
        ("embedding", {"dimensions": True}),
        ("embedding", {"dimensions": 2.0}),
        ("embedding", {"dimensions": -3}),
        ("tensor", {"shape": [-1]}),
        ("tensor", {"shape": [True]}),
        ("tensor", {"shape": "ab"}),
        ("tensor", {"shape": 3}),
        ("nope", None),
        ("", None),
        (1, None),
        (None, None),
        ("float", [("min", 1)]),
        ("float", "min=1"),
        ("float", {1: 2}),
        ("float", {"\ud800": 1}),
        ("float", {"min": object()}),
        ("string", {"enum": ["x" * 1000] * 1100}),  # over max_metadata_bytes
    ]
    for type_name, constraints in bad:
        yield (
            f"constraints {type_name!r} {constraints!r}"[:70],
            _call("register_variable", "new", type_name, None, constraints=constraints),
        )


def _bad_metadata() -> Iterator[tuple[str, Case]]:
    bad: list[Any] = [
        [],
        [("a", 1)],
        1,
        "x",
        {1: 2},
        {"a": object()},
        {"a": {1, 2}},
        {"\ud800": 1},
        {"a": "\ud800"},
        {"a": 2**64},
        {"deep": _deep(40)},
        {"loop": _recursive()},
        {"big": "y" * MAX_METADATA},
    ]
    for metadata in bad:
        shown = repr(metadata)[:40]
        yield f"set metadata {shown}", _call("set_variable", "i", 2, metadata)
        yield (
            f"register metadata {shown}",
            _call("register_variable", "new", "integer", 1, metadata=metadata),
        )
        if not (isinstance(metadata, dict) and "big" in metadata):  # a known divergence:
            # see test_a_batch_with_metadata_over_the_limit_is_refused_alike
            yield f"update metadata {shown}", _call("update_variables", {"i": 2}, metadata)


def _bad_calls() -> Iterator[tuple[str, Case]]:
    """Names, identifiers, versions, descriptions and batches."""
    for name in ["", "x" * 257, "\ud800", 1, None, "f"]:
        yield (
            f"register name {name!r}"[:60],
            _call("register_variable", name, "integer", 1),
        )
    for ident in ["nope", "\ud800", 1, None, "var_" + "0" * 32, ""]:
        yield f"get {ident!r}", _call("get_variable", ident)
        yield f"get_record {ident!r}", _call("get_record", ident)
        yield f"set {ident!r}", _call("set_variable", ident, 1)
        yield f"delete {ident!r}", _call("delete_variable", ident)
    for expected in [-1, True, 1.0, "0", 2**63, 2**64, 1.5]:
        yield (
            f"expected_version {expected!r}",
            _call("set_variable", "i", 2, expected_version=expected),
        )
    yield "expected_version stale", _call("set_variable", "i", 2, expected_version=5)
    for description in [1, 1.5, "\ud800", ["d"]]:
        yield (
            f"description {description!r}",
            _call("register_variable", "new", "integer", 1, description=description),
        )
    batches: list[dict[Any, Any]] = [
        {"i": 2, "nope": 1},
        {"i": "x"},
        {1: 2},
        {"\ud800": 1},
        {"i": 2, "f": NAN, "b": 1},
        {"i": 2**64},
        {"i": object()},
        {"t": {"shape": [3], "data": [1, 2]}, "i": 3},
    ]
    for batch in batches:
        yield f"update {batch!r}"[:60], _call("update_variables", batch)
    for pattern in [1, b"*", ["*"]]:
        yield f"list pattern {pattern!r}", _call("list_variables", pattern)


def _bad_sizes() -> Iterator[tuple[str, Case]]:
    too_long = "x" * (LONGEST_ASCII + 1)
    widest = (MAX_VALUE - 5) // 9 + 1  # floats of 9 bytes each, one more than fits
    yield (
        "register string over the value limit",
        _call("register_variable", "big", "string", too_long),
    )
    yield "set string over the value limit", _call("set_variable", "text", too_long)
    yield (
        "register module over the value limit",
        _call("register_variable", "big", "module", too_long),
    )
    yield (
        "register embedding over the value limit",
        _call("register_variable", "big", "embedding", [0] * widest),
    )
    yield (
        "register tensor over the value limit",
        _call("register_variable", "big", "tensor", {"shape": [widest], "data": [0.5] * widest}),
    )
    yield "update with a value over the limit", _call("update_variables", {"s": too_long, "i": 2})


def _bad_exports() -> Iterator[tuple[str, Case]]:
    exports: list[Any] = [
        "not a map",
        None,
        [1],
        {},
        {"session_id": "x"},
        {"session_id": 5, "variables": {}, "variable_index": {}},
        {"session_id": "x", "variables": [], "variable_index": {}},
        {"session_id": "x", "variables": {}, "variable_index": {}, "metadata": [1]},
        {"session_id": "x", "variables": {}, "variable_index": {}, "metadata": {"a": object()}},
        _export(version=-1),
        _export(version=True),
        _export(version=1.0),
        _export(version=2**63),
        _export(version=2**64),
        _export(version="0"),
        _export(created_at=NAN),
        _export(last_updated_at=INF),
        _export(created_at="0"),
        _export(created_at=True),
        _export(created_at=10**400),
        _export(value="no"),
        _export(value=2**64),
        _export(value=object()),
        _export(type="nope"),
        _export(constraints={"min": "0"}),
        _export(constraints=[1]),
        _export(metadata=[1]),
        _export(metadata={"a": object()}),
        _export(name="\ud800"),
        _export(name=""),
        _export(name="f"),  # a name the session holds
        _export(id="var_" + "2" * 32),  # filed under another id
        {"session_id": "x", "variables": {VAR_ID: {"id": VAR_ID}}, "variable_index": {}},
        {**_export(), "variable_index": {"z": "var_" + "2" * 32}},
        {**_export(), "variable_index": {}},
    ]
    for exported in exports:
        yield f"import {exported!r}"[:70], _call("import_state", exported)


# -- running the corpus -------------------------------------------------------------------


def _outcome(state: StateProvider, case: Case) -> tuple[str, bool]:
    """The error class a case raised (or "ok"), and whether the session is unchanged."""
    before = repr(state.list_variables())  # repr: nan never equals itself
    try:
        case(state)
    except StateError as exc:
        outcome = type(exc).__name__
    except Exception as exc:  # not from the contract's hierarchy: reported as such
        outcome = f"{type(exc).__name__} (not a StateError)"
    else:
        outcome = "ok"
    return outcome, repr(state.list_variables()) == before


@pytest.fixture
def server() -> Iterator[SessionStoreServer]:
    with serve() as running:
        yield running


@pytest.fixture
def backends(server: SessionStoreServer) -> Iterator[tuple[LocalState, BridgedState]]:
    local = LocalState.init(session_id="corpus")
    bridged = BridgedState.init(session_id="corpus", address=server.address)
    try:
        _populate(local)
        _populate(bridged)
        yield local, bridged
    finally:
        local.cleanup()
        bridged.cleanup()


CORPORA: dict[str, Callable[[], Iterator[tuple[str, Case]]]] = {
    "values": _bad_values,
    "constraints": _bad_constraints,
    "metadata": _bad_metadata,
    "calls": _bad_calls,
    "sizes": _bad_sizes,
    "exports": _bad_exports,
}


@pytest.mark.parametrize("corpus", list(CORPORA))
def test_bad_input_is_refused_alike_and_changes_nothing(
    backends: tuple[LocalState, BridgedState], corpus: str
) -> None:
    local, bridged = backends
    problems = []
    classes: dict[str, int] = {}
    cases = list(CORPORA[corpus]())
    for label, case in cases:
        local_outcome, local_kept = _outcome(local, case)
        bridged_outcome, bridged_kept = _outcome(bridged, case)
        classes[local_outcome] = classes.get(local_outcome, 0) + 1
        if local_outcome != bridged_outcome:
            problems.append(f"{label}: local {local_outcome}, bridged {bridged_outcome}")
        if local_outcome == "ok" or "not a StateError" in local_outcome:
            problems.append(f"{label}: local {local_outcome} (expected a StateError)")
        if bridged_outcome == "ok" or "not a StateError" in bridged_outcome:
            problems.append(f"{label}: bridged {bridged_outcome} (expected a StateError)")
        for backend, kept in (("local", local_kept), ("bridged", bridged_kept)):
            if not kept:
                problems.append(f"{label}: changed the {backend} session")
    print(f"{corpus}: {len(cases)} bad inputs, each on both backends: {classes}")
    assert not problems, "\n".join(problems)


EDGE_VALUES: list[tuple[str, Any]] = [
    ("free", -0.0),
    ("free", INF),
    ("free", -INF),
    ("free", NAN),
    ("f", -0.0),
    ("f", 1),
    ("i", 3.0),
    ("i", -0.0),
    ("n", 2**64 - 1),
    ("n", -(2**63)),
    ("n", 1e18),
    ("c", 1),  # stored as the listed 1.0
    ("c", 2.5),
    ("s", "a" * 5),
    ("v", [NAN, -INF]),
    ("v", (3, -0.0)),
    ("t", {"shape": [0], "data": []}),
    ("t", {"shape": (2,), "data": (1, 2)}),
]


@pytest.mark.parametrize(("name", "value"), EDGE_VALUES, ids=repr)
def test_edge_values_are_stored_alike(
    backends: tuple[LocalState, BridgedState], name: str, value: Any
) -> None:
    local, bridged = backends
    stored = []
    for state in (local, bridged):
        version = state.set_variable(name, value)
        record = state.get_record(name)
        stored.append((version, repr(record.value), type(record.value).__name__))
    assert stored[0] == stored[1]


def test_session_ids_are_refused_alike(server: SessionStoreServer) -> None:
    outcomes = []
    starts: list[Callable[[Any], StateProvider]] = [
        lambda sid: LocalState.init(session_id=sid),
        lambda sid: BridgedState.init(session_id=sid, address=server.address),
    ]
    for session_id in ["s" * 300, "bad\ud800id", "", 42]:
        for start in starts:
            try:
                start(session_id).cleanup()
            except StateError as exc:
                outcomes.append((repr(session_id)[:12], type(exc).__name__, exc.details["rule"]))
    assert outcomes == [
        (repr(sid)[:12], "ValidationError", "session_id")
        for sid in ["s" * 300, "bad\ud800id", "", 42]
        for _ in range(2)
    ]
    with LocalState.init(session_id="s" * 256) as local:  # the longest allowed
        local.register_variable("ok", "boolean", True)
    with BridgedState.init(session_id="s" * 256, address=server.address) as bridged:
        bridged.register_variable("ok", "boolean", True)


# -- once divergent, now alike ------------------------------------------------------------


def test_an_export_with_a_lone_surrogate_session_id_is_treated_alike(
    backends: tuple[LocalState, BridgedState],
) -> None:
    """An export whose session_id is not UTF-8 (a lone surrogate) cannot be carried
    to the bridge: InvalidExport there, and locally too, nothing changed."""
    local, bridged = backends
    exported = {"session_id": "bad\ud800", "variables": {}, "variable_index": {}}
    outcomes = [_outcome(state, _call("import_state", exported)) for state in (local, bridged)]
    assert outcomes == [("InvalidExport", True)] * 2


def test_a_batch_with_metadata_over_the_limit_is_refused_alike(
    backends: tuple[LocalState, BridgedState],
) -> None:
    """update_variables with metadata over max_metadata_bytes names it in a
    PartialFailure ({'<metadata>': LimitExceeded}) on both backends, nothing changed."""
    local, bridged = backends
    oversize = {"big": "y" * MAX_METADATA}
    named = []
    for state in (local, bridged):
        before = state.list_variables()
        with pytest.raises(PartialFailure) as failed:
            state.update_variables({"i": 2}, oversize)
        named.append({key: type(error).__name__ for key, error in failed.value.errors.items()})
        assert state.list_variables() == before
    assert named == [{"<metadata>": "LimitExceeded"}] * 2


def _wide_outcome(
    state: StateProvider, type_name: str, value: Any, constraints: dict[str, Any] | None
) -> tuple[tuple[str, Any], bool]:
    """Registering ``value``: "ok", or the error's class and rule; and whether the
    session is unchanged."""
    before = repr(state.list_variables())
    try:
        state.register_variable("wide", type_name, value, constraints=constraints)
    except StateError as exc:
        outcome: tuple[str, Any] = (type(exc).__name__, exc.details.get("rule"))
    else:
        outcome = ("ok", None)
    return outcome, repr(state.list_variables()) == before


@pytest.mark.parametrize(
    ("type_name", "value", "constraints"),
    [
        ("float", 2**64, None),
        ("float", -(2**63) - 1, None),
        ("embedding", [2**64, 1.0], None),
        ("tensor", {"shape": [1], "data": [2**64]}, None),
    ],
    ids=["float", "negative float", "embedding", "tensor"],
)
def test_integers_past_64_bits_are_refused_alike(
    backends: tuple[LocalState, BridgedState],
    type_name: str,
    value: Any,
    constraints: dict[str, Any] | None,
) -> None:
    """An integer past msgpack's 64 bits cannot be carried to the bridge: for a
    float, an embedding element or a tensor element it is a ValidationError (rule
    "type") locally too, nothing changed."""
    local, bridged = backends
    outcomes = [_wide_outcome(state, type_name, value, constraints) for state in (local, bridged)]
    assert outcomes == [(("ValidationError", "type"), True)] * 2


# -- known divergences --------------------------------------------------------------------

MULTI_FAULT: list[tuple[str, Case]] = [
    ("set an unknown name to an unencodable value", _call("set_variable", "nope", 2**64)),
    ("set an unknown name with bad metadata", _call("set_variable", "nope", 1, [1])),
    (
        "set an unknown name with a bad version",
        _call("set_variable", "nope", 1, expected_version=-1),
    ),
    (
        "a stale compare-and-set of an unencodable value",
        _call("set_variable", "i", 2**64, expected_version=5),
    ),
    (
        "register a taken name with bad metadata",
        _call("register_variable", "i", "integer", 1, metadata=[1]),
    ),
    (
        "register a taken name with a bad description",
        _call("register_variable", "i", "integer", 1, description=1),
    ),
    (
        "set a bad value with metadata over the limit",
        _call("set_variable", "i", "x", {"m": "y" * MAX_METADATA}),
    ),
    (
        "import a taken name with a bad version",
        _call("import_state", _export(name="f", version=True)),
    ),
    (
        "set a float to a string over the value limit",
        _call("set_variable", "free", "x" * (LONGEST_ASCII + 1)),
    ),
]


@pytest.mark.xfail(
    strict=True,
    reason=(
        "a wire form (wire/operations.py) checks what it must encode (value, metadata, "
        "expected_version, "
        "description, export shape, sizes) before sending, so a call with two faults "
        "raises the client-side check's class (ValidationError/LimitExceeded/"
        "InvalidExport) bridged, while the session actor reports VariableNotFound/"
        "VariableExists/VersionConflict/ValidationError first locally"
    ),
)
def test_calls_with_two_faults_are_refused_alike(
    backends: tuple[LocalState, BridgedState],
) -> None:
    local, bridged = backends
    differ = []
    for label, case in MULTI_FAULT:
        local_outcome, _ = _outcome(local, case)
        bridged_outcome, _ = _outcome(bridged, case)
        if local_outcome != bridged_outcome:
            differ.append(f"{label}: local {local_outcome}, bridged {bridged_outcome}")
    print(f"{len(differ)} of {len(MULTI_FAULT)} two-fault calls differ:", *differ, sep="\n  ")
    assert differ == []


def test_an_integer_past_64_bits_for_a_float_choice_is_treated_alike(
    backends: tuple[LocalState, BridgedState],
) -> None:
    local, bridged = backends
    constraints = {"choices": [float(2**64)]}
    outcomes = [_wide_outcome(state, "choice", 2**64, constraints) for state in (local, bridged)]
    print(f"2**64 for the choice float(2**64): local {outcomes[0]}, bridged {outcomes[1]}")
    assert outcomes[0] == outcomes[1]


# -- raw garbage at the server ----------------------------------------------------------------

SERVICE = pb.DESCRIPTOR.services_by_name["SessionStore"]
ALLOWED_FOR_GARBAGE = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.UNKNOWN,  # grpcio's own answer for a body it cannot parse; see below
}


def _raw_call(channel: grpc.Channel, method: Any, request: bytes) -> grpc.StatusCode:
    """Send ``request`` as they are; the status (OK included), within 5 s."""
    path = f"/{SERVICE.full_name}/{method.name}"
    try:
        if method.server_streaming:
            stream = channel.unary_stream(
                path, request_serializer=None, response_deserializer=None
            )
            call = stream(request, timeout=5)
            try:
                for _ in call:
                    break  # an answer is an answer
            finally:
                call.cancel()  # now, not when the call is collected
        else:
            channel.unary_unary(path, request_serializer=None, response_deserializer=None)(
                request, timeout=5
            )
    except grpc.RpcError as exc:
        assert isinstance(exc, grpc.Call)
        return exc.code()
    return grpc.StatusCode.OK


def _healthy(server: SessionStoreServer, state: BridgedState) -> None:
    """A normal call works and the session kept its variables."""
    assert state.get_variable("i") == 1
    with BridgedState.init(address=server.address) as fresh:
        fresh.register_variable("after", "integer", 1)
        assert fresh.set_variable("after", 2) == 1


def test_random_bytes_get_a_status_for_every_method(
    server: SessionStoreServer, backends: tuple[LocalState, BridgedState]
) -> None:
    _, bridged = backends
    rng = random.Random(7)
    seen: dict[str, dict[str, int]] = {}
    bad = []
    with grpc.insecure_channel(server.address) as channel:
        for method in SERVICE.methods:
            codes = seen.setdefault(method.name, {})
            for _ in range(16):
                garbage = rng.randbytes(rng.randrange(1, 96))
                code = _raw_call(channel, method, garbage)
                codes[code.name] = codes.get(code.name, 0) + 1
                if code is not grpc.StatusCode.OK and code not in ALLOWED_FOR_GARBAGE:
                    bad.append(f"{method.name} {garbage!r}: {code.name}")
    _healthy(server, bridged)
    print(f"random bytes: {16 * len(SERVICE.methods)} calls, statuses per method: {seen}")
    assert bad == []


@pytest.mark.xfail(
    strict=True,
    reason=(
        "a body that is not the method's protobuf fails in grpcio's deserializer, before "
        "the servicer: grpc.aio answers UNKNOWN ('Unexpected DecodeError: ...'), not "
        "INVALID_ARGUMENT; the Python client reads it as a bare StateError"
    ),
)
def test_a_body_that_is_not_protobuf_is_invalid_argument(server: SessionStoreServer) -> None:
    with grpc.insecure_channel(server.address) as channel:
        codes = {_raw_call(channel, method, b"\xff\xff\xff") for method in SERVICE.methods}
    assert codes == {grpc.StatusCode.INVALID_ARGUMENT}


def _fuzzed_msgpack(rng: random.Random) -> bytes:
    choices: list[Callable[[], bytes]] = [
        lambda: rng.randbytes(rng.randrange(1, 48)),
        lambda: msgpack.packb({"a": [1, 2, 3]})[:-1],  # truncated
        lambda: b"\xc1",  # the one byte msgpack never uses
        lambda: msgpack.packb(msgpack.ExtType(5, b"xx")),
        lambda: msgpack.packb(msgpack.Timestamp(-1, 0)),
        lambda: msgpack.packb({1: 2}),  # an int key
        lambda: b"\x91" * 5000 + b"\xc0",  # 5000 nested arrays
        lambda: b"\xdd\xff\xff\xff\xff",  # an array claiming 4G elements
        lambda: b"\xdb\xff\xff\xff\xffa",  # a string claiming 4 GiB
        lambda: b"\xdf\xff\xff\xff\xff",  # a map claiming 4G entries
        lambda: msgpack.packb([1, 2]) + b"\x01",  # trailing data
        lambda: b"\xa2\xff\xfe",  # a str that is not UTF-8
        lambda: msgpack.packb(NAN),
        lambda: msgpack.packb([[1], "x"]),  # neither a map nor one value per variable
    ]
    return rng.choice(choices)()


def _fuzzed_requests(rng: random.Random, garbage: bytes) -> list[tuple[str, Any]]:
    """One valid request per msgpack field, that field holding ``garbage``."""
    name = f"n{rng.randrange(10**9)}"
    one = msgpack.packb([1])
    columns = {
        "session_id": "x",
        "ids": [VAR_ID],
        "names": ["z"],
        "definitions": [pb.VariableDefinition(type="integer", constraints=b"")],
        "definition": [0],
        "values": one,
        "versions": [0],
        "created_at": [0.0],
        "last_updated_at": [0.0],
        "variable_metadata": msgpack.packb([{}]),
    }

    def with_columns(**changed: Any) -> pb.ImportSessionRequest:
        return pb.ImportSessionRequest(
            session_id="corpus", columns=pb.SessionColumns(**{**columns, **changed})
        )

    register = partial(pb.RegisterVariableRequest, session_id="corpus", name=name, type="integer")
    set_i = partial(pb.SetVariableRequest, session_id="corpus", identifier="i")
    update = partial(pb.UpdateVariablesRequest, session_id="corpus")
    definition = pb.VariableDefinition(type="integer", constraints=garbage)
    return [
        (
            "OpenSession",
            pb.OpenSessionRequest(session_id=name, create_if_missing=True, metadata=garbage),
        ),
        ("RegisterVariable", register(initial_value=garbage)),
        ("RegisterVariable", register(initial_value=b"\x01", constraints=garbage)),
        ("RegisterVariable", register(initial_value=b"\x01", metadata=garbage)),
        ("SetVariable", set_i(value=garbage)),
        ("SetVariable", set_i(value=b"\x01", metadata=garbage)),
        ("UpdateVariables", update(updates=garbage)),
        ("UpdateVariables", update(updates=msgpack.packb({"i": 1}), metadata=garbage)),
        ("ImportSession", pb.ImportSessionRequest(session_id="corpus", state=garbage)),
        ("ImportSession", with_columns(values=garbage)),
        ("ImportSession", with_columns(variable_metadata=garbage)),
        ("ImportSession", with_columns(metadata=garbage)),
        ("ImportSession", with_columns(definitions=[definition])),
        (
            "ImportSession",
            with_columns(ids=[VAR_ID, VAR_ID], definition=[9], versions=[-5], values=garbage),
        ),
    ]


def test_fuzzed_msgpack_is_refused_as_bad_input(
    server: SessionStoreServer, backends: tuple[LocalState, BridgedState]
) -> None:
    _, bridged = backends
    before = repr(bridged.list_variables())
    rng = random.Random(11)
    methods = {method.name: method for method in SERVICE.methods}
    tried = 0
    seen: dict[str, int] = {}
    bad = []
    with grpc.insecure_channel(server.address) as channel:
        for _ in range(24):
            garbage = _fuzzed_msgpack(rng)
            for name, request in _fuzzed_requests(rng, garbage):
                tried += 1
                code = _raw_call(channel, methods[name], request.SerializeToString())
                seen[code.name] = seen.get(code.name, 0) + 1
                if code not in {
                    grpc.StatusCode.INVALID_ARGUMENT,
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                }:
                    bad.append(f"{name} with {garbage[:24]!r}: {code.name}")
    assert repr(bridged.list_variables()) == before
    _healthy(server, bridged)
    print(f"fuzzed msgpack: {tried} requests, statuses {seen}")
    assert bad == []


# -- a property: generated input is accepted or refused alike -----------------------------

TYPES = ["float", "integer", "string", "boolean", "choice", "module", "embedding", "tensor"]

# msgpack's integer range: wider integers are a known divergence (see
# test_integers_past_64_bits_are_treated_alike), kept out so this run finds new ones.
wide_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
numbers = st.one_of(
    st.floats(), wide_ints, st.sampled_from([-0.0, 0.5, 1, 1.0, True, False, math.nan])
)
texts = st.one_of(st.text(max_size=6), st.sampled_from(["\ud800", "ab", "CoT", "", "abcdef"]))
plain = st.recursive(
    st.one_of(st.none(), numbers, texts, st.binary(max_size=4)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


def maybe_wrong(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly what the type wants, sometimes anything at all."""
    return st.one_of(strategy, strategy, strategy, plain)


@st.composite
def tensors(draw: st.DrawFn) -> dict[str, Any]:
    shape = draw(st.lists(st.integers(0, 3), max_size=2))
    count = draw(st.one_of(st.just(math.prod(shape)), st.integers(0, 6)))
    return {"shape": shape, "data": draw(st.lists(numbers, min_size=count, max_size=count))}


def _optional(**keys: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={k: maybe_wrong(v) for k, v in keys.items()})


CONSTRAINTS: dict[str, st.SearchStrategy[Any]] = {
    "float": _optional(min=numbers, max=numbers),
    "integer": _optional(min=st.integers(-5, 5), max=st.integers(-5, 5)),
    "string": _optional(
        min_length=st.integers(-1, 4),
        max_length=st.integers(0, 6),
        pattern=st.sampled_from(["^[a-z]+$", "b", "^(a+)+$", "(a)\\1", "[", "^$"]),
        enum=st.lists(texts, max_size=3),
    ),
    "boolean": st.sampled_from([{}, None, {"min": 0}]),
    "choice": st.fixed_dictionaries(
        {"choices": maybe_wrong(st.lists(st.one_of(texts, numbers), max_size=4))}
    ),
    "module": _optional(allowed_modules=st.lists(texts, max_size=3)),
    "embedding": _optional(dimensions=st.integers(-1, 4)),
    "tensor": _optional(shape=st.lists(st.one_of(st.none(), st.integers(-1, 3)), max_size=3)),
}
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "float": maybe_wrong(numbers),
    "integer": maybe_wrong(st.one_of(wide_ints, st.integers(-6, 6), st.floats())),
    "string": maybe_wrong(texts),
    "boolean": maybe_wrong(st.booleans()),
    "choice": maybe_wrong(st.one_of(texts, numbers)),
    "module": maybe_wrong(texts),
    "embedding": maybe_wrong(st.lists(numbers, max_size=4)),
    "tensor": maybe_wrong(tensors()),
}
metadata = st.one_of(
    st.none(),
    st.dictionaries(st.text(max_size=4), plain, max_size=3),
    st.dictionaries(st.text(max_size=4), plain, max_size=3),
    st.sampled_from([[], {"\ud800": 1}, {"a": object()}, {1: 2}]),
)


def _case(type_name: str) -> st.SearchStrategy[tuple[Any, ...]]:
    """A type's constraints, a first value and metadata, then a second value and metadata;
    an unknown type name gets anything."""
    value = VALUES.get(type_name, plain)
    return st.tuples(
        st.just(type_name),
        CONSTRAINTS.get(type_name, st.none()),
        value,
        metadata,
        value,
        metadata,
    )


inputs = st.sampled_from([*TYPES, "nope"]).flatmap(_case)


def _attempt(action: Callable[[], Any]) -> str:
    try:
        action()
    except StateError as exc:
        return type(exc).__name__
    except Exception as exc:
        return f"{type(exc).__name__} (not a StateError)"
    return "ok"


def test_generated_input_is_accepted_or_refused_alike(server: SessionStoreServer) -> None:
    tried = [0]
    outcomes: dict[str, int] = {}
    local = LocalState.init(session_id="generated")
    bridged = BridgedState.init(session_id="generated", address=server.address)

    @settings(max_examples=300, deadline=None, derandomize=True, database=None)
    @given(inputs)
    def agree(case: tuple[Any, Any, Any, Any, Any, Any]) -> None:
        type_name, limits, first, first_meta, second, second_meta = case
        name = f"g{tried[0]}"
        tried[0] += 1
        results = []
        for state in (local, bridged):
            registered = _attempt(
                partial(
                    state.register_variable,
                    name,
                    type_name,
                    first,
                    constraints=limits,
                    metadata=first_meta,
                )
            )
            written = (
                _attempt(partial(state.set_variable, name, second, second_meta))
                if registered == "ok"
                else "-"
            )
            record = state.get_record(name) if registered == "ok" else None
            stored = (
                None
                if record is None
                else repr((record.value, record.constraints, record.metadata, record.version))
            )
            results.append((registered, written, stored))
        for step in results[0][:2]:
            outcomes[step] = outcomes.get(step, 0) + 1
        assert results[0] == results[1]
        assert "not a StateError" not in repr(results)

    try:
        agree()
    finally:
        local.cleanup()
        bridged.cleanup()
    print(f"hypothesis: {tried[0]} generated inputs tried on both backends; outcomes {outcomes}")
