"""Types and constraints: each value a type accepts (and how it is coerced), each bad
value rejected on every write path, and constraint sets refused at registration.

The cases are tables, one row per case, so a failure names the type, the
constraints and the value in its test id.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import pytest

from dspex_actors.errors import PartialFailure, ValidationError, VariableNotFound
from dspex_actors.provider import StateProvider
from dspex_actors.testing.base import (
    TENSOR_2X2,
    ContractBase,
    assert_unchanged,
    assert_validation_error,
    record_of,
    same,
)

__all__ = [
    "ACCEPTED",
    "BAD_CONSTRAINTS",
    "REJECTED",
    "Accepted",
    "BadConstraints",
    "Rejected",
    "ValuesContract",
]


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


class ValuesContract(ContractBase):
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
            record_of(state, name)["value"],
            state.export_state()["variables"][var_id]["value"],
        ):
            assert same(got, case.stored), f"stored {got!r}, expected {case.stored!r}"

        # The same value through set_variable is accepted and coerced the same way.
        assert state.set_variable(name, copy.deepcopy(case.value)) == 1
        assert same(state.get_variable(name), case.stored)
        record = record_of(state, name)
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
            assert_validation_error(info.value, name=name, rule=case.rule, value=case.bad)
            assert_unchanged(state, before)
            with pytest.raises(VariableNotFound):
                state.get_variable(name)
            return

        state.register_variable(name, case.vtype, good, constraints=constraints)
        state.set_variable(name, copy.deepcopy(good))  # version 1: "unchanged" is not "fresh"
        before = state.list_variables()
        if path == "set":
            with pytest.raises(ValidationError) as info:
                state.set_variable(name, bad, {"touched": True})
            assert_validation_error(info.value, name=name, rule=case.rule, value=case.bad)
        else:
            with pytest.raises(PartialFailure) as batch:
                state.update_variables({"bystander": 8, name: bad}, {"touched": True})
            assert set(batch.value.errors) == {name}
            assert_validation_error(
                batch.value.errors[name], name=name, rule=case.rule, value=case.bad
            )
        assert_unchanged(state, before)

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
        assert_unchanged(state, before)
        with pytest.raises(VariableNotFound):
            state.get_variable(name)

    @pytest.mark.parametrize("type_name", ["quaternion", "", "Float"])
    def test_unknown_type_rejected(self, state: StateProvider, type_name: str) -> None:
        before = state.list_variables()
        with pytest.raises(ValidationError) as info:
            state.register_variable("mystery", type_name, 1.0)
        assert_validation_error(info.value, name="mystery", rule="type", value=type_name)
        assert_unchanged(state, before)

    def test_metadata_must_be_plain_data(self, state: StateProvider) -> None:
        before = state.list_variables()
        not_plain: list[Any] = [{"handle": object()}, {1: "int key"}, {"nested": {"s": {1, 2}}}]
        for bad in not_plain:
            with pytest.raises(ValidationError) as info:
                state.register_variable("knob", "integer", 1, metadata=bad)
            assert "knob" in str(info.value), f"message {str(info.value)!r} does not name knob"
        assert_unchanged(state, before)

        state.register_variable("knob", "integer", 1)
        state.register_variable("other", "integer", 2)
        before = state.list_variables()
        with pytest.raises(ValidationError) as info:
            state.set_variable("knob", 2, {"handle": object()})
        assert "knob" in str(info.value), f"message {str(info.value)!r} does not name knob"
        # A batch whose metadata is not plain data: refused as a whole, nothing applied.
        with pytest.raises((PartialFailure, ValidationError)):
            state.update_variables({"knob": 3, "other": 4}, {"handle": object()})
        assert_unchanged(state, before)

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
