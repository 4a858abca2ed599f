"""dspex_actors.errors: the hierarchy, its attributes, and errors that survive pickling."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import pytest

from dspex_actors import errors
from dspex_actors.errors import (
    ERROR_CLASSES,
    BridgeUnavailable,
    InvalidExport,
    LimitExceeded,
    NotSupported,
    PartialFailure,
    SessionClosed,
    SessionNotFound,
    StateError,
    Unauthenticated,
    ValidationError,
    VariableExists,
    VariableNotFound,
    VersionConflict,
)

ALL_CLASSES: list[type[StateError]] = [getattr(errors, name) for name in errors.__all__]


# -- hierarchy -------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_every_error_is_a_state_error(cls: type[StateError]) -> None:
    assert issubclass(cls, StateError)
    assert issubclass(cls, Exception)


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (VariableNotFound, KeyError),
        (SessionNotFound, KeyError),
        (ValidationError, ValueError),
        (InvalidExport, ValueError),
        (BridgeUnavailable, ConnectionError),
    ],
    ids=lambda x: x.__name__,
)
def test_builtin_bases(cls: type[StateError], builtin: type[Exception]) -> None:
    assert issubclass(cls, builtin)
    with pytest.raises(builtin):
        raise cls("boom")


@pytest.mark.parametrize(
    "cls",
    [
        VariableExists,
        PartialFailure,
        VersionConflict,
        SessionClosed,
        Unauthenticated,
        LimitExceeded,
        NotSupported,
    ],
    ids=lambda c: c.__name__,
)
def test_other_errors_are_not_key_or_value_errors(cls: type[StateError]) -> None:
    assert not issubclass(cls, KeyError | ValueError | ConnectionError)


def test_all_lists_exactly_the_state_error_classes() -> None:
    defined = {
        name
        for name, obj in vars(errors).items()
        if isinstance(obj, type) and issubclass(obj, StateError)
    }
    assert set(errors.__all__) == defined


def test_reasons_are_distinct_non_empty_strings() -> None:
    reasons = [cls.reason for cls in ALL_CLASSES]
    assert all(isinstance(r, str) and r for r in reasons)
    assert len(set(reasons)) == len(reasons), reasons


def test_reason_is_readable_from_instances() -> None:
    assert VariableNotFound("x").reason == "not_found"
    assert StateError("x").reason == "state_error"


# -- messages ----------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_str_is_the_plain_message(cls: type[StateError]) -> None:
    message = "variable 'x' not found in session 's'"
    exc = cls(message)
    assert str(exc) == message
    assert exc.message == message
    assert exc.args == (message,)


def test_key_errors_are_not_quoted() -> None:
    # A bare KeyError would give "'no such thing'".
    assert str(VariableNotFound("no such thing")) == "no such thing"
    assert str(SessionNotFound("no such session")) == "no such session"


# -- attributes --------------------------------------------------------------------------


def test_details_hold_the_keyword_data() -> None:
    exc = StateError("m", a=1, b=[2])
    assert exc.details == {"a": 1, "b": [2]}
    assert StateError("m").details == {}


def test_variable_not_found_and_exists_attributes() -> None:
    assert VariableNotFound("m", variable="temp").variable == "temp"
    assert VariableExists("m", variable="temp").variable == "temp"
    assert VariableNotFound("m").variable is None


def test_validation_error_attributes() -> None:
    exc = ValidationError("m", variable="temp", rule="max", value=3.5)
    assert (exc.variable, exc.rule, exc.value) == ("temp", "max", 3.5)
    assert exc.details == {"variable": "temp", "rule": "max", "value": 3.5}
    bare = ValidationError("m")
    assert (bare.variable, bare.rule, bare.value) == (None, None, None)


def test_version_conflict_attributes() -> None:
    exc = VersionConflict("m", variable="temp", expected=2, actual=5)
    assert (exc.variable, exc.expected, exc.actual) == ("temp", 2, 5)
    bare = VersionConflict("m")
    assert (bare.variable, bare.expected, bare.actual) == (None, None, None)


def test_partial_failure_errors_attribute() -> None:
    inner = {"a": VariableNotFound("a gone", variable="a")}
    exc = PartialFailure("1 of 2 failed", errors=inner)
    assert exc.errors == inner
    assert exc.errors is not inner  # a copy of the mapping
    assert PartialFailure("m").errors == {}


def test_session_not_found_and_limit_attributes() -> None:
    assert SessionNotFound("m", session_id="sess_1").session_id == "sess_1"
    assert LimitExceeded("m", limit="max_sessions").limit == "max_sessions"
    assert SessionNotFound("m").session_id is None
    assert LimitExceeded("m").limit is None


# -- pickling and copying ------------------------------------------------------------------


def _sample(cls: type[StateError]) -> StateError:
    details: dict[str, Any] = {"variable": "temp", "rule": "max", "value": [1.5, {"k": "v"}]}
    if cls is PartialFailure:
        return PartialFailure(
            "one failed",
            errors={"temp": ValidationError("bad", variable="temp", rule="max", value=2)},
            **details,
        )
    return cls(f"{cls.__name__} happened", **details)


def _roundtrips(exc: StateError) -> list[tuple[str, StateError]]:
    return [
        ("pickle", pickle.loads(pickle.dumps(exc))),
        ("copy", copy.copy(exc)),
        ("deepcopy", copy.deepcopy(exc)),
    ]


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_round_trip_preserves_class_message_and_details(cls: type[StateError]) -> None:
    original = _sample(cls)
    for how, clone in _roundtrips(original):
        assert type(clone) is cls, how
        assert clone.message == original.message, how
        assert str(clone) == str(original), how
        assert clone.details == original.details, how
        assert clone.reason == original.reason, how


def test_round_trip_preserves_typed_attributes() -> None:
    exc = VersionConflict("m", variable="temp", expected=1, actual=2)
    clone = pickle.loads(pickle.dumps(exc))
    assert (clone.variable, clone.expected, clone.actual) == ("temp", 1, 2)
    invalid = ValidationError("m", variable="v", rule="pattern", value="abc")
    clone_invalid = pickle.loads(pickle.dumps(invalid))
    assert (clone_invalid.variable, clone_invalid.rule, clone_invalid.value) == (
        "v",
        "pattern",
        "abc",
    )


def test_partial_failure_round_trip_keeps_inner_errors() -> None:
    exc = PartialFailure(
        "2 failed",
        errors={
            "a": VariableNotFound("a missing", variable="a"),
            "b": ValidationError("b bad", variable="b", rule="min", value=-1),
        },
    )
    for how, clone in _roundtrips(exc):
        assert isinstance(clone, PartialFailure), how
        assert set(clone.errors) == {"a", "b"}, how
        assert type(clone.errors["a"]) is VariableNotFound, how
        assert clone.errors["a"].details == {"variable": "a"}, how
        inner_b = clone.errors["b"]
        assert isinstance(inner_b, ValidationError), how
        assert (inner_b.rule, inner_b.value, str(inner_b)) == ("min", -1, "b bad"), how


# -- the codec's table -------------------------------------------------------------------


def test_error_classes_covers_every_exported_class() -> None:
    assert set(ERROR_CLASSES) == set(errors.__all__)
    for name, cls in ERROR_CLASSES.items():
        assert cls is getattr(errors, name)
        assert cls.__name__ == name
