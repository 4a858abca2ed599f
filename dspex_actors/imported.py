"""An export's columns checked and turned into a session's records: what an import,
a migration's copy and a durable store's load all go through.

Every name, definition, value, version and timestamp is checked against the same
types and limits a write meets (:mod:`dspex_actors.vartypes`,
:mod:`dspex_actors.limits`), each rule over a whole column first, so importing
10,000 variables costs little more than their values' checks.
"""

from __future__ import annotations

from typing import Any

from dspex_actors import vartypes
from dspex_actors.errors import InvalidExport, VariableExists
from dspex_actors.exports import ExportColumns, first_repeat
from dspex_actors.limits import (
    DEFAULT_LIMITS,
    NUMBER_BYTES,
    Limits,
    array_header_size,
    check_columns_size,
)
from dspex_actors.session import Record, SessionTable, new_record
from dspex_actors.text import describe_value
from dspex_actors.vartypes import MAX_VERSION, all_of_type

__all__ = ["records_from_columns"]


def records_from_columns(
    columns: ExportColumns, table: SessionTable, limits: Limits = DEFAULT_LIMITS
) -> list[Record]:
    """Records for every variable of well-shaped columns (see ``check_shape``), all
    checked before any is built.

    Raises ``InvalidExport`` for a malformed export (a version or timestamp out of
    range, a NaN or infinite timestamp included), ``ValidationError`` for a bad name,
    definition or value, ``VariableExists`` for a clash with ``table``, and
    ``LimitExceeded`` for a value, metadata map or constraints over ``limits``, or
    for a whole import over ``max_message_bytes`` (measured as the bridge's columns
    carry it, so what imports here can migrate). Each rule runs over a whole column;
    only when it fails does a per-variable scan find the first offender to name.
    Each definition is compiled once, for the first variable that uses it.
    """
    ids, names, slots = columns.ids, columns.names, columns.definition
    count = len(ids)
    if not (all_of_type(ids, str) and all(ids)):
        bad = next(i for i in ids if type(i) is not str or not i)
        raise InvalidExport(f"export variable id {describe_value(bad)} is not a string")
    vartypes.check_names(names)
    _check_unique(ids, names, table)
    versions = columns.versions
    if not all_of_type(versions, int) or (
        versions and (min(versions) < 0 or max(versions) > MAX_VERSION)
    ):
        name, bad = next(
            (n, v)
            for n, v in zip(names, versions, strict=True)
            if type(v) is not int or not 0 <= v <= MAX_VERSION
        )
        raise InvalidExport(
            f"export variable {name!r}: version {describe_value(bad)} "
            f"is not a version number (0 to {MAX_VERSION})"
        )
    created = _timestamps(names, columns.created_at, "created_at")
    updated = _timestamps(names, columns.last_updated_at, "last_updated_at")
    definitions = columns.definitions
    first_user = dict(zip(reversed(slots), range(count - 1, -1, -1), strict=True))
    compiled = {
        slot: vartypes.compile_type(names[first_user[slot]], *definitions[slot], limits)
        for slot in sorted(first_user, key=first_user.__getitem__)
    }
    validators = list(map(compiled.__getitem__, slots))
    values = [
        v.check(name, value)
        for v, name, value in zip(validators, names, columns.values, strict=True)
    ]
    sized = [
        vartypes.sized_metadata(name, meta, limits)
        for name, meta in zip(names, columns.variable_metadata, strict=True)
    ]
    metadata = [meta for meta, _ in sized]
    session_metadata_bytes = vartypes.sized_metadata("<session>", columns.metadata, limits)[1]
    check_columns_size(
        "<import>",
        f"the import of {count} variables",
        (
            ids,
            names,
            [v.type for v in compiled.values()],
            [v.constraints for v in compiled.values()],
            values,
        ),
        limits,
        extra_bytes=(
            3 * NUMBER_BYTES * count  # version, created_at, last_updated_at
            + array_header_size(count)
            + sum(size for _, size in sized)
            + session_metadata_bytes
        ),
    )
    return list(
        map(
            new_record,
            zip(
                *(ids, names, values, versions, metadata, created, updated, validators),
                [v.thaw for v in validators],
                strict=True,
            ),
        )
    )


def _check_unique(ids: list[str], names: list[str], table: SessionTable) -> None:
    """Ids and names each once, never one as the other, and new to ``table``."""
    distinct_ids, distinct_names = set(ids), set(names)
    for kind, listed, distinct in (("id", ids, distinct_ids), ("name", names, distinct_names)):
        if len(distinct) != len(listed):
            raise InvalidExport(f"export lists variable {kind} {first_repeat(listed)!r} twice")
    if not distinct_ids.isdisjoint(distinct_names):
        raise InvalidExport("export uses a variable id that is also a variable name")
    held = table.index.keys()
    for key in (held & distinct_names) or (held & distinct_ids):
        existing = table.index[key]
        raise VariableExists(
            f"variable {key!r} already exists in session {table.session_id!r} "
            f"(as {'name' if existing.name == key else 'id'} of {existing.name!r})",
            variable=key,
        )


def _timestamps(names: list[str], stamps: list[Any], key: str) -> list[float]:
    """The column as floats (ints are converted); ``InvalidExport`` names the variable
    and the field of a stamp that is not a finite number (NaN or ±inf would order and
    compare wrongly in every later read of the session).

    The common column, all finite floats, is checked in C: the sum of finite floats
    minus itself is 0.0, and NaN or inf anywhere makes it NaN (a sum that overflows
    only sends the column to the per-stamp scan, which decides exactly).
    """
    if all_of_type(stamps, float):
        total = sum(stamps)
        if total - total == 0.0:
            return stamps
    from math import isfinite  # the rare path only: a column that is not all finite floats

    out = []
    for name, stamp in zip(names, stamps, strict=True):
        if isinstance(stamp, int | float) and not isinstance(stamp, bool):
            try:
                number = float(stamp)
            except OverflowError:
                pass
            else:
                if isfinite(number):
                    out.append(number)
                    continue
        raise InvalidExport(
            f"export variable {name!r}: {key} {describe_value(stamp)} is not a finite number",
            variable=name,
            field=key,
        )
    return out
