"""A session export, column by column: the form every import is checked and built from.

An export map (``StateProvider.export_state``) holds one dict per variable. Walking
10,000 of those dicts key by key was most of a large import's time, so an import
first turns the map into :class:`ExportColumns` — one list per field, with the
distinct (type, constraints) definitions listed once — and the session actor then
checks each column in one pass and compiles each definition once. The bridge sends
the same columns as they are (``bridge/columns.py``), which is also a third of the
bytes of the map.

:func:`columns_of` does the structural checks of a map (``InvalidExport``); the
checks of names, versions, types and values belong to the session actor, which
makes them for maps and for columns from the wire alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from operator import itemgetter
from typing import Any, NamedTuple

import msgpack

from dspex_actors.bulk import BULK_ITEMS, gc_paused
from dspex_actors.errors import InvalidExport
from dspex_actors.text import describe_value, utf8_encodable
from dspex_actors.vartypes import all_of_type, plain_copy

__all__ = [
    "RECORD_KEYS",
    "ExportColumns",
    "check_lengths",
    "check_shape",
    "columns_digest",
    "columns_of",
    "export_digest",
    "export_of",
    "first_repeat",
]

RECORD_KEYS = (
    "id",
    "name",
    "type",
    "value",
    "constraints",
    "metadata",
    "version",
    "created_at",
    "last_updated_at",
)
"""The fields of one variable in an export map, in the order records are listed."""

_EXPORT_KEYS = ("session_id", "variables", "variable_index")


class ExportColumns(NamedTuple):
    """A whole session as one list per field; entry ``i`` of each is variable ``i``.

    ``definitions`` lists each distinct ``(type, constraints)`` once and
    ``definition[i]`` indexes it for variable ``i``. Building one checks nothing;
    :func:`check_shape` checks the layout and the session actor the contents.
    """

    session_id: str
    metadata: Mapping[str, Any] | None
    ids: list[Any]
    names: list[Any]
    definitions: list[tuple[Any, Any]]
    definition: list[int]
    values: list[Any]
    versions: list[Any]
    created_at: list[Any]
    last_updated_at: list[Any]
    variable_metadata: list[Any]
    sequence: int = 0
    """The session's next event sequence when the columns were taken (a migration
    continues the count from it); 0 when unknown."""

    @property
    def variable_count(self) -> int:
        """How many variables the columns hold."""
        return len(self.ids)


_PER_VARIABLE = (
    "ids",
    "names",
    "definition",
    "values",
    "versions",
    "created_at",
    "last_updated_at",
    "variable_metadata",
)


def check_lengths(lengths: Mapping[str, int]) -> None:
    """``InvalidExport`` unless every per-variable field (name -> length, ``ids``
    among them) has one entry per id."""
    count = lengths["ids"]
    uneven = {name: length for name, length in lengths.items() if length != count}
    if uneven:
        raise InvalidExport(f"export has {count} variable ids but column lengths {uneven}")


def check_shape(columns: ExportColumns) -> None:
    """``InvalidExport`` unless every per-variable field is a list of one entry per
    variable, ``definitions`` a list of (type, constraints) pairs, and each
    ``definition`` entry an index into it. Says nothing of the contents."""
    if not isinstance(columns, ExportColumns):
        raise InvalidExport(f"expected ExportColumns, got {type(columns).__name__}")
    fields = {name: getattr(columns, name) for name in _PER_VARIABLE}
    not_lists = [name for name, field in fields.items() if type(field) is not list]
    if not_lists or type(columns.definitions) is not list:
        raise InvalidExport(f"export columns must be lists: {not_lists or ['definitions']}")
    check_lengths({name: len(field) for name, field in fields.items()})
    definitions = columns.definitions
    if not all(type(d) is tuple and len(d) == 2 for d in definitions):
        raise InvalidExport("export definitions must be (type, constraints) pairs")
    slots = columns.definition
    if slots and (not all_of_type(slots, int) or min(slots) < 0 or max(slots) >= len(definitions)):
        name, bad = next(
            (n, s)
            for n, s in zip(columns.names, slots, strict=True)
            if type(s) is not int or not 0 <= s < len(definitions)
        )
        raise InvalidExport(
            f"export variable {name!r}: definition {describe_value(bad)} is not one of "
            f"the {len(definitions)} the export lists"
        )


def columns_of(exported: Any) -> ExportColumns:
    """The columns of an export map, after its structural checks (``InvalidExport``).

    Checks that the map has its keys, that every variable is a mapping with every
    field and the id it is filed under, and that ``variable_index`` maps each name
    to its id. The values themselves are not copied: the import copies what it keeps.
    """
    if not isinstance(exported, Mapping):
        raise InvalidExport(f"an export must be a mapping, got {type(exported).__name__}")
    missing = [k for k in _EXPORT_KEYS if k not in exported]
    if missing:
        raise InvalidExport(f"export is missing {', '.join(missing)}")
    session_id = exported["session_id"]
    if not isinstance(session_id, str) or not utf8_encodable(session_id):
        raise InvalidExport(
            f"export session_id must be a UTF-8 string, got {describe_value(session_id)}"
        )
    variables = exported["variables"]
    index = exported["variable_index"]
    if not isinstance(variables, Mapping) or not isinstance(index, Mapping):
        raise InvalidExport("export 'variables' and 'variable_index' must be mappings")
    metadata = exported.get("metadata")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise InvalidExport("export 'metadata' must be a mapping")
    ids = list(variables)
    raws = list(variables.values())
    with gc_paused(len(ids) >= BULK_ITEMS):
        fields = _fields(ids, raws)
        if fields["id"] != ids:
            var_id, raw_id = next((i, r) for i, r in zip(ids, fields["id"], strict=True) if i != r)
            raise InvalidExport(
                f"export variable {var_id!r} carries a different id {describe_value(raw_id)}"
            )
        names = fields["name"]
        _check_index(index, names, ids)
        definitions, definition = _definitions(fields["type"], fields["constraints"])
    return ExportColumns(
        session_id,
        metadata,
        ids,
        names,
        definitions,
        definition,
        fields["value"],
        fields["version"],
        fields["created_at"],
        fields["last_updated_at"],
        fields["metadata"],
    )


def _fields(ids: list[Any], raws: list[Any]) -> dict[str, list[Any]]:
    """One list per record key (C-speed ``itemgetter`` over every record).

    Only plain dicts are read straight away; a record that is not one is asked for
    its keys first, since a lookup could invent a missing key (a defaultdict's
    ``__missing__``) and change the caller's export.
    """
    if all_of_type(raws, dict):
        try:
            return {key: list(map(itemgetter(key), raws)) for key in RECORD_KEYS}
        except KeyError:
            pass  # the scan below names the record
    for var_id, raw in zip(ids, raws, strict=True):
        if not isinstance(raw, Mapping):
            raise InvalidExport(f"export variable {var_id!r} is not a mapping")
        lacking = [k for k in RECORD_KEYS if k not in raw]
        if lacking:
            raise InvalidExport(f"export variable {var_id!r} is missing {', '.join(lacking)}")
    return {key: list(map(itemgetter(key), raws)) for key in RECORD_KEYS}


def _check_index(index: Mapping[str, Any], names: list[Any], ids: list[Any]) -> None:
    """Each name once, and ``variable_index`` exactly the names' ids."""
    try:
        named = dict(zip(names, ids, strict=True))
    except TypeError:
        return  # an unhashable name: the import's name check reports it
    if len(named) != len(names):
        raise InvalidExport(f"export lists variable name {first_repeat(names)!r} twice")
    if named != index:  # dict equality, or Mapping's for another mapping
        raise InvalidExport(
            "export variable_index does not match its variables: "
            f"index {describe_value(dict(index))}, variables name {describe_value(named)}"
        )


def _definitions(
    types: list[Any], constraints: list[Any]
) -> tuple[list[tuple[Any, Any]], list[int]]:
    """The distinct (type, constraints) pairs and each variable's index into them.

    Pairs are alike when their types are and their constraints' msgpack encodings
    are (the compile cache's key). If any pair cannot be keyed so, every variable
    gets a definition of its own, for the import's checks to judge one by one.
    """
    pack = msgpack.Packer(use_bin_type=True).pack
    try:
        keys = list(zip(types, map(pack, constraints), strict=True))
        slots: dict[tuple[Any, bytes], int] = {}
        definition = [slots.setdefault(key, len(slots)) for key in keys]
    except (TypeError, ValueError, OverflowError):
        return list(zip(types, constraints, strict=True)), list(range(len(types)))
    first = dict(zip(reversed(keys), range(len(keys) - 1, -1, -1), strict=True))
    return [(types[first[key]], constraints[first[key]]) for key in slots], definition


def first_repeat(items: list[Any]) -> Any:
    """The first item met a second time (the caller knows there is one)."""
    seen: set[Any] = set()
    for item in items:
        if item in seen:
            return item
        seen.add(item)
    raise ValueError("no item repeats")


def export_of(columns: ExportColumns) -> dict[str, Any]:
    """The export map of some columns (``InvalidExport`` if malformed): new dicts with
    their own constraints, holding the columns' values and metadata as they are."""
    check_shape(columns)
    with gc_paused(columns.variable_count >= BULK_ITEMS):
        records = _records(columns)
        return {
            "session_id": columns.session_id,
            "variables": {r["id"]: r for r in records},
            "variable_index": {r["name"]: r["id"] for r in records},
            "metadata": plain_copy(columns.metadata) if columns.metadata else {},
        }


def _records(columns: ExportColumns) -> list[dict[str, Any]]:
    definitions = columns.definitions
    return [
        {
            "id": var_id,
            "name": name,
            "type": definitions[slot][0],
            "value": value,
            "constraints": plain_copy(definitions[slot][1]) if definitions[slot][1] else {},
            "metadata": metadata,
            "version": version,
            "created_at": created,
            "last_updated_at": updated,
        }
        for var_id, name, slot, value, version, created, updated, metadata in zip(
            columns.ids,
            columns.names,
            columns.definition,
            columns.values,
            columns.versions,
            columns.created_at,
            columns.last_updated_at,
            columns.variable_metadata,
            strict=True,
        )
    ]


def columns_digest(columns: ExportColumns) -> bytes:
    """SHA-256 of the variables, in order, to verify a copy without sending it back.

    It hashes msgpack of ``[[id, name, type, value, version, constraints, metadata,
    created_at, last_updated_at], ...]``; the SessionStore's ImportSession answers
    the same digest of what it stored. Sessions holding the same variables give the
    same digest (tuples and lists encode alike). Columns taken from a session are
    in stored form; other columns (a hand-made map's, say) hash their data as
    given, so an int where the session stores a float, or None constraints where
    it stores {}, makes their digest differ from the session's.
    """
    check_shape(columns)
    with gc_paused(columns.variable_count >= BULK_ITEMS):
        return _digest(columns)


def _digest(columns: ExportColumns) -> bytes:
    chosen = [columns.definitions[slot] for slot in columns.definition]
    rows = list(
        zip(
            columns.ids,
            columns.names,
            [d[0] for d in chosen],
            columns.values,
            columns.versions,
            [d[1] for d in chosen],
            columns.variable_metadata,
            columns.created_at,
            columns.last_updated_at,
            strict=True,
        )
    )
    return hashlib.sha256(msgpack.packb(rows, use_bin_type=True)).digest()


def export_digest(exported: Mapping[str, Any]) -> bytes:
    """:func:`columns_digest` of an export map."""
    return columns_digest(columns_of(exported))
