"""The eight variable types, their constraints, and plain-data checks.

One place for every rule: the session actor calls :func:`compile_type` once when a
variable is registered (or imported) and keeps the returned :class:`Validator`, so a
write validates with a pre-built closure instead of re-reading the constraints.

Every failure is a :class:`~dspex_actors.errors.ValidationError` whose message names
the variable, the rule and the offending value (``rule`` is ``"type"`` for a wrong
type, otherwise the constraint key) — except a size: a Validator holds the value
limit it was compiled with (:mod:`dspex_actors.limits`), and a value that would
encode larger raises :class:`~dspex_actors.errors.LimitExceeded` (``limit``
``"max_value_bytes"``), as does metadata over ``max_metadata_bytes``. Scalars are
never measured; strings, embeddings and tensors only when their length could pass
the limit, so the hot path stays a type check.

A string's ``pattern`` is an RE2 regular expression (google-re2), matched with
``search`` semantics (anywhere in the value; anchor with ``^...$``). RE2 decides in
time linear in the value where Python's ``re`` can backtrack for seconds inside the
session actor; the price is no backreferences or lookaround, refused at registration.

A ``choice`` compares by value within a kind: numbers equal numbers by value (``1``
matches a listed ``1.0`` and ``1.0`` a listed ``1``, so a JavaScript client, whose
msgpack encoder sends a whole float as an integer, can set a float choice), but a
boolean never equals a number (``True`` does not match ``1``) and strings only equal
strings. The value stored is the listed choice (``1`` on ``[0.5, 1.0, 2.0]`` stores
``1.0``); when two listed choices are equal by value, the first one wins. A string's
``enum`` needs no such rule: only strings reach it.

``boolean`` stays strict: only ``True``/``False``; ``"true"``, ``1`` or ``1.0`` are
refused rather than converted, since any conversion rule would guess.

Stored values are frozen (embeddings as tuples, tensors as tuples inside a dict that
is never handed out) so readers may share them; :attr:`Validator.thaw` turns one back
into fresh lists for the caller, and is ``None`` for scalar types, which need no copy.

**Length.** Past 600 lines on purpose: the design keeps every type's rules in one
module that every writer uses (the session actor, the Redis engine, the bridge's
client checks), and each type's value check sits beside the check of its constraint
definitions, so a rule and what it accepts are read together.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import msgpack
import re2

from dspex_actors.errors import LimitExceeded, ValidationError
from dspex_actors.limits import (
    DEFAULT_LIMITS,
    Limits,
    check_metadata_size,
    encoded_size,
    float_array_size,
    str_size,
    too_large,
)
from dspex_actors.text import describe_value, utf8_encodable

__all__ = [
    "MAX_VERSION",
    "TYPE_NAMES",
    "Validator",
    "all_of_type",
    "check_description",
    "check_expected_version",
    "check_name",
    "check_names",
    "compile_type",
    "plain_copy",
    "sized_metadata",
    "wire_safe",
]

TYPE_NAMES = ("float", "integer", "string", "boolean", "choice", "module", "embedding", "tensor")

_MISSING: Any = object()
_MAX_DEPTH = 32
_MAX_NAME = 256
MAX_VERSION = 2**63 - 1
"""The largest version number: versions travel as int64."""
_INT_LOW = -(2**63)
_INT_HIGH = 2**64 - 1
"""Integers must fit msgpack (int64 or uint64), so any session can cross the bridge."""


def _fail(variable: str, rule: str, value: Any, what: str) -> ValidationError:
    return ValidationError(
        f"variable {variable!r}: {what} (rule {rule!r}, value {describe_value(value)})",
        variable=variable,
        rule=rule,
        value=wire_safe(value),
    )


def wire_safe(value: Any) -> Any:
    """The offending value if it is plain data, else its repr (it must cross the wire)."""
    try:
        return plain_copy(value)
    except (TypeError, ValueError, RecursionError):
        return describe_value(value)


Convert = Callable[[Any], Any]
Check = Callable[[str, Any], Any]
"""A type's value check, shared by every variable with the same type and constraints."""


class Validator(NamedTuple):
    """A compiled type: ``check(variable, value)`` returns the frozen value or raises.

    One Validator serves every variable of the same definition (type and
    constraints), so importing 10,000 alike variables builds one, not 10,000; the
    variable's name is passed to ``check`` for its error messages. ``constraints``
    is shared too: never mutate it (hand out ``plain_copy`` of it).
    """

    type: str
    constraints: dict[str, Any]
    check: Check
    thaw: Convert | None


def check_name(name: Any) -> str:
    """A variable name must be a non-empty string of at most 256 characters."""
    if not isinstance(name, str) or not name or len(name) > _MAX_NAME or not utf8_encodable(name):
        raise ValidationError(
            f"variable name must be a non-empty UTF-8 string of at most {_MAX_NAME} characters "
            f"(rule 'name', value {describe_value(name)})",
            variable=name if isinstance(name, str) else describe_value(name),
            rule="name",
            value=wire_safe(name),
        )
    return name


def all_of_type(items: Iterable[Any], kind: type) -> bool:
    """Whether every item is exactly of ``kind`` (no subclass, so no bool for int).

    Runs in C (``map(type, ...)`` into a set), half again as fast as ``all()`` over a
    generator though it always scans every item: bulk imports call it on every column.
    """
    return set(map(type, items)) <= {kind}


def check_names(names: list[Any]) -> None:
    """:func:`check_name` for many names: one C-speed pass per rule while all are fine."""
    if (
        all_of_type(names, str)
        and (not names or (min(map(len, names)) > 0 and max(map(len, names)) <= _MAX_NAME))
        and ("".join(names).isascii() or all(map(utf8_encodable, names)))
    ):
        return
    for name in names:
        check_name(name)


def check_expected_version(variable: str, expected: Any) -> int | None:
    """``expected_version`` is None or a version number (a non-negative int64)."""
    if expected is not None and (type(expected) is not int or not 0 <= expected <= MAX_VERSION):
        raise _fail(
            variable, "expected_version", expected, "expected_version must be a version number"
        )
    return expected


def check_description(variable: str, description: Any) -> str | None:
    """A variable's description is None or a string."""
    if description is not None and (
        not isinstance(description, str) or not utf8_encodable(description)
    ):
        raise _fail(variable, "description", description, "description must be a UTF-8 string")
    return description


def plain_copy(data: Any, _depth: int = 0) -> Any:
    """A deep copy of msgpack-encodable plain data; ``TypeError`` for anything else.

    Accepts None, bool, int, float, str, bytes, lists/tuples (copied to lists) and
    dicts with string keys. Used for metadata and to hand out copies of stored data.
    """
    if isinstance(data, str):
        if not utf8_encodable(data):
            raise ValueError(f"string {describe_value(data)} is not valid UTF-8")
        return data
    if data is None or isinstance(data, bool | int | float | bytes):
        return data
    if _depth >= _MAX_DEPTH:
        raise ValueError(f"nested deeper than {_MAX_DEPTH} levels")
    if isinstance(data, list | tuple):
        return [plain_copy(item, _depth + 1) for item in data]
    if isinstance(data, Mapping):
        out = {}
        for key, item in data.items():
            if not isinstance(key, str):
                raise TypeError(f"mapping key {describe_value(key)} is not a string")
            if not utf8_encodable(key):
                raise ValueError(f"mapping key {describe_value(key)} is not valid UTF-8")
            out[key] = plain_copy(item, _depth + 1)
        return out
    raise TypeError(f"{type(data).__name__} is not plain data")


def check_metadata(
    variable: str, metadata: Any, limits: Limits = DEFAULT_LIMITS
) -> dict[str, Any]:
    """A copy of ``metadata`` (a mapping of plain data) or a ValidationError.

    ``LimitExceeded`` (limit ``max_metadata_bytes``) if it encodes to more than the
    limit: measured exactly by encoding the copy (in C, cheaper than a Python walk
    for the small maps metadata usually is). An integer msgpack cannot carry (over
    64 bits) is refused here too, as the bridge could not send it.
    """
    return sized_metadata(variable, metadata, limits)[0]


def sized_metadata(
    variable: str, metadata: Any, limits: Limits = DEFAULT_LIMITS
) -> tuple[dict[str, Any], int]:
    """:func:`check_metadata`'s copy and its encoded size (1, an empty map, for none),
    for a caller adding up a whole message without encoding the metadata again."""
    if metadata is None or (type(metadata) is dict and not metadata):
        return {}, 1
    if not isinstance(metadata, Mapping):
        raise _fail(variable, "metadata", metadata, "metadata must be a mapping")
    try:
        copied: dict[str, Any] = plain_copy(metadata)
        size = check_metadata_size(variable, copied, limits)  # LimitExceeded passes through
    except (TypeError, ValueError, OverflowError) as exc:
        raise _fail(variable, "metadata", metadata, f"metadata is not plain data: {exc}") from None
    return copied, size


# --- value checks ---------------------------------------------------------------
#
# Each builder gets the definition's constraints and ``max_bytes``, the value limit
# baked into its closure. A scalar (float, integer, boolean, a choice of numbers)
# encodes to at most 9 bytes and is never measured; a string, module name, embedding
# or tensor is measured only when its length alone could pass the limit.


def _too_large(variable: str, size: int, max_bytes: int) -> LimitExceeded:
    return too_large(variable, "value", size, "max_value_bytes", max_bytes)


def _check_str_size(variable: str, text: str, max_bytes: int) -> None:
    size = str_size(text)
    if size > max_bytes:
        raise _too_large(variable, size, max_bytes)


def _unmeasured_chars(max_bytes: int) -> int:
    """The longest string that fits whatever its characters: 4 UTF-8 bytes each,
    plus the largest header."""
    return (max_bytes - 5) // 4


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _to_float(variable: str, value: Any) -> float:
    if type(value) is float:
        return value
    if _is_number(value):
        if type(value) is int and not _INT_LOW <= value <= _INT_HIGH:
            raise _fail(
                variable, "type", value, "integer outside the 64-bit range msgpack can carry"
            )
        try:
            return float(value)
        except OverflowError:
            raise _fail(variable, "type", value, "integer too large for a float") from None
    raise _fail(variable, "type", value, f"expected a float, got {type(value).__name__}")


def _bounds(constraints: dict[str, Any]) -> Callable[[str, float], None] | None:
    """A closure checking min/max (nan fails any bound), or None when unbounded."""
    lo = constraints.get("min")
    hi = constraints.get("max")
    if lo is None and hi is None:
        return None
    low = -math.inf if lo is None else lo
    high = math.inf if hi is None else hi

    def check(variable: str, value: float) -> None:
        if low <= value <= high:
            return
        if isinstance(value, float) and math.isnan(value):
            raise _fail(
                variable, "min" if lo is not None else "max", value, "nan is outside any bound"
            )
        if value < low:
            raise _fail(variable, "min", value, f"below the minimum {lo!r}")
        raise _fail(variable, "max", value, f"above the maximum {hi!r}")

    return check


def _float_check(constraints: dict[str, Any], max_bytes: int) -> Check:
    bounds = _bounds(constraints)

    def check(variable: str, value: Any) -> float:
        number = value if type(value) is float else _to_float(variable, value)
        if bounds is not None:
            bounds(variable, number)
        return number

    return check


def _integer_check(constraints: dict[str, Any], max_bytes: int) -> Check:
    bounds = _bounds(constraints)

    def check(variable: str, value: Any) -> int:
        if type(value) is int:
            number = value
        elif (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and math.isfinite(value) and value.is_integer()
        ):
            number = int(value)
        else:
            what = (
                f"{value!r} is not integral"
                if _is_number(value)
                else f"expected an integer, got {type(value).__name__}"
            )
            raise _fail(variable, "type", value, what)
        if not _INT_LOW <= number <= _INT_HIGH:
            raise _fail(variable, "type", value, "outside the 64-bit range msgpack can carry")
        if bounds is not None:
            bounds(variable, number)
        return number

    return check


def _string_check(constraints: dict[str, Any], max_bytes: int) -> Check:
    min_len = constraints.get("min_length")
    max_len = constraints.get("max_length")
    pattern = _compile_pattern(constraints["pattern"]) if "pattern" in constraints else None
    enum = frozenset(constraints["enum"]) if "enum" in constraints else None
    unmeasured = _unmeasured_chars(max_bytes)

    def check(variable: str, value: Any) -> str:
        if not isinstance(value, str):
            raise _fail(variable, "type", value, f"expected a string, got {type(value).__name__}")
        if len(value) > unmeasured:
            _check_str_size(variable, value, max_bytes)
        if not utf8_encodable(value):
            raise _fail(variable, "type", value, "not valid UTF-8 (a lone surrogate?)")
        if min_len is not None and len(value) < min_len:
            raise _fail(variable, "min_length", value, f"shorter than {min_len} characters")
        if max_len is not None and len(value) > max_len:
            raise _fail(variable, "max_length", value, f"longer than {max_len} characters")
        if pattern is not None and pattern.search(value) is None:
            # RE2: linear in the value, so no pattern can stall the session's actor.
            raise _fail(variable, "pattern", value, f"does not match {pattern.pattern!r}")
        if enum is not None and value not in enum:
            raise _fail(variable, "enum", value, f"not one of {constraints['enum']!r}")
        return str(value)

    return check


def _boolean_check(constraints: dict[str, Any], max_bytes: int) -> Check:
    def check(variable: str, value: Any) -> bool:
        if value is True or value is False:
            return bool(value)
        raise _fail(
            variable,
            "type",
            value,
            "expected a boolean (true or false; strings and numbers are not converted), "
            f"got {type(value).__name__}",
        )

    return check


_CHOICE_KINDS: dict[type, str] = {bool: "bool", int: "number", float: "number", str: "str"}
"""A value's kind for choice membership, by exact type: within a kind values compare
with ``==`` (``1 == 1.0``); across kinds never (``True == 1`` would otherwise hold)."""


def _choice_kind(value: Any) -> str | None:
    """The kind of a choice or value (subclasses allowed, bool tested before int)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "str" if isinstance(value, str) else None


def _choice_check(constraints: dict[str, Any], max_bytes: int) -> Check:
    choices = constraints["choices"]
    # Built once per definition: a write is one dict lookup, whatever the choice count.
    # Python's int/float equality and hashing are exact, so (kind, value) keys match
    # 1 and 1.0 but not 2**53 + 1 and 2.0**53. The first listed of equal choices wins.
    # A nan choice is left out: nan equals nothing, and a dict would still match the
    # very same nan object by identity. A string choice too large to store (possible
    # only when max_value_bytes is below max_metadata_bytes) is left out as well and
    # refused with LimitExceeded, on the failure path only.
    listed: dict[tuple[str | None, Any], Any] = {}
    too_big: dict[tuple[str | None, Any], int] = {}
    for choice in choices:
        key = (_choice_kind(choice), choice)
        if isinstance(choice, str) and str_size(choice) > max_bytes:
            too_big.setdefault(key, str_size(choice))
        elif not (isinstance(choice, float) and math.isnan(choice)):
            listed.setdefault(key, choice)

    def check(variable: str, value: Any) -> Any:
        kind = _CHOICE_KINDS.get(type(value)) or _choice_kind(value)  # exact type first
        if type(value) is int and not _INT_LOW <= value <= _INT_HIGH:
            raise _fail(
                variable, "type", value, "integer outside the 64-bit range msgpack can carry"
            )
        if kind is not None:
            found = listed.get((kind, value), _MISSING)
            if found is not _MISSING:
                return found
            if (kind, value) in too_big:
                raise _too_large(variable, too_big[kind, value], max_bytes)
        raise _fail(variable, "choices", value, f"not one of {choices!r}")

    return check


def _module_check(constraints: dict[str, Any], max_bytes: int) -> Check:
    allowed = constraints.get("allowed_modules")
    allowed_set = frozenset(allowed) if allowed is not None else None
    unmeasured = _unmeasured_chars(max_bytes)

    def check(variable: str, value: Any) -> str:
        if isinstance(value, str) and len(value) > unmeasured:
            _check_str_size(variable, value, max_bytes)
        if not isinstance(value, str) or not value or not utf8_encodable(value):
            raise _fail(variable, "type", value, "expected a non-empty module name string")
        if allowed_set is not None and value not in allowed_set:
            raise _fail(variable, "allowed_modules", value, f"not one of {allowed!r}")
        return str(value)

    return check


def _floats(variable: str, rule: str, items: Any, value: Any) -> tuple[float, ...]:
    if not isinstance(items, list | tuple):
        raise _fail(variable, rule, value, "expected a list of numbers")
    out = []
    for item in items:
        if type(item) is float:
            out.append(item)
        elif _is_number(item):
            if type(item) is int and not _INT_LOW <= item <= _INT_HIGH:
                raise _fail(variable, rule, value, "an element is outside the 64-bit range")
            try:
                out.append(float(item))
            except OverflowError:
                raise _fail(variable, rule, value, "an element is too large for a float") from None
        else:
            raise _fail(variable, rule, value, f"element {describe_value(item)} is not a number")
    return tuple(out)


def _embedding_check(constraints: dict[str, Any], max_bytes: int) -> Check:
    dims = constraints.get("dimensions")
    unmeasured = (max_bytes - 5) // 9  # every element is stored as a 9-byte float

    def check(variable: str, value: Any) -> tuple[float, ...]:
        if isinstance(value, list | tuple) and len(value) > unmeasured:
            size = float_array_size(len(value))  # exact, and known before converting
            if size > max_bytes:
                raise _too_large(variable, size, max_bytes)
        vector = _floats(variable, "type", value, value)
        if dims is not None and len(vector) != dims:
            raise _fail(variable, "dimensions", value, f"has {len(vector)} dimensions, not {dims}")
        return vector

    return check


def _tensor_size(shape: list[int] | tuple[int, ...], count: int) -> int:
    """The exact encoded size of a stored tensor: its map with the shape and an empty
    data array, encoded, plus what ``count`` floats add to that array."""
    return encoded_size({"shape": shape, "data": ()}) - 1 + float_array_size(count)


_TENSOR_OVERHEAD = 1 + 6 + 5 + 5 + 5
"""A stored tensor's bytes besides its numbers, at most: map header, the keys
"shape" and "data", and two array headers."""


def _tensor_check(constraints: dict[str, Any], max_bytes: int) -> Check:
    want_shape = constraints.get("shape")

    def check(variable: str, value: Any) -> dict[str, tuple[Any, ...]]:
        if not isinstance(value, Mapping) or set(value) != {"shape", "data"}:
            raise _fail(
                variable, "type", value, "expected a mapping with exactly 'shape' and 'data'"
            )
        shape = value["shape"]
        if not isinstance(shape, list | tuple) or not all(
            type(d) is int and d >= 0 for d in shape
        ):
            raise _fail(variable, "type", value, "shape must be a list of non-negative integers")
        raw = value["data"]
        if (
            isinstance(raw, list | tuple)
            and 9 * (len(shape) + len(raw)) + _TENSOR_OVERHEAD > max_bytes
        ):
            size = _tensor_size(shape, len(raw))
            if size > max_bytes:
                raise _too_large(variable, size, max_bytes)
        data = _floats(variable, "type", raw, value)
        if len(data) != math.prod(shape):
            raise _fail(
                variable,
                "shape",
                value,
                f"data has {len(data)} elements but shape {list(shape)} needs {math.prod(shape)}",
            )
        if want_shape is not None and (
            len(shape) != len(want_shape)
            or any(w is not None and w != d for w, d in zip(want_shape, shape, strict=True))
        ):
            raise _fail(variable, "shape", value, f"shape {list(shape)} is not {want_shape!r}")
        return {"shape": tuple(shape), "data": data}

    return check


def _thaw_vector(value: tuple[float, ...]) -> list[float]:
    return list(value)


def _thaw_tensor(value: dict[str, tuple[Any, ...]]) -> dict[str, list[Any]]:
    return {"shape": list(value["shape"]), "data": list(value["data"])}


# --- constraint definitions -----------------------------------------------------


def _bad_constraint(variable: str, rule: str, value: Any, what: str) -> ValidationError:
    return _fail(variable, rule, value, f"invalid constraint {rule!r}: {what}")


def _number_bounds(variable: str, c: dict[str, Any], integral: bool) -> None:
    for key in ("min", "max"):
        if key not in c:
            continue
        bound = c[key]
        if integral and type(bound) is not int:
            raise _bad_constraint(variable, key, bound, "must be an integer")
        if not integral:
            if not _is_number(bound) or (isinstance(bound, float) and math.isnan(bound)):
                raise _bad_constraint(variable, key, bound, "must be a number (not nan)")
            try:
                c[key] = float(bound)
            except OverflowError:
                raise _bad_constraint(variable, key, bound, "too large for a float") from None
    if "min" in c and "max" in c and c["min"] > c["max"]:
        raise _bad_constraint(variable, "min", c["min"], f"greater than max {c['max']!r}")


def _non_negative_int(variable: str, c: dict[str, Any], key: str, positive: bool = False) -> None:
    if key in c:
        v = c[key]
        if type(v) is not int or v < (1 if positive else 0):
            kind = "a positive" if positive else "a non-negative"
            raise _bad_constraint(variable, key, v, f"must be {kind} integer")


def _non_empty_list(
    variable: str, c: dict[str, Any], key: str, item_types: tuple[type, ...]
) -> None:
    if key in c:
        v = c[key]
        if (
            not isinstance(v, list | tuple)
            or not v
            or not all(isinstance(i, item_types) for i in v)
        ):
            names = "/".join(t.__name__ for t in item_types)
            raise _bad_constraint(variable, key, v, f"must be a non-empty list of {names}")
        c[key] = list(v)


def _define_float(variable: str, c: dict[str, Any]) -> None:
    _number_bounds(variable, c, integral=False)


def _define_integer(variable: str, c: dict[str, Any]) -> None:
    _number_bounds(variable, c, integral=True)


def _define_string(variable: str, c: dict[str, Any]) -> None:
    _non_negative_int(variable, c, "min_length")
    _non_negative_int(variable, c, "max_length")
    if "min_length" in c and "max_length" in c and c["min_length"] > c["max_length"]:
        raise _bad_constraint(
            variable, "min_length", c["min_length"], f"greater than max_length {c['max_length']}"
        )
    if "pattern" in c:
        pattern = c["pattern"]
        if not isinstance(pattern, str):
            raise _bad_constraint(variable, "pattern", pattern, "must be a string")
        try:
            _compile_pattern(pattern)
        except (re2.error, ValueError) as exc:
            raise _bad_constraint(
                variable,
                "pattern",
                pattern,
                f"RE2 regex syntax is required ({_re2_reason(exc)}): patterns are matched "
                "by RE2, in time linear in the value, so no pattern can stall the session; "
                "RE2 has no backreferences, lookaround or possessive repeats "
                "(https://github.com/google/re2/wiki/Syntax)",
            ) from None
    _non_empty_list(variable, c, "enum", (str,))


PATTERN_MAX_MEM = 8 << 20
"""RE2's memory budget for one compiled pattern: a larger program is refused at
registration ("pattern too large"); at match time a fuller DFA cache makes RE2 fall
back to its NFA, slower but still linear, never more memory."""


def _pattern_options() -> Any:
    options = re2.Options()
    options.max_mem = PATTERN_MAX_MEM
    options.log_errors = False  # a refused pattern is the caller's error, not a log line
    options.never_capture = True  # only whether it matches is asked: no submatches
    return options


_PATTERN_OPTIONS = _pattern_options()


def _compile_pattern(pattern: str) -> Any:
    """The RE2 regexp for a ``pattern`` constraint (``re2.error`` if RE2 refuses it).

    RE2, not ``re``: Python's backtracking matcher takes exponential time on patterns
    such as ``^(a+)+$``, inside the session actor. RE2 has no backreferences or
    lookaround, and its ``$`` and ``\\d`` are stricter than ``re``'s (end of text
    only; ASCII digits only); ``search`` keeps the ``re.search`` semantics (a match
    anywhere; anchor with ``^...$``).
    """
    return re2.compile(pattern, _PATTERN_OPTIONS)


def _re2_reason(exc: Exception) -> str:
    """RE2's own words for a refused pattern (its error carries them as bytes)."""
    if not isinstance(exc, re2.error) or not exc.args:
        return str(exc)  # e.g. a lone surrogate: the pattern is not UTF-8
    reason = exc.args[0]
    if isinstance(reason, bytes):
        reason = reason.decode("utf-8", "replace")
    if reason == "pattern too large - compile failed":
        reason = f"it needs more than {PATTERN_MAX_MEM >> 20} MiB compiled"
    return str(reason)


def _define_choice(variable: str, c: dict[str, Any]) -> None:
    if "choices" not in c:
        raise _bad_constraint(variable, "choices", None, "a choice variable needs 'choices'")
    _non_empty_list(variable, c, "choices", (str, int, float, bool))


def _define_module(variable: str, c: dict[str, Any]) -> None:
    _non_empty_list(variable, c, "allowed_modules", (str,))


def _define_embedding(variable: str, c: dict[str, Any]) -> None:
    _non_negative_int(variable, c, "dimensions", positive=True)


def _define_tensor(variable: str, c: dict[str, Any]) -> None:
    if "shape" in c:
        shape = c["shape"]
        if not isinstance(shape, list | tuple) or not all(
            d is None or (type(d) is int and d >= 0) for d in shape
        ):
            raise _bad_constraint(
                variable, "shape", shape, "must be a list of non-negative integers or None"
            )
        c["shape"] = list(shape)


_Define = Callable[[str, dict[str, Any]], None]
_Build = Callable[[dict[str, Any], int], Check]
_SCALAR_TYPES = frozenset({"float", "integer", "boolean"})
"""Types whose values are never measured: their Validators ignore the value limit."""

_TYPES: dict[str, tuple[frozenset[str], _Define | None, _Build, Convert | None]] = {
    "float": (frozenset({"min", "max"}), _define_float, _float_check, None),
    "integer": (frozenset({"min", "max"}), _define_integer, _integer_check, None),
    "string": (
        frozenset({"min_length", "max_length", "pattern", "enum"}),
        _define_string,
        _string_check,
        None,
    ),
    "boolean": (frozenset(), None, _boolean_check, None),
    "choice": (frozenset({"choices"}), _define_choice, _choice_check, None),
    "module": (frozenset({"allowed_modules"}), _define_module, _module_check, None),
    "embedding": (frozenset({"dimensions"}), _define_embedding, _embedding_check, _thaw_vector),
    "tensor": (frozenset({"shape"}), _define_tensor, _tensor_check, _thaw_tensor),
}


_CacheKey = tuple[str, bytes, int]
_COMPILED: dict[_CacheKey, Validator] = {}
_COMPILED_MAX = 4096


def _encoded_constraints(type_name: Any, constraints: Any) -> bytes | None:
    """The constraints' msgpack encoding, the definition's identity, or None when
    they are not plain data (a repr could make two different objects look alike)."""
    if type(type_name) is not str or not (constraints is None or type(constraints) is dict):
        return None
    try:
        packed: bytes = msgpack.packb(constraints, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        return None
    return packed


def compile_type(
    variable: str, type_name: Any, constraints: Any, limits: Limits = DEFAULT_LIMITS
) -> Validator:
    """Check a type name and its constraints once; return the variable's Validator.

    Raises ``ValidationError`` for an unknown type, a constraint key that does not
    belong to the type, or a constraint that makes no sense (min > max, a pattern
    RE2 refuses...), and ``LimitExceeded`` (limit ``max_metadata_bytes``, the bridge's
    limit for constraints) for constraints that encode larger than that.

    The Validator holds ``limits.max_value_bytes``: its ``check`` raises
    ``LimitExceeded`` (limit ``max_value_bytes``) for a value that would encode
    larger, so every write through it is bounded alike on every backend. A
    definition seen before (same type, same constraints, same value limit) returns
    the same Validator, so importing thousands of alike variables costs one compile.
    """
    packed = _encoded_constraints(type_name, constraints)
    if packed is not None and len(packed) > limits.max_metadata_bytes:
        raise _constraints_too_large(variable, len(packed), limits)
    key: _CacheKey | None = None
    if packed is not None:  # so type_name is a str
        value_limit = 0 if type_name in _SCALAR_TYPES else limits.max_value_bytes
        key = (type_name, packed, value_limit)
    validator = _COMPILED.get(key) if key is not None else None
    if validator is None:
        validator = _compile(variable, type_name, constraints, limits.max_value_bytes)
        if key is not None:
            if len(_COMPILED) >= _COMPILED_MAX:
                _COMPILED.clear()
            _COMPILED[key] = validator
        else:  # given as a non-dict mapping, or holding what msgpack cannot carry
            try:
                size = encoded_size(validator.constraints)
            except (TypeError, ValueError, OverflowError) as exc:
                raise _bad_constraint(
                    variable, "constraints", wire_safe(validator.constraints), str(exc)
                ) from None
            if size > limits.max_metadata_bytes:
                raise _constraints_too_large(variable, size, limits)
    return validator


def _constraints_too_large(variable: str, size: int, limits: Limits) -> LimitExceeded:
    return too_large(
        variable, "constraints", size, "max_metadata_bytes", limits.max_metadata_bytes
    )


def _compile(variable: str, type_name: Any, constraints: Any, max_bytes: int) -> Validator:
    spec = _TYPES.get(type_name) if isinstance(type_name, str) else None
    if spec is None:
        raise _fail(
            variable, "type", type_name, f"unknown type; known types: {', '.join(TYPE_NAMES)}"
        )
    allowed, define, build, thaw = spec
    if constraints is None:
        constraints = {}
    if not isinstance(constraints, Mapping):
        raise _bad_constraint(variable, "constraints", constraints, "must be a mapping")
    unknown = sorted(str(k) for k in constraints if k not in allowed)
    if unknown:
        raise _bad_constraint(
            variable,
            "constraints",
            dict(constraints),
            f"{', '.join(map(repr, unknown))} not valid for type {type_name!r}"
            f" (allowed: {', '.join(sorted(allowed)) or 'none'})",
        )
    c = dict(constraints)
    if define is not None:
        define(variable, c)
    try:
        plain_copy(c)  # constraints cross the wire too
    except (TypeError, ValueError) as exc:
        raise _bad_constraint(variable, "constraints", wire_safe(c), str(exc)) from None
    return Validator(type_name, c, build(c, max_bytes), thaw)
