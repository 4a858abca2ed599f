"""dspex_actors.vartypes: every type, its constraints, and the plain-data checks."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import partial
from types import MappingProxyType
from typing import Any, NamedTuple

import pytest

from dspex_actors.errors import ValidationError
from dspex_actors.vartypes import (
    TYPE_NAMES,
    Validator,
    check_expected_version,
    check_metadata,
    check_name,
    compile_type,
    describe_value,
    plain_copy,
)

INF = math.inf
NAN = math.nan
HUGE = 10**400  # an int no float can hold


class Bound(NamedTuple):
    """A Validator with one variable's name bound: ``check(value)`` is the session
    actor's ``validator.check(variable, value)``."""

    type: str
    constraints: dict[str, Any]
    check: Callable[[Any], Any]
    thaw: Callable[[Any], Any] | None


def compile_ok(type_name: str, constraints: Any = None, variable: str = "var") -> Bound:
    validator: Validator = compile_type(variable, type_name, constraints)
    return Bound(
        validator.type, validator.constraints, partial(validator.check, variable), validator.thaw
    )


def assert_invalid(
    call: Callable[[], Any], *, variable: str, rule: str, value: Any
) -> ValidationError:
    """The call raises a ValidationError carrying the variable, the rule and the value.

    Its message names the variable and the rule, and shows repr(value).
    """
    with pytest.raises(ValidationError) as info:
        call()
    exc = info.value
    assert exc.variable == variable
    assert exc.rule == rule
    if isinstance(value, float) and math.isnan(value):
        assert isinstance(exc.value, float)
        assert math.isnan(exc.value)
    else:
        # .value crosses the wire: plain data as plain data (tuples become lists).
        assert exc.value == plain_copy(value)
    message = str(exc)
    assert variable in message
    assert rule in message
    # repr(value), cut to a readable length for huge values.
    assert describe_value(value) in message
    return exc


def rejects(validator: Bound, value: Any, rule: str, variable: str = "var") -> None:
    assert_invalid(lambda: validator.check(value), variable=variable, rule=rule, value=value)


def bad_definition(
    type_name: Any, constraints: Any, rule: str, value: Any, variable: str = "var"
) -> ValidationError:
    return assert_invalid(
        lambda: compile_type(variable, type_name, constraints),
        variable=variable,
        rule=rule,
        value=value,
    )


def same(got: Any, want: Any) -> None:
    """Equal with the same type (1 == 1.0 == True would hide a missing coercion)."""
    assert type(got) is type(want), (got, want)
    assert got == want


# -- Validator basics ---------------------------------------------------------------------


def test_type_names_lists_the_eight_types() -> None:
    assert set(TYPE_NAMES) == {
        "float",
        "integer",
        "string",
        "boolean",
        "choice",
        "module",
        "embedding",
        "tensor",
    }
    assert len(TYPE_NAMES) == 8


@pytest.mark.parametrize(
    ("type_name", "constraints"),
    [
        ("float", None),
        ("integer", {}),
        ("string", None),
        ("boolean", None),
        ("choice", {"choices": ["a"]}),
        ("module", None),
        ("embedding", None),
        ("tensor", None),
    ],
)
def test_compile_type_returns_a_validator(type_name: str, constraints: Any) -> None:
    validator = compile_type("var", type_name, constraints)
    assert isinstance(validator, Validator)
    assert validator.type == type_name
    assert isinstance(validator.constraints, dict)
    with pytest.raises(AttributeError):
        validator.type = "other"  # type: ignore[misc]


def test_alike_definitions_share_one_validator_that_names_each_variable() -> None:
    first = compile_type("a", "float", {"min": 0, "max": 1})
    second = compile_type("b", "float", {"min": 0, "max": 1})
    assert second is first
    assert compile_type("c", "float", {"min": 0, "max": 2}) is not first
    assert compile_type("d", "integer", {"min": 0, "max": 1}) is not first
    assert_invalid(lambda: first.check("b", 1.5), variable="b", rule="max", value=1.5)
    assert_invalid(lambda: first.check("a", -1.0), variable="a", rule="min", value=-1.0)


def test_a_definition_the_cache_cannot_key_still_compiles() -> None:
    # Only plain dicts are cached (keyed by their msgpack); other mappings compile anew.
    proxy = MappingProxyType({"min": 0, "max": 1})
    validator = compile_type("s", "float", proxy)
    assert validator.check("s", 0.5) == 0.5
    assert compile_type("t", "float", proxy) is not validator
    assert_invalid(lambda: validator.check("t", 2.0), variable="t", rule="max", value=2.0)


def test_scalar_types_need_no_thaw() -> None:
    for type_name in ("float", "integer", "string", "boolean", "module"):
        assert compile_ok(type_name).thaw is None
    assert compile_ok("choice", {"choices": [1]}).thaw is None
    assert compile_ok("embedding").thaw is not None
    assert compile_ok("tensor").thaw is not None


def test_compile_type_does_not_mutate_the_caller_constraints() -> None:
    constraints = {"min": 1, "max": 2}
    validator = compile_ok("float", constraints)
    assert constraints == {"min": 1, "max": 2}
    same(constraints["min"], 1)
    same(validator.constraints["min"], 1.0)
    enum = ("a", "b")
    string_constraints = {"enum": enum}
    validator = compile_ok("string", string_constraints)
    assert string_constraints["enum"] is enum
    assert validator.constraints["enum"] == ["a", "b"]


# -- float ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "normalized"),
    [
        (1.5, 1.5),
        (-0.25, -0.25),
        (0, 0.0),
        (3, 3.0),
        (-7, -7.0),
        (2**63 - 1, float(2**63 - 1)),
        (INF, INF),
        (-INF, -INF),
    ],
)
def test_float_accepts_numbers_and_coerces_ints(value: Any, normalized: float) -> None:
    same(compile_ok("float").check(value), normalized)


def test_float_accepts_nan_without_bounds() -> None:
    result = compile_ok("float").check(NAN)
    assert isinstance(result, float)
    assert math.isnan(result)


@pytest.mark.parametrize("value", [True, False, "1.0", None, [1.0], {"v": 1}, b"1"])
def test_float_rejects_non_numbers(value: Any) -> None:
    rejects(compile_ok("float"), value, "type")


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, 10**300])
def test_float_rejects_an_int_past_64_bits(value: int) -> None:
    """msgpack carries no wider integer: a local session refuses what the bridge
    cannot receive (the same rule for every backend)."""
    exc = assert_invalid(
        lambda: compile_ok("float").check(value), variable="var", rule="type", value=value
    )
    assert "64-bit" in str(exc)


def test_float_rejects_an_int_too_large_for_a_float() -> None:
    exc = assert_invalid(
        lambda: compile_ok("float").check(HUGE), variable="var", rule="type", value=HUGE
    )
    assert "64-bit" in str(exc) or "too large" in str(exc)


def test_float_bounds_accept_values_inside() -> None:
    validator = compile_ok("float", {"min": 0, "max": 1})
    for value, normalized in [(0, 0.0), (1, 1.0), (0.5, 0.5), (-0.0, -0.0)]:
        same(validator.check(value), normalized)


@pytest.mark.parametrize(
    ("value", "rule"),
    [(-0.1, "min"), (1.1, "max"), (-1, "min"), (2, "max"), (INF, "max"), (-INF, "min")],
)
def test_float_bounds_reject_values_outside(value: Any, rule: str) -> None:
    rejects(compile_ok("float", {"min": 0, "max": 1}), value, rule)


def test_float_bounds_reject_nan() -> None:
    rejects(compile_ok("float", {"min": 0, "max": 1}), NAN, "min")
    rejects(compile_ok("float", {"min": 0}), NAN, "min")
    rejects(compile_ok("float", {"max": 1}), NAN, "max")


def test_float_max_only_bound_accepts_minus_infinity() -> None:
    validator = compile_ok("float", {"max": 1})
    same(validator.check(-INF), -INF)
    rejects(validator, INF, "max")


def test_float_min_only_bound_accepts_plus_infinity() -> None:
    validator = compile_ok("float", {"min": 0})
    same(validator.check(INF), INF)
    rejects(validator, -INF, "min")


def test_float_bounds_still_reject_bool() -> None:
    rejects(compile_ok("float", {"min": 0, "max": 1}), True, "type")


def test_float_message_names_the_bound() -> None:
    exc = assert_invalid(
        lambda: compile_ok("float", {"max": 2}, variable="temperature").check(2.5),
        variable="temperature",
        rule="max",
        value=2.5,
    )
    assert "2.0" in str(exc)


@pytest.mark.parametrize(
    ("constraints", "rule", "value"),
    [
        ({"min": 2, "max": 1}, "min", 2.0),
        ({"min": "0"}, "min", "0"),
        ({"max": None}, "max", None),
        ({"min": True}, "min", True),
        ({"max": [1]}, "max", [1]),
        ({"min": NAN}, "min", NAN),
        ({"max": NAN}, "max", NAN),
    ],
    ids=["min>max", "str-min", "none-max", "bool-min", "list-max", "nan-min", "nan-max"],
)
def test_float_bad_bounds(constraints: dict[str, Any], rule: str, value: Any) -> None:
    bad_definition("float", constraints, rule, value)


@pytest.mark.parametrize("key", ["min", "max"])
def test_float_bound_too_large_for_a_float_is_a_validation_error(key: str) -> None:
    bad_definition("float", {key: HUGE}, key, HUGE)


def test_float_equal_bounds_are_fine() -> None:
    validator = compile_ok("float", {"min": 1, "max": 1})
    same(validator.check(1), 1.0)
    rejects(validator, 1.5, "max")


# -- integer -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "normalized"),
    [(3, 3), (0, 0), (-5, -5), (3.0, 3), (-0.0, 0), (1e19, 10**19), (2**64 - 1, 2**64 - 1)],
    ids=["3", "0", "-5", "3.0", "-0.0", "1e19", "uint64-max"],
)
def test_integer_accepts_integral_values(value: Any, normalized: int) -> None:
    same(compile_ok("integer").check(value), normalized)


@pytest.mark.parametrize("value", [3.5, -0.1, NAN, INF, -INF])
def test_integer_rejects_non_integral_numbers(value: float) -> None:
    rejects(compile_ok("integer"), value, "type")


@pytest.mark.parametrize("value", [True, False, "3", None, [3]])
def test_integer_rejects_non_numbers(value: Any) -> None:
    rejects(compile_ok("integer"), value, "type")


def test_integer_bounds() -> None:
    validator = compile_ok("integer", {"min": 1, "max": 10})
    same(validator.check(1), 1)
    same(validator.check(10.0), 10)
    rejects(validator, 0, "min")
    rejects(validator, 11, "max")
    rejects(validator, True, "type")


@pytest.mark.parametrize(
    "value",
    [HUGE, -HUGE, 2**64, -(2**63) - 1, 1e20],
    ids=["huge", "-huge", "2**64", "<int64", "1e20"],
)
def test_integers_msgpack_cannot_carry_are_rejected(value: Any) -> None:
    # Every value must be able to cross the bridge, so integers are 64-bit.
    rejects(compile_ok("integer"), value, "type")
    rejects(compile_ok("integer", {"min": 1, "max": 10}), value, "type")


def test_integer_range_edges_are_accepted() -> None:
    same(compile_ok("integer").check(-(2**63)), -(2**63))


@pytest.mark.parametrize(
    ("constraints", "rule", "value"),
    [
        ({"min": 1.0}, "min", 1.0),
        ({"max": 2.5}, "max", 2.5),
        ({"min": True}, "min", True),
        ({"max": "10"}, "max", "10"),
        ({"min": 5, "max": 1}, "min", 5),
        ({"min": NAN}, "min", NAN),
    ],
    ids=["float-min", "float-max", "bool-min", "str-max", "min>max", "nan-min"],
)
def test_integer_bad_bounds(constraints: dict[str, Any], rule: str, value: Any) -> None:
    bad_definition("integer", constraints, rule, value)


# -- string --------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["", "abc", "ünïcode ✓", "x" * 10_000])
def test_string_accepts_strings(value: str) -> None:
    same(compile_ok("string").check(value), value)


def test_string_subclass_is_stored_as_plain_str() -> None:
    class Name(str):
        pass

    same(compile_ok("string").check(Name("bob")), "bob")


@pytest.mark.parametrize("value", [None, 1, 1.5, True, b"abc", ["a"]])
def test_string_rejects_non_strings(value: Any) -> None:
    rejects(compile_ok("string"), value, "type")


def test_string_lengths() -> None:
    validator = compile_ok("string", {"min_length": 2, "max_length": 4})
    assert validator.check("ab") == "ab"
    assert validator.check("abcd") == "abcd"
    rejects(validator, "a", "min_length")
    rejects(validator, "abcde", "max_length")


def test_string_zero_lengths_are_fine() -> None:
    validator = compile_ok("string", {"min_length": 0, "max_length": 0})
    assert validator.check("") == ""
    rejects(validator, "a", "max_length")


def test_string_pattern_uses_search_semantics() -> None:
    validator = compile_ok("string", {"pattern": "b+"})
    assert validator.check("abbbc") == "abbbc"  # matches in the middle: search, not match
    rejects(validator, "ac", "pattern")
    anchored = compile_ok("string", {"pattern": "^b"})
    rejects(anchored, "abc", "pattern")
    assert anchored.check("bc") == "bc"
    full = compile_ok("string", {"pattern": r"^\d{3}$"})
    assert full.check("123") == "123"
    rejects(full, "1234", "pattern")


def test_string_enum() -> None:
    validator = compile_ok("string", {"enum": ["concise", "detailed"]})
    assert validator.check("concise") == "concise"
    rejects(validator, "verbose", "enum")
    rejects(validator, "Concise", "enum")


def test_string_enum_holds_strings_only() -> None:
    # Unlike choice, enum needs no by-value rule: a number never reaches it.
    validator = compile_ok("string", {"enum": ["1", "true"]})
    rejects(validator, 1, "type")
    rejects(validator, True, "type")
    assert validator.check("1") == "1"


def test_string_all_constraints_together() -> None:
    validator = compile_ok(
        "string", {"min_length": 2, "max_length": 5, "pattern": "^[a-z]+$", "enum": ["abc", "x"]}
    )
    assert validator.check("abc") == "abc"
    rejects(validator, "x", "min_length")
    rejects(validator, "ABC", "pattern")
    rejects(validator, "abd", "enum")


@pytest.mark.parametrize(
    ("constraints", "rule", "value"),
    [
        ({"min_length": 5, "max_length": 2}, "min_length", 5),
        ({"min_length": -1}, "min_length", -1),
        ({"max_length": -3}, "max_length", -3),
        ({"min_length": 1.0}, "min_length", 1.0),
        ({"max_length": True}, "max_length", True),
        ({"max_length": "3"}, "max_length", "3"),
        ({"pattern": "("}, "pattern", "("),
        ({"pattern": "[a-"}, "pattern", "[a-"),
        ({"pattern": 123}, "pattern", 123),
        ({"pattern": None}, "pattern", None),
        ({"pattern": b"abc"}, "pattern", b"abc"),
        ({"enum": []}, "enum", []),
        ({"enum": "abc"}, "enum", "abc"),
        ({"enum": ["a", 1]}, "enum", ["a", 1]),
        ({"enum": None}, "enum", None),
    ],
)
def test_string_bad_constraints(constraints: dict[str, Any], rule: str, value: Any) -> None:
    bad_definition("string", constraints, rule, value)


def test_string_bad_regex_message_says_so() -> None:
    exc = bad_definition("string", {"pattern": "("}, "pattern", "(", variable="style")
    assert "regex" in str(exc)


def test_string_pattern_is_matched_by_re2_without_backtracking() -> None:
    # Python's re backtracks for seconds on this value, inside the session actor; RE2
    # decides it in linear time (the time is shown by a benchmark, not asserted here).
    validator = compile_ok("string", {"pattern": "^(a+)+$"})
    rejects(validator, "a" * 26 + "!", "pattern")
    assert validator.check("a" * 26) == "a" * 26


@pytest.mark.parametrize(
    "pattern",
    [
        r"(a)\1",  # backreference
        r"(?P<x>a)(?P=x)",  # named backreference
        "a(?=b)",  # lookahead
        "a(?!b)",  # negative lookahead
        "(?<=a)b",  # lookbehind
        "a++",  # possessive repeat
        "(?>a)",  # atomic group
        r"a\Z",  # Python's end of text; RE2 spells it \z
    ],
)
def test_string_pattern_refuses_what_re2_cannot_express(pattern: str) -> None:
    exc = bad_definition("string", {"pattern": pattern}, "pattern", pattern)
    assert "RE2 regex syntax is required" in str(exc)
    assert "linear" in str(exc)  # and why


def test_string_pattern_too_large_for_re2_memory_is_refused() -> None:
    pattern = r"\pL{1000}"  # 9 characters, a program over the 8 MiB budget
    exc = bad_definition("string", {"pattern": pattern}, "pattern", pattern)
    assert "8 MiB" in str(exc)


def test_string_pattern_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(ValidationError) as info:
        compile_type("var", "string", {"pattern": "\ud800"})
    assert info.value.rule == "pattern"


def test_string_pattern_re2_syntax() -> None:
    dated = compile_ok("string", {"pattern": r"^(?P<year>\d{4})-\d{2}$"})
    assert dated.check("2024-05") == "2024-05"
    rejects(dated, "2024-5", "pattern")
    # $ is the end of the text (Python's re would also match before a final newline).
    rejects(dated, "2024-05\n", "pattern")
    accented = compile_ok("string", {"pattern": "^é+ü$"})
    assert accented.check("ééü") == "ééü"  # characters, not bytes
    rejects(accented, "eeü", "pattern")
    assert compile_ok("string", {"pattern": "(?i)^abc"}).check("ABCd") == "ABCd"
    assert compile_ok("string", {"pattern": r"a\z"}).check("ba") == "ba"


# -- boolean -------------------------------------------------------------------------------


def test_boolean_accepts_only_true_and_false() -> None:
    validator = compile_ok("boolean")
    same(validator.check(True), True)
    same(validator.check(False), False)


@pytest.mark.parametrize("value", [1, 0, 1.0, "true", "", None, [True]])
def test_boolean_rejects_everything_else(value: Any) -> None:
    rejects(compile_ok("boolean"), value, "type")


@pytest.mark.parametrize(("value", "kind"), [("true", "str"), (1, "int"), (0.0, "float")])
def test_boolean_refusal_says_what_to_send(value: Any, kind: str) -> None:
    with pytest.raises(ValidationError) as caught:
        compile_ok("boolean").check(value)
    assert (
        "expected a boolean (true or false; strings and numbers are not converted), "
        f"got {kind}" in str(caught.value)
    )


def test_boolean_takes_no_constraints() -> None:
    exc = bad_definition("boolean", {"default": True}, "constraints", {"default": True})
    assert "'default'" in str(exc)


# -- choice --------------------------------------------------------------------------------


def test_choice_accepts_its_choices() -> None:
    validator = compile_ok("choice", {"choices": ["gpt-4", 3, 0.5, True]})
    same(validator.check("gpt-4"), "gpt-4")
    same(validator.check(3), 3)
    same(validator.check(0.5), 0.5)
    same(validator.check(True), True)


def test_choice_rejects_other_values() -> None:
    validator = compile_ok("choice", {"choices": ["gpt-4", "claude"]})
    rejects(validator, "gpt-5", "choices")
    rejects(validator, None, "choices")
    rejects(validator, ["gpt-4"], "choices")


def test_choice_compares_numbers_by_value_and_stores_the_listed_choice() -> None:
    floats = compile_ok("choice", {"choices": [0.5, 1.0, 2.0]})
    same(floats.check(1), 1.0)  # what a JavaScript client's msgpack sends for 1.0
    same(floats.check(2), 2.0)
    same(floats.check(0.5), 0.5)
    rejects(floats, 3, "choices")
    ints = compile_ok("choice", {"choices": [0.5, 1, 2]})  # whole numbers listed by Node
    same(ints.check(1.0), 1)
    same(ints.check(2), 2)
    rejects(ints, 1.5, "choices")


def test_choice_never_matches_across_kinds() -> None:
    ints = compile_ok("choice", {"choices": [1, 0]})
    rejects(ints, True, "choices")
    rejects(ints, False, "choices")
    rejects(ints, "1", "choices")
    floats = compile_ok("choice", {"choices": [1.0, 0.0]})
    rejects(floats, True, "choices")
    rejects(floats, False, "choices")
    bools = compile_ok("choice", {"choices": [True]})
    rejects(bools, 1, "choices")
    rejects(bools, 1.0, "choices")
    rejects(bools, "True", "choices")
    same(bools.check(True), True)
    strings = compile_ok("choice", {"choices": ["1", "a"]})
    rejects(strings, 1, "choices")
    rejects(strings, 1.0, "choices")
    same(strings.check("1"), "1")


def test_choice_mixed_kinds_each_match_their_own() -> None:
    mixed = compile_ok("choice", {"choices": [True, 1, "1", 1.0]})
    same(mixed.check(True), True)
    same(mixed.check(1), 1)  # equal choices by value: the first listed wins
    same(mixed.check(1.0), 1)
    same(mixed.check("1"), "1")
    rejects(mixed, False, "choices")


def test_choice_compares_numbers_exactly() -> None:
    big = compile_ok("choice", {"choices": [2**53]})
    same(big.check(2.0**53), 2**53)
    rejects(big, 2**53 + 1, "choices")
    rejects(big, 2.0**53 + 2, "choices")
    rejects(big, HUGE, "type")  # past 64 bits: no backend could carry it


def test_choice_nan_never_matches() -> None:
    validator = compile_ok("choice", {"choices": [NAN, 1.0]})
    rejects(validator, NAN, "choices")  # not even the very same nan object
    same(validator.check(1), 1.0)


def test_choice_unhashable_values_are_refused_not_crashed() -> None:
    validator = compile_ok("choice", {"choices": ["a"]})
    rejects(validator, {"a": 1}, "choices")
    rejects(validator, [1.0], "choices")


def test_choice_tuple_of_choices_is_stored_as_list() -> None:
    validator = compile_ok("choice", {"choices": ("a", "b")})
    assert validator.constraints["choices"] == ["a", "b"]
    assert validator.check("b") == "b"


@pytest.mark.parametrize(
    ("constraints", "value"),
    [
        ({}, None),
        (None, None),
        ({"choices": []}, []),
        ({"choices": ()}, ()),
        ({"choices": None}, None),
        ({"choices": "abc"}, "abc"),
        ({"choices": [None]}, [None]),
        ({"choices": [["a"]]}, [["a"]]),
        ({"choices": [{"a": 1}]}, [{"a": 1}]),
    ],
    ids=[
        "absent",
        "none-constraints",
        "empty",
        "empty-tuple",
        "none",
        "str",
        "none-item",
        "list-item",
        "dict-item",
    ],
)
def test_choice_bad_choices(constraints: Any, value: Any) -> None:
    bad_definition("choice", constraints, "choices", value)


# -- module --------------------------------------------------------------------------------


def test_module_accepts_module_names() -> None:
    validator = compile_ok("module")
    same(validator.check("dspy.Predict"), "dspy.Predict")


@pytest.mark.parametrize("value", ["", None, 1, ["dspy"], True])
def test_module_rejects_non_names(value: Any) -> None:
    rejects(compile_ok("module"), value, "type")


def test_module_allowed_modules() -> None:
    validator = compile_ok("module", {"allowed_modules": ["Predict", "ChainOfThought"]})
    assert validator.check("Predict") == "Predict"
    rejects(validator, "ReAct", "allowed_modules")


@pytest.mark.parametrize("allowed", [[], "Predict", ["Predict", 1], None])
def test_module_bad_allowed_modules(allowed: Any) -> None:
    bad_definition("module", {"allowed_modules": allowed}, "allowed_modules", allowed)


# -- embedding -----------------------------------------------------------------------------


def test_embedding_freezes_to_a_tuple_of_floats() -> None:
    frozen = compile_ok("embedding").check([1, 2.5, -3])
    same(frozen, (1.0, 2.5, -3.0))
    assert all(type(x) is float for x in frozen)


def test_embedding_accepts_a_tuple_and_an_empty_list() -> None:
    validator = compile_ok("embedding")
    same(validator.check((0.5, 1)), (0.5, 1.0))
    same(validator.check([]), ())


def test_embedding_does_not_keep_the_callers_list() -> None:
    value = [1.0, 2.0]
    frozen = compile_ok("embedding").check(value)
    value[0] = 99.0
    assert frozen == (1.0, 2.0)


def test_embedding_thaw_gives_a_fresh_list_each_time() -> None:
    validator = compile_ok("embedding")
    assert validator.thaw is not None
    frozen = validator.check([1, 2])
    first = validator.thaw(frozen)
    second = validator.thaw(frozen)
    same(first, [1.0, 2.0])
    assert first is not second
    first.append(3.0)
    assert frozen == (1.0, 2.0)
    assert second == [1.0, 2.0]


def test_embedding_dimensions() -> None:
    validator = compile_ok("embedding", {"dimensions": 3})
    assert validator.check([1, 2, 3]) == (1.0, 2.0, 3.0)
    rejects(validator, [1.0, 2.0], "dimensions")
    rejects(validator, [1.0, 2.0, 3.0, 4.0], "dimensions")


@pytest.mark.parametrize(
    "value",
    [[True, 1.0], [1.0, False], True, "1,2", None, 1.0, [1.0, "2"], [[1.0]], {"data": [1.0]}],
)
def test_embedding_rejects_non_vectors(value: Any) -> None:
    rejects(compile_ok("embedding"), value, "type")


def test_embedding_rejects_an_element_too_large_for_a_float() -> None:
    rejects(compile_ok("embedding"), [1, HUGE], "type")


@pytest.mark.parametrize("dims", [0, -1, 1.0, True, "3", None])
def test_embedding_bad_dimensions(dims: Any) -> None:
    bad_definition("embedding", {"dimensions": dims}, "dimensions", dims)


# -- tensor --------------------------------------------------------------------------------


def test_tensor_freezes_shape_and_data() -> None:
    frozen = compile_ok("tensor").check({"shape": [2, 2], "data": [1, 2, 3.5, 4]})
    assert frozen == {"shape": (2, 2), "data": (1.0, 2.0, 3.5, 4.0)}
    assert isinstance(frozen["shape"], tuple)
    assert all(type(x) is float for x in frozen["data"])


def test_tensor_does_not_keep_the_callers_lists() -> None:
    value = {"shape": [2], "data": [1.0, 2.0]}
    frozen = compile_ok("tensor").check(value)
    value["shape"].append(1)  # type: ignore[attr-defined]
    value["data"][0] = 9.0  # type: ignore[index]
    assert frozen == {"shape": (2,), "data": (1.0, 2.0)}


def test_tensor_thaw_gives_fresh_lists_each_time() -> None:
    validator = compile_ok("tensor")
    assert validator.thaw is not None
    frozen = validator.check({"shape": (3,), "data": (1, 2, 3)})
    first = validator.thaw(frozen)
    second = validator.thaw(frozen)
    assert first == {"shape": [3], "data": [1.0, 2.0, 3.0]}
    assert type(first["shape"]) is list
    assert type(first["data"]) is list
    assert first is not second
    assert first["data"] is not second["data"]
    assert first["shape"] is not second["shape"]
    first["data"][0] = 42.0
    first["shape"].append(1)
    assert frozen == {"shape": (3,), "data": (1.0, 2.0, 3.0)}
    assert second == {"shape": [3], "data": [1.0, 2.0, 3.0]}


@pytest.mark.parametrize(
    ("shape", "data"),
    [([], [5]), ([0], []), ([2, 0, 3], []), ([1, 1, 1], [1])],
)
def test_tensor_edge_shapes(shape: list[int], data: list[Any]) -> None:
    frozen = compile_ok("tensor").check({"shape": shape, "data": data})
    assert frozen["shape"] == tuple(shape)
    assert len(frozen["data"]) == len(data)


@pytest.mark.parametrize(
    "value",
    [
        [1, 2],
        None,
        {"shape": [2]},
        {"data": [1, 2]},
        {"shape": [2], "data": [1, 2], "dtype": "f32"},
        {"shape": 2, "data": [1, 2]},
        {"shape": [-2], "data": []},
        {"shape": [2.0], "data": [1, 2]},
        {"shape": [True], "data": [1]},
        {"shape": ["2"], "data": [1, 2]},
        {"shape": [2], "data": [1, True]},
        {"shape": [2], "data": "12"},
        {"shape": [1], "data": [[1]]},
    ],
)
def test_tensor_rejects_malformed_values(value: Any) -> None:
    rejects(compile_ok("tensor"), value, "type")


def test_tensor_data_size_must_match_shape() -> None:
    validator = compile_ok("tensor")
    rejects(validator, {"shape": [2, 3], "data": [1, 2, 3, 4, 5]}, "shape")
    rejects(validator, {"shape": [2], "data": [1, 2, 3]}, "shape")


def test_tensor_shape_constraint() -> None:
    validator = compile_ok("tensor", {"shape": [2, None]})
    assert validator.check({"shape": [2, 3], "data": [0] * 6})["shape"] == (2, 3)
    assert validator.check({"shape": [2, 1], "data": [0] * 2})["shape"] == (2, 1)
    rejects(validator, {"shape": [3, 2], "data": [0] * 6}, "shape")
    rejects(validator, {"shape": [2], "data": [0] * 2}, "shape")
    rejects(validator, {"shape": [2, 1, 1], "data": [0] * 2}, "shape")


@pytest.mark.parametrize(
    "shape",
    [[-1], ["2"], [2.0], [True], [[2]], "2x2", 4, None, {"rank": 2}],
)
def test_tensor_bad_shape_constraint(shape: Any) -> None:
    bad_definition("tensor", {"shape": shape}, "shape", shape)


def test_tensor_shape_constraint_tuple_is_stored_as_list() -> None:
    assert compile_ok("tensor", {"shape": (None, 4)}).constraints["shape"] == [None, 4]


# -- constraint sets and type names -------------------------------------------------------


@pytest.mark.parametrize(
    ("type_name", "constraints", "key"),
    [
        ("string", {"min": 1}, "min"),
        ("float", {"min_length": 1}, "min_length"),
        ("integer", {"choices": [1]}, "choices"),
        ("choice", {"choices": ["a"], "enum": ["a"]}, "enum"),
        ("module", {"pattern": "x"}, "pattern"),
        ("embedding", {"shape": [2]}, "shape"),
        ("tensor", {"dimensions": 2}, "dimensions"),
        ("float", {"maximum": 1}, "maximum"),
    ],
)
def test_unknown_constraint_key_for_the_type(
    type_name: str, constraints: dict[str, Any], key: str
) -> None:
    exc = bad_definition(type_name, constraints, "constraints", constraints, variable="temp")
    assert repr(key) in str(exc)
    assert type_name in str(exc)


def test_non_string_constraint_key_is_rejected() -> None:
    with pytest.raises(ValidationError) as info:
        compile_type("temp", "float", {1: 2})
    assert info.value.rule == "constraints"
    assert "temp" in str(info.value)


@pytest.mark.parametrize("constraints", [[("min", 1)], "min=1", 5, ("max",)])
def test_constraints_must_be_a_mapping(constraints: Any) -> None:
    exc = bad_definition("float", constraints, "constraints", constraints, variable="temp")
    assert "mapping" in str(exc)


def test_constraints_may_be_none_or_empty() -> None:
    assert compile_ok("float", None).constraints == {}
    assert compile_ok("float", {}).constraints == {}


@pytest.mark.parametrize("name", ["decimal", "", "Float", "FLOAT", "int", "str", "list"])
def test_unknown_type_name(name: str) -> None:
    exc = bad_definition(name, None, "type", name, variable="temp")
    assert "unknown type" in str(exc)


@pytest.mark.parametrize("name", [None, 1, float, ["float"], b"float", True])
def test_non_string_type_name(name: Any) -> None:
    with pytest.raises(ValidationError) as info:
        compile_type("temp", name, None)
    exc = info.value
    assert exc.rule == "type"
    assert exc.variable == "temp"
    assert "temp" in str(exc)
    assert describe_value(name) in str(exc)


# -- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["x", "temperature", "max_tokens", "a" * 256, "ünï"])
def test_check_name_accepts_names(name: str) -> None:
    assert check_name(name) is name


@pytest.mark.parametrize("name", ["", "a" * 257])
def test_check_name_rejects_bad_strings(name: str) -> None:
    with pytest.raises(ValidationError) as info:
        check_name(name)
    exc = info.value
    assert (exc.variable, exc.rule, exc.value) == (name, "name", name)
    assert "'name'" in str(exc)
    assert describe_value(name) in str(exc)
    assert "256" in str(exc)


@pytest.mark.parametrize("name", [None, 1, b"x", ["x"], True])
def test_check_name_rejects_non_strings(name: Any) -> None:
    with pytest.raises(ValidationError) as info:
        check_name(name)
    exc = info.value
    assert exc.rule == "name"
    assert exc.variable == describe_value(name)
    assert repr(name) in str(exc)


# -- plain data ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [None, True, 0, -1, 1.5, "s", b"b", HUGE], ids=lambda v: type(v).__name__
)
def test_plain_copy_scalars(value: Any) -> None:
    assert plain_copy(value) is value


def test_plain_copy_is_deep() -> None:
    original: dict[str, Any] = {"a": [1, {"b": [2, 3]}], "c": {"d": {"e": "f"}}}
    copied = plain_copy(original)
    assert copied == original
    assert copied is not original
    assert copied["a"] is not original["a"]
    assert copied["a"][1] is not original["a"][1]
    assert copied["c"]["d"] is not original["c"]["d"]
    copied["a"][1]["b"].append(4)
    copied["c"]["d"]["e"] = "changed"
    assert original == {"a": [1, {"b": [2, 3]}], "c": {"d": {"e": "f"}}}


def test_plain_copy_turns_tuples_into_lists() -> None:
    copied = plain_copy({"t": (1, (2, 3)), "l": [(4,)]})
    assert copied == {"t": [1, [2, 3]], "l": [[4]]}
    assert type(copied["t"]) is list
    assert type(copied["t"][1]) is list
    assert type(copied["l"][0]) is list


def test_plain_copy_turns_mappings_into_dicts() -> None:
    class Box(Mapping[str, Any]):
        def __getitem__(self, key: str) -> Any:
            if key != "k":
                raise KeyError(key)
            return [1]

        def __iter__(self) -> Any:
            return iter(["k"])

        def __len__(self) -> int:
            return 1

    copied = plain_copy(Box())
    assert copied == {"k": [1]}
    assert type(copied) is dict


@pytest.mark.parametrize(
    "value",
    [{1: "a"}, {"ok": {None: 1}}, {("a",): 1}, [{b"k": 1}]],
    ids=["int-key", "nested-none-key", "tuple-key", "bytes-key-in-list"],
)
def test_plain_copy_rejects_non_string_keys(value: Any) -> None:
    with pytest.raises(TypeError, match="not a string"):
        plain_copy(value)


@pytest.mark.parametrize(
    "value",
    [{1, 2}, frozenset(), object(), [1, {2}], {"f": lambda: None}, 1j, bytearray(b"x")],
    ids=["set", "frozenset", "object", "set-in-list", "function", "complex", "bytearray"],
)
def test_plain_copy_rejects_non_plain_data(value: Any) -> None:
    with pytest.raises(TypeError, match="not plain data"):
        plain_copy(value)


def _nested_lists(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_plain_copy_accepts_moderate_nesting() -> None:
    nested = _nested_lists(10)
    assert plain_copy(nested) == nested


def test_plain_copy_rejects_too_deep_nesting() -> None:
    with pytest.raises(ValueError, match="deeper"):
        plain_copy(_nested_lists(1000))
    nested_dicts: dict[str, Any] = {}
    for _ in range(1000):
        nested_dicts = {"n": nested_dicts}
    with pytest.raises(ValueError, match="deeper"):
        plain_copy(nested_dicts)


def test_plain_copy_rejects_a_cycle_without_recursion_error() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(ValueError, match="deeper"):
        plain_copy(cycle)


def test_check_metadata_none_is_empty() -> None:
    assert check_metadata("temp", None) == {}


def test_check_metadata_returns_a_deep_copy() -> None:
    metadata: dict[str, Any] = {"owner": "me", "tags": ["a", ("b",)], "nested": {"k": [1]}}
    copied = check_metadata("temp", metadata)
    assert copied == {"owner": "me", "tags": ["a", ["b"]], "nested": {"k": [1]}}
    copied["nested"]["k"].append(2)
    copied["tags"].clear()
    assert metadata == {"owner": "me", "tags": ["a", ("b",)], "nested": {"k": [1]}}


@pytest.mark.parametrize("metadata", [["owner"], "owner=me", 5, ("a", 1)])
def test_check_metadata_requires_a_mapping(metadata: Any) -> None:
    exc = assert_invalid(
        lambda: check_metadata("temp", metadata),
        variable="temp",
        rule="metadata",
        value=metadata,
    )
    assert "mapping" in str(exc)


@pytest.mark.parametrize(
    "metadata",
    [{"s": {1, 2}}, {1: "int key"}, {"o": object()}, {"deep": _nested_lists(100)}],
    ids=["set", "int-key", "object", "too-deep"],
)
def test_check_metadata_rejects_non_plain_data(metadata: Any) -> None:
    with pytest.raises(ValidationError) as info:
        check_metadata("temp", metadata)
    exc = info.value
    assert exc.variable == "temp"
    assert exc.rule == "metadata"
    assert "temp" in str(exc)
    assert "metadata" in str(exc)
    # The offending value is not plain data, so .value carries its repr (wire-safe).
    assert isinstance(exc.value, str)


def test_very_deep_values_give_a_validation_error_not_recursion_error() -> None:
    # Deeper than the interpreter's recursion limit: the message's repr must not blow up.
    deep = _nested_lists(5000)
    with pytest.raises(ValidationError) as info:
        check_metadata("temp", {"deep": deep})
    assert info.value.rule == "metadata"
    with pytest.raises(ValidationError) as info:
        compile_ok("embedding").check(deep)
    assert info.value.rule == "type"


def test_describe_value_cuts_long_reprs() -> None:
    assert describe_value("abc") == "'abc'"
    long = describe_value("x" * 1000)
    assert len(long) == 200
    assert long.endswith("...")


def test_long_values_are_cut_in_messages_but_kept_as_values() -> None:
    value = "x" * 1000
    validator = compile_ok("string", {"max_length": 5})
    with pytest.raises(ValidationError) as info:
        validator.check(value)
    assert info.value.value == value
    assert len(str(info.value)) < 400
    assert describe_value(value) in str(info.value)


def test_non_plain_offending_value_is_carried_as_its_repr() -> None:
    value = {1, 2}
    with pytest.raises(ValidationError) as info:
        compile_ok("float").check(value)
    assert info.value.value == repr(value)
    assert info.value.rule == "type"


@pytest.mark.parametrize("bad", ["\ud800", "ok\udfffok"], ids=["lone-high", "lone-low"])
def test_strings_that_cannot_cross_the_wire_are_rejected(bad: str) -> None:
    for type_name in ("string", "module"):
        with pytest.raises(ValidationError, match="rule 'type'") as excinfo:
            compile_ok(type_name).check(bad)
        # .value crosses the wire, so it is the repr, which is valid UTF-8.
        assert excinfo.value.value == describe_value(bad)
    with pytest.raises(ValidationError, match="rule 'name'"):
        check_name(bad)
    with pytest.raises(ValueError, match="UTF-8"):
        plain_copy({"k": bad})
    with pytest.raises(ValueError, match="UTF-8"):
        plain_copy({bad: 1})


@pytest.mark.parametrize("bad", [True, "1", -1, 2**63, 1.0], ids=str)
def test_expected_version_must_be_a_version_number(bad: Any) -> None:
    with pytest.raises(ValidationError, match="rule 'expected_version'") as excinfo:
        check_expected_version("x", bad)
    assert excinfo.value.variable == "x"
    assert check_expected_version("x", None) is None
    assert check_expected_version("x", 0) == 0
