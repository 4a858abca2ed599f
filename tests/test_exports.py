"""Export columns: the map <-> columns conversion, digests, and the column checks."""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable, Iterator
from types import MappingProxyType
from typing import Any, cast

import pytest

from dspex_actors import LocalState
from dspex_actors.errors import InvalidExport, StateError, ValidationError, VariableExists
from dspex_actors.exports import (
    ExportColumns,
    columns_digest,
    columns_of,
    export_digest,
    export_of,
    first_repeat,
)


@pytest.fixture
def source() -> Iterator[LocalState]:
    """A session with every kind of variable, a write, metadata and shared definitions."""
    state = LocalState.init(session_id="source")
    try:
        state.register_variable("t", "float", 0.7, constraints={"min": 0, "max": 2})
        state.register_variable("u", "float", 1.5, constraints={"min": 0, "max": 2})
        state.register_variable("n", "integer", 3, constraints={"min": 0}, metadata={"a": [1]})
        state.register_variable("s", "string", "hi", description="a string")
        state.register_variable("b", "boolean", True)
        state.register_variable("c", "choice", "x", constraints={"choices": ["x", "y"]})
        state.register_variable("m", "module", "dspy.Predict")
        state.register_variable("e", "embedding", [0.1, 0.2], constraints={"dimensions": 2})
        state.register_variable("k", "tensor", {"shape": [1, 2], "data": [1.0, 2.0]})
        state.set_variable("t", 0.9, {"by": "test"})
        yield state
    finally:
        state.cleanup()


@pytest.fixture
def target() -> Iterator[LocalState]:
    state = LocalState.init(session_id="target")
    try:
        yield state
    finally:
        state.cleanup()


def test_columns_of_an_export_turn_back_into_the_same_export(source: LocalState) -> None:
    exported = source.export_state()
    assert export_of(columns_of(exported)) == exported


def test_a_session_hands_out_columns_equal_to_its_export(source: LocalState) -> None:
    columns = source.export_columns()
    assert columns.variable_count == 9
    assert export_of(columns) == source.export_state()
    # t and u share their definition; every other variable has its own.
    assert columns.definition[0] == columns.definition[1]
    assert len(columns.definitions) == 8


def test_alike_definitions_are_listed_once_and_unlike_ones_apart() -> None:
    columns = columns_of(
        _export(
            ("a", "float", {"min": 0, "max": 1}),
            ("b", "float", {"min": 0, "max": 1}),
            ("c", "float", {"min": 0.0, "max": 1}),  # 0.0 is not 0 on the wire
            ("d", "integer", {"min": 0, "max": 1}),
            ("e", "float", {"max": 1, "min": 0}),  # key order is part of the encoding
        )
    )
    assert columns.definition == [0, 0, 1, 2, 3]
    assert [d[0] for d in columns.definitions] == ["float", "float", "integer", "float"]


def test_definitions_that_cannot_be_keyed_get_one_each_and_still_import(
    target: LocalState,
) -> None:
    exported = _export(("a", "float", {"min": 0}), ("b", "float", {"min": 0}))
    for record in exported["variables"].values():
        record["constraints"] = MappingProxyType(record["constraints"])
    columns = columns_of(exported)
    assert columns.definition == [0, 1]
    target.import_state(exported)
    assert target.get_variables(["a", "b"]) == {"a": 0.5, "b": 0.5}


def test_import_columns_keeps_ids_versions_times_and_metadata(
    source: LocalState, target: LocalState
) -> None:
    target.import_columns(source.export_columns())
    mine, theirs = target.export_state(), source.export_state()
    assert mine["variables"] == theirs["variables"]
    assert target.digest() == source.digest()


def test_digests_of_maps_columns_and_tables_agree(source: LocalState) -> None:
    exported = source.export_state()
    assert export_digest(exported) == columns_digest(source.export_columns()) == source.digest()
    changed = copy.deepcopy(exported)
    changed["variables"][changed["variable_index"]["t"]]["version"] += 1
    assert export_digest(changed) != export_digest(exported)


def test_exported_constraints_are_each_a_fresh_copy(source: LocalState) -> None:
    exported = export_of(source.export_columns())
    first, second = (exported["variables"][exported["variable_index"][n]] for n in "tu")
    first["constraints"]["max"] = 99
    assert second["constraints"]["max"] == 2.0
    assert source.export_state()["variables"][second["id"]]["constraints"]["max"] == 2.0


def test_first_repeat() -> None:
    assert first_repeat(["a", "b", "c", "b", "a"]) == "b"
    with pytest.raises(ValueError):
        first_repeat(["a", "b"])


# -- the checks of columns (what a column-only sender, such as the bridge, can break) -------


def _export(*variables: tuple[str, str, dict[str, Any]]) -> dict[str, Any]:
    records = {
        f"var_{i:032x}": {
            "id": f"var_{i:032x}",
            "name": name,
            "type": type_name,
            "value": 0.5 if type_name == "float" else 1,
            "constraints": constraints,
            "metadata": {},
            "version": 1,
            "created_at": 1.0,
            "last_updated_at": 2.0,
        }
        for i, (name, type_name, constraints) in enumerate(variables)
    }
    return {
        "session_id": "made",
        "variables": records,
        "variable_index": {r["name"]: r["id"] for r in records.values()},
        "metadata": {},
    }


def _two() -> ExportColumns:
    return columns_of(_export(("alpha", "float", {"max": 1}), ("beta", "integer", {"min": 0})))


def _set(column: str, index: int, value: Any) -> Callable[[ExportColumns], ExportColumns]:
    def change(columns: ExportColumns) -> ExportColumns:
        values = list(getattr(columns, column))
        values[index] = value
        changed: ExportColumns = columns._replace(**cast(Any, {column: values}))
        return changed

    return change


BAD_COLUMNS: dict[str, tuple[Callable[[ExportColumns], ExportColumns], type[StateError], str]] = {
    "a short column": (lambda c: c._replace(values=c.values[:1]), InvalidExport, "values"),
    "a repeated id": (lambda c: c._replace(ids=[c.ids[0]] * 2), InvalidExport, "twice"),
    "a repeated name": (lambda c: c._replace(names=["x", "x"]), InvalidExport, "'x' twice"),
    "an empty id": (_set("ids", 1, ""), InvalidExport, "variable id ''"),
    "an id that is a name": (_set("ids", 1, "alpha"), InvalidExport, "also a variable name"),
    "an empty name": (_set("names", 1, ""), ValidationError, "rule 'name'"),
    "a negative version": (_set("versions", 1, -1), InvalidExport, "'beta': version -1"),
    "a boolean version": (_set("versions", 1, True), InvalidExport, "'beta': version True"),
    "a text timestamp": (_set("created_at", 1, "now"), InvalidExport, "'beta': created_at"),
    "a huge timestamp": (_set("last_updated_at", 1, 10**400), InvalidExport, "'beta'"),
    "a definition past the list": (_set("definition", 1, 2), InvalidExport, "'beta': definition"),
    "a value breaking its definition": (_set("values", 1, -5), ValidationError, "'beta'"),
    "metadata that is not a map": (
        _set("variable_metadata", 1, [1]),
        ValidationError,
        "'beta'",
    ),
}


@pytest.mark.parametrize("fault", list(BAD_COLUMNS))
def test_bad_columns_are_refused_by_name_and_change_nothing(
    target: LocalState, fault: str
) -> None:
    change, error, named = BAD_COLUMNS[fault]
    target.register_variable("keep", "integer", 1)
    before = target.export_state()
    with pytest.raises(error, match=named.replace("(", r"\(")):
        target.import_columns(change(_two()))
    assert target.export_state() == before


def test_a_definition_is_judged_for_the_first_variable_using_it(target: LocalState) -> None:
    columns = columns_of(_export(("a", "float", {"min": 0}), ("b", "float", {"min": 2, "max": 1})))
    assert columns.definition == [0, 1]
    with pytest.raises(ValidationError) as caught:
        target.import_columns(columns)
    assert caught.value.variable == "b"
    assert caught.value.rule == "min"


def test_a_clash_with_the_session_names_the_name(target: LocalState) -> None:
    target.register_variable("beta", "string", "mine")
    with pytest.raises(VariableExists) as caught:
        target.import_columns(_two())
    assert caught.value.variable == "beta"
    assert target.get_variable("beta") == "mine"
    with pytest.raises(StateError):
        target.get_variable("alpha")


# -- what a caller can hand over that is not even shaped like columns ---------------------


def test_a_record_mapping_that_invents_keys_is_refused_untouched(target: LocalState) -> None:
    exported = _export(("a", "float", {}))
    (var_id,) = exported["variables"]
    record = defaultdict(dict, exported["variables"][var_id])
    del record["metadata"]
    exported["variables"][var_id] = record
    with pytest.raises(InvalidExport, match="missing metadata"):
        target.import_state(exported)
    assert "metadata" not in record


# What the field types refuse is the point here, hence the casts.
MISSHAPEN: dict[str, Callable[[ExportColumns], Any]] = {
    "not columns at all": lambda c: ("ids", "names"),
    "a column that is a tuple": lambda c: c._replace(values=cast(Any, tuple(c.values))),
    "a definition that is not a pair": lambda c: c._replace(
        definitions=cast(Any, [("float",), ("x",)])
    ),
    "definitions that are not a list": lambda c: c._replace(definitions=cast(Any, None)),
    "a definition index that is text": lambda c: c._replace(definition=cast(Any, ["0", 1])),
    "a negative definition index": lambda c: c._replace(definition=[-1, 1]),
}


@pytest.mark.parametrize("fault", list(MISSHAPEN))
def test_misshapen_columns_are_refused_and_the_actor_lives_on(
    target: LocalState, fault: str
) -> None:
    misshapen = MISSHAPEN[fault](_two())
    with pytest.raises(InvalidExport):
        target.import_columns(misshapen)
    with pytest.raises(InvalidExport):
        export_of(misshapen)
    with pytest.raises(InvalidExport):
        columns_digest(misshapen)
    assert target.alive
    target.import_columns(_two())
    assert target.get_variable("alpha") == 0.5


def test_a_version_past_int64_is_refused(target: LocalState) -> None:
    exported = _export(("a", "integer", {}))
    next(iter(exported["variables"].values()))["version"] = 2**63
    with pytest.raises(InvalidExport, match="'a': version 9223372036854775808"):
        target.import_state(exported)


def test_columns_handed_out_are_the_callers_to_change(source: LocalState) -> None:
    with LocalState.init() as other:
        other.register_variable("t", "float", 1.0, constraints={"min": 0, "max": 2})
        columns = source.export_columns()
        _, constraints = columns.definitions[columns.definition[0]]
        constraints["max"] = 99  # the definition other's t shares in the compile cache
        columns.variable_metadata[columns.names.index("t")]["by"] = "someone else"
        for state in (source, other):
            export = state.export_state()
            record = export["variables"][export["variable_index"]["t"]]
            assert record["constraints"]["max"] == 2.0
        assert source.list_variables()[0]["metadata"] == {"by": "test"}
