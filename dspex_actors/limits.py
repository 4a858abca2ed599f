"""One set of limits for every backend, enforced where a value is written.

A session valid on one backend must be valid on every other, or a local session
could not migrate: so LocalState, the SessionStore and every store check the same
limits, with the same defaults, and refuse with the same exception. Limits are
configurable (``LocalState.init(limits=...)``, ``serve(limits=...)``); a store and
the clients that migrate into it should agree on them.

Sizes are of the msgpack encoding (``use_bin_type``), the form values cross the wire
in, and of the value as stored (a float embedding given as ints is measured as the
floats it becomes). A value may be exactly ``max_value_bytes`` long, encoding
included: the default admits a 4 MiB string or embedding with room for its header.

Measuring must not slow the hot path, so nothing is encoded to be measured unless it
could pass a limit: a number takes at most 9 bytes, a string of ``n`` characters at
most ``4n + 5`` (``n + 5`` when ASCII), an embedding exactly ``9n`` plus its header.
:mod:`~dspex_actors.vartypes` bakes the value limit into each compiled type (scalars
are never measured) and measures metadata as it copies it; :func:`check_batch_size`
and :func:`check_columns_size` bound a whole batch or import by the same arithmetic
and encode only when that bound passes ``max_message_bytes``.

It needs nothing of the package but the errors and the text helpers, so the
types module builds on it with no import cycle.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from dspex_actors.errors import LimitExceeded, ValidationError
from dspex_actors.text import describe_value, utf8_encodable

__all__ = [
    "DEFAULT_LIMITS",
    "NUMBER_BYTES",
    "Limits",
    "array_header_size",
    "check_batch_size",
    "check_columns_size",
    "check_metadata_size",
    "check_session_id",
    "check_variable_count",
    "encoded_size",
    "float_array_size",
    "size_bound",
    "str_size",
    "too_large",
]

_MIB = 1 << 20


@dataclass(frozen=True)  # no slots: serve() reads the class attributes as defaults
class Limits:
    """What one session (and one store) accepts; passing a limit raises LimitExceeded."""

    max_value_bytes: int = 4 * _MIB + 64 * 1024
    """One encoded value, as stored: a 4 MiB string fits with room for its header, and
    an embedding of 473,315 floats (9 bytes each)."""
    max_metadata_bytes: int = _MIB
    """One encoded metadata map (a variable's, a batch's, or the session's), and one
    variable's constraints (the bridge decodes those within this limit too)."""
    max_message_bytes: int = 64 * _MIB
    """One whole batch or import, encoded, and one gRPC message either way."""
    max_session_id_length: int = 256
    """Characters in a session id (which must be a non-empty UTF-8 string)."""
    max_variables_per_session: int = 100_000
    max_sessions: int = 10_000
    """Sessions one store holds at once."""
    max_concurrent_calls: int = 1024
    """Calls one server runs at once; more are refused (RESOURCE_EXHAUSTED) at once."""
    max_calls_per_connection: int = 128
    """Calls one client connection may have open (HTTP/2 concurrent streams)."""

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if type(value) is not int or value <= 0:
                raise ValueError(f"limit {name} must be a positive int, got {value!r}")


DEFAULT_LIMITS = Limits()


def check_session_id(session_id: Any, limits: Limits = DEFAULT_LIMITS) -> str:
    """A session id is a non-empty UTF-8 string of at most ``max_session_id_length``
    characters; ``ValidationError`` (rule ``session_id``) otherwise."""
    if (
        not isinstance(session_id, str)
        or not session_id
        or len(session_id) > limits.max_session_id_length
        or not utf8_encodable(session_id)
    ):
        shown = describe_value(session_id)
        raise ValidationError(
            f"session id must be a non-empty UTF-8 string of at most "
            f"{limits.max_session_id_length} characters (rule 'session_id', value {shown})",
            rule="session_id",
            value=shown,
        )
    return session_id


def check_variable_count(session_id: str, held: int, adding: int, limits: Limits) -> None:
    """``LimitExceeded`` if ``adding`` more variables would pass the session's limit."""
    limit = limits.max_variables_per_session
    if held + adding > limit:
        raise LimitExceeded(
            f"session {session_id!r} holds {held} variables; adding {adding} would pass "
            f"the limit of {limit} (rule 'max_variables_per_session')",
            limit="max_variables_per_session",
        )


# -- encoded sizes ---------------------------------------------------------------------

NUMBER_BYTES = 9
"""The most one number takes in msgpack (a float64, or an int64/uint64, with its tag)."""
_HEADER_BYTES = 5
"""The most a string, binary, array or map header takes (a tag and a 32-bit length)."""
_FIXED_BYTES: dict[type, int] = {float: NUMBER_BYTES, int: NUMBER_BYTES, bool: 1, type(None): 1}


def encoded_size(data: Any) -> int:
    """The exact msgpack size of plain data, by encoding it (the slow, exact path).

    Raises ``TypeError``/``ValueError``/``OverflowError`` for what msgpack cannot carry.
    """
    return len(msgpack.packb(data, use_bin_type=True))


def array_header_size(count: int) -> int:
    """Bytes of an array (or map) header for ``count`` entries."""
    return 1 if count < 16 else 3 if count < 0x10000 else 5


def _str_header_size(length: int) -> int:
    return 1 if length < 32 else 2 if length < 0x100 else 3 if length < 0x10000 else 5


def str_size(text: str) -> int:
    """The exact msgpack size of a string; encodes only a non-ASCII one.

    ``surrogatepass`` so a lone surrogate is measured rather than raised here: the
    string rules refuse it with their own error.
    """
    length = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    return _str_header_size(length) + length


def float_array_size(count: int) -> int:
    """The exact msgpack size of ``count`` floats (an embedding, a tensor's data)."""
    return array_header_size(count) + 9 * count


def size_bound(data: Any) -> int:
    """An upper bound of the msgpack size of checked data, without encoding it.

    For values a Validator returned and metadata ``check_metadata`` copied: there a
    tuple is always a frozen array of numbers (an embedding, a tensor's shape or
    data), bounded at 9 bytes per item without looking at them. Anything else not
    plain is measured exactly (and raises as :func:`encoded_size` does).
    """
    fixed = _FIXED_BYTES.get(type(data))
    if fixed is not None:
        return fixed
    if isinstance(data, str):
        return _HEADER_BYTES + (len(data) if data.isascii() else 4 * len(data))
    if isinstance(data, tuple):
        return _HEADER_BYTES + NUMBER_BYTES * len(data)
    if isinstance(data, list):
        return _HEADER_BYTES + sum(map(size_bound, data))
    if isinstance(data, bytes | bytearray):
        return _HEADER_BYTES + len(data)
    if isinstance(data, Mapping):
        return _HEADER_BYTES + sum(size_bound(k) + size_bound(v) for k, v in data.items())
    if isinstance(data, bool | int | float):  # subclasses encode as their base
        return NUMBER_BYTES
    return encoded_size(data)


def _column_bound(items: Collection[Any]) -> int:
    """:func:`size_bound` of a list of checked data; a column of only numbers, only
    strings or only frozen embeddings is bounded in C, without a Python call per item."""
    kinds = set(map(type, items))
    if kinds <= _FIXED_BYTES.keys():
        return _HEADER_BYTES + NUMBER_BYTES * len(items)
    if kinds == {str}:
        chars = sum(map(len, items))
        per_char = 1 if all(map(str.isascii, items)) else 4
        return _HEADER_BYTES * (1 + len(items)) + per_char * chars
    if kinds == {tuple}:  # frozen embeddings
        return _HEADER_BYTES * (1 + len(items)) + NUMBER_BYTES * sum(map(len, items))
    return _HEADER_BYTES + sum(map(size_bound, items))


def too_large(variable: str, what: str, size: int, limit: str, limit_bytes: int) -> LimitExceeded:
    """The error for ``what`` of ``variable`` encoding to ``size`` bytes, over ``limit``.

    Carries ``limit`` (the Limits field), ``variable`` and ``size`` as attributes.
    """
    return LimitExceeded(
        f"variable {variable!r}: {what} is {size} bytes encoded, over the limit of "
        f"{limit_bytes} bytes (limit {limit!r})",
        limit=limit,
        variable=variable,
        size=size,
    )


def check_metadata_size(
    variable: str, metadata: Mapping[str, Any], limits: Limits = DEFAULT_LIMITS
) -> int:
    """The encoded size of checked metadata; ``LimitExceeded`` (limit
    ``max_metadata_bytes``) if it passes the limit.

    For a map built from checked parts, which :func:`~dspex_actors.vartypes.check_metadata`
    did not see whole: a write's metadata merged over the record's, or a registration's
    metadata with its description added. Every variable's stored metadata must fit,
    or the session could not be exported and imported elsewhere.
    """
    size = encoded_size(metadata)
    if size > limits.max_metadata_bytes:
        raise too_large(
            variable, "metadata", size, "max_metadata_bytes", limits.max_metadata_bytes
        )
    return size


def check_batch_size(
    variable: str,
    keys: Collection[str],
    values: Collection[Any],
    limits: Limits = DEFAULT_LIMITS,
    *,
    extra_bytes: int = 0,
) -> None:
    """``LimitExceeded`` (limit ``max_message_bytes``, named ``variable``: ``"<batch>"``)
    if a batch passes the limit.

    The batch is the map ``keys`` -> ``values`` (the identifiers as given and the
    checked values, in the same order) plus ``extra_bytes`` (e.g. the encoded size of
    the batch's metadata), as ``update_variables`` sends it. Each value must already
    have passed its Validator under the same ``limits`` (so none passes
    ``max_value_bytes``): a batch too short to pass the limit even at that size per
    value costs one C-speed pass over the keys; a longer one is bounded; only a batch
    whose bound passes is encoded, value by value, to decide exactly.
    """
    budget = limits.max_message_bytes - extra_bytes - array_header_size(len(values))
    keys_bound = _HEADER_BYTES * len(keys) + 4 * sum(map(len, keys))
    if len(values) * limits.max_value_bytes + keys_bound <= budget:
        return
    if keys_bound + _column_bound(values) <= budget:
        return
    size = sum(map(str_size, keys)) + sum(map(encoded_size, values))
    if size > budget:
        total = size + limits.max_message_bytes - budget
        what = f"the batch of {len(values)} updates"
        raise too_large(variable, what, total, "max_message_bytes", limits.max_message_bytes)


def check_columns_size(
    variable: str,
    what: str,
    columns: Sequence[Collection[Any]],
    limits: Limits = DEFAULT_LIMITS,
    *,
    extra_bytes: int = 0,
) -> None:
    """``LimitExceeded`` (limit ``max_message_bytes``, named ``variable`` and described
    as ``what``) if ``columns`` pass the limit.

    Each column is a list of checked data (see :func:`size_bound`) encoded as one
    msgpack array; ``extra_bytes`` counts what travels beside them (fixed-size fields).
    An import measures its ids, names, type names, constraints and values this way,
    and adds its metadata (sizes ``sized_metadata`` measured already) and its
    versions and timestamps as ``extra_bytes``, as the bridge's columns carry them.
    Bounded column by column (in C for a column of only numbers or only strings);
    encoded, item by item, only when the bound passes the limit.
    """
    budget = limits.max_message_bytes - extra_bytes
    if sum(map(_column_bound, columns)) <= budget:
        return
    size = sum(array_header_size(len(c)) + sum(map(encoded_size, c)) for c in columns)
    if size > budget:
        total = size + extra_bytes
        raise too_large(variable, what, total, "max_message_bytes", limits.max_message_bytes)
