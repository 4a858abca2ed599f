"""Export and import: the export's shape and msgpack form, imports that keep
everything, and bad exports refused whole (one row per way to break an export)."""

from __future__ import annotations

import copy
import math
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple

import msgpack
import pytest

from dspex_actors.errors import (
    InvalidExport,
    StateError,
    ValidationError,
    VariableExists,
    VariableNotFound,
)
from dspex_actors.provider import StateProvider
from dspex_actors.testing.base import (
    EXPORT_KEYS,
    RECORD_KEYS,
    TENSOR_2X2,
    ContractBase,
    Opener,
    assert_unchanged,
    assert_validation_error,
    record_of,
    same,
)

__all__ = ["BAD_EXPORTS", "BadExport", "ExportContract"]

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


class ExportContract(ContractBase):
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
        temperature = record_of(state, "temperature")
        assert target.set_variable("temperature", 1.5) == temperature["version"] + 1
        with pytest.raises(ValidationError) as info:
            target.set_variable("temperature", 2.5)
        assert_validation_error(info.value, name="temperature", rule="max", value=2.5)
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
        assert record_of(target, "x")["version"] == 1
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
        assert_unchanged(target, before)
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
        assert_unchanged(target, before)

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
        assert_unchanged(target, before)

    def test_import_same_export_twice_changes_nothing(
        self, state: StateProvider, open_state: Opener
    ) -> None:
        exported = self._source_export(state)
        target = open_state()
        target.import_state(exported)
        before = target.list_variables()
        with pytest.raises(VariableExists):
            target.import_state(exported)
        assert_unchanged(target, before)
