"""Records: ``get_record`` (one variable's typed record) and ``list_variables(pattern)``.

Both answer the one record type, :class:`~dspex_actors.records.VariableRecord`: a
dict of the nine record keys (equal to a plain dict of its items, encodable as JSON
and msgpack) whose keys are also read-only attributes. ``get_record`` must equal the
variable's ``list_variables`` entry, field by field and as a whole, hand out copies,
and refuse attribute assignment. A ``list_variables`` pattern is a glob over
names with ``fnmatch.fnmatchcase`` meaning (``*``, ``?``, ``[abc]``, ``[!abc]``,
case-sensitive, the whole name). The expected results are written out by hand, so
a backend is checked against the meaning, not against a helper it may share.
"""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest

from dspex_actors import exports
from dspex_actors.errors import ValidationError, VariableNotFound, VersionConflict
from dspex_actors.provider import StateProvider
from dspex_actors.records import VariableRecord
from dspex_actors.testing.base import (
    RECORD_KEYS,
    ContractBase,
    assert_unchanged,
    record_of,
    same,
)

__all__ = ["RecordsContract"]

_NOT_IDENTIFIERS: list[Any] = [42, None, ["x"], 1.5, ("x",)]
"""Values that name no variable: ``get_record`` answers ``VariableNotFound``."""

_NOT_PATTERNS: list[Any] = [5, 1.5, b"temp_*", ["temp_*"], {"temp_*": 1}, True]
"""Values that are no glob: ``list_variables`` answers ``ValidationError``."""

# Not sorted, so "in creation order" and "sorted" give different answers.
_NAMES = [
    "top_p",
    "temp_b",
    "Temp_c",
    "temperature",
    "x2",
    "temp_a",
    "top.p",
    "xy",
    "x1",
    "top_k",
]

_GLOBS: dict[str, list[str]] = {
    "temp_*": ["temp_b", "temp_a"],
    "Temp_*": ["Temp_c"],  # case-sensitive
    "temp*": ["temp_b", "temperature", "temp_a"],
    "*emp*": ["temp_b", "Temp_c", "temperature", "temp_a"],
    "top_?": ["top_p", "top_k"],
    "top.p": ["top.p"],  # a glob, not a regular expression: "." is itself
    "?op?p": ["top_p", "top.p"],
    "x[12]": ["x2", "x1"],
    "x[!12]": ["xy"],
    "[tx]*[0-9]": ["x2", "x1"],
    "*_[ab]": ["temp_b", "temp_a"],
    "temp": [],  # the whole name: no prefix match
    "emp_a": [],  # no substring match
    "TEMP_A": [],
    "nothing*": [],
    "*": _NAMES,
}


def _assert_record_matches(record: Any, listed: dict[str, Any], how: str) -> None:
    """``record`` is a VariableRecord equal, field by field and type by type, to the
    variable's ``list_variables`` entry ``listed``, and equal to it as a dict."""
    assert isinstance(record, VariableRecord), (
        f"get_record({how}) returned {type(record).__name__}, not a VariableRecord"
    )
    for field in exports.RECORD_KEYS:
        got, expected = getattr(record, field), listed[field]
        assert same(got, expected), (
            f"get_record({how}).{field} is {got!r}; list_variables() has {expected!r}"
        )
    assert record == listed, f"get_record({how}) is {record!r}; list_variables() has {listed!r}"


def _assert_listed_record(listed: Any) -> None:
    """One ``list_variables`` entry is a VariableRecord of exactly the nine keys, each
    also an attribute, and as a dict it is the plain data the contract promises."""
    assert isinstance(listed, VariableRecord), (
        f"list_variables() lists a {type(listed).__name__}, not a VariableRecord: {listed!r}"
    )
    assert set(listed) == RECORD_KEYS, f"record keys {sorted(listed)}, not {sorted(RECORD_KEYS)}"
    for field in exports.RECORD_KEYS:
        assert getattr(listed, field) is listed[field], f"record.{field} is not record[{field!r}]"
    plain = dict(listed)
    assert type(plain) is dict and plain == listed and listed == plain
    assert msgpack.unpackb(msgpack.packb(listed)) == plain, "a record is not msgpack plain data"
    assert json.dumps(listed) == json.dumps(plain), "a record does not encode as its map"


class RecordsContract(ContractBase):
    """``get_record`` by name and id, and ``list_variables`` filtered by a glob."""

    def test_get_record_matches_the_listing_by_name_and_id(self, state: StateProvider) -> None:
        state.register_variable(
            "temperature",
            "float",
            0.7,
            constraints={"min": 0.0, "max": 2.0},
            description="Sampling temperature",
        )
        state.register_variable(
            "vector",
            "embedding",
            [1, 2],
            constraints={"dimensions": 2},
            metadata={"tags": ["x"], "nested": {"k": [1, 2]}},
        )
        state.register_variable("weights", "tensor", {"shape": [2], "data": [1.0, 2.0]})
        state.register_variable("style", "choice", "a", constraints={"choices": ["a", "b"]})
        state.set_variable("temperature", 1.1, {"by": "optimizer"})
        state.update_variables({"style": "b", "vector": [3, 4]}, {"source": "batch"})
        listing = state.list_variables()
        assert [r["name"] for r in listing] == ["temperature", "vector", "weights", "style"]
        for listed in listing:
            _assert_record_matches(state.get_record(listed["name"]), listed, repr(listed["name"]))
            _assert_record_matches(state.get_record(listed["id"]), listed, repr(listed["id"]))

    def test_list_variables_and_get_record_answer_one_record(self, state: StateProvider) -> None:
        state.register_variable("temperature", "float", 0.7, constraints={"min": 0.0})
        state.register_variable("tags", "string", "a", metadata={"by": ["kit"]})
        state.set_variable("temperature", 0.9, {"step": 1})
        listing = state.list_variables()
        assert [r["name"] for r in listing] == ["temperature", "tags"]
        for listed in [*listing, *state.list_variables("t*")]:
            _assert_listed_record(listed)
        assert (listing[0].name, listing[0].value, listing[0].version) == ("temperature", 0.9, 1)
        for listed in listing:
            for identifier in (listed.name, listed.id):
                record = state.get_record(identifier)
                _assert_listed_record(record)
                assert record == next(r for r in state.list_variables() if r["id"] == listed.id)
                assert record == listed, f"get_record({identifier!r}) differs from its entry"

    def test_has_variable_by_name_and_id(self, state: StateProvider) -> None:
        has = getattr(state, "has_variable", None)
        if has is None:
            pytest.skip(f"{type(state).__name__} has no has_variable (optional)")
        var_id = state.register_variable("temperature", "float", 0.7)
        state.register_variable("vector", "embedding", [1.0, 2.0])
        assert has("temperature") is True
        assert has(var_id) is True
        assert has("vector") is True
        assert has("nope") is False
        assert has("temp*") is False  # a name, not a glob
        for strange in ("", "\ud800", 7, None, ["temperature"]):
            assert has(strange) is False, strange  # no error: it names no variable
        state.delete_variable("temperature")
        assert has("temperature") is False
        assert has(var_id) is False
        assert [r["name"] for r in state.list_variables()] == ["vector"]  # nothing changed

    def test_get_record_missing_raises_variable_not_found(self, state: StateProvider) -> None:
        state.register_variable("a", "integer", 1)
        var_id = state.register_variable("b", "integer", 2)
        state.delete_variable("b")
        before = state.list_variables()
        for identifier in ("nope", "A", "var_" + "0" * 32, var_id):
            with pytest.raises(VariableNotFound) as info:
                state.get_record(identifier)
            assert info.value.variable == identifier
            assert identifier in str(info.value), f"{str(info.value)!r} lacks {identifier!r}"
        for not_an_identifier in _NOT_IDENTIFIERS:
            with pytest.raises(VariableNotFound):
                state.get_record(not_an_identifier)
        assert_unchanged(state, before)

    def test_get_record_version_follows_writes(self, state: StateProvider) -> None:
        var_id = state.register_variable("a", "integer", 0, constraints={"max": 10})
        state.register_variable("b", "integer", 0)
        assert state.get_record("a").version == 0
        state.set_variable("a", 1)
        assert state.get_record("a").version == 1
        state.set_variable(var_id, 2)
        assert state.get_record(var_id).version == 2
        state.update_variables({"a": 3, "b": 1})
        record = state.get_record("a")
        assert (record.version, record.value) == (3, 3)
        assert state.get_record("b").version == 1
        state.set_variable("a", 4, expected_version=3)
        assert state.get_record("a").version == 4

        # Failed writes move nothing.
        with pytest.raises(ValidationError):
            state.set_variable("a", 11)
        with pytest.raises(VersionConflict):
            state.set_variable("a", 5, expected_version=3)
        record = state.get_record("a")
        assert (record.version, record.value) == (4, 4)
        assert record.created_at <= record.last_updated_at

    def test_get_record_returns_copies(self, state: StateProvider) -> None:
        state.register_variable(
            "vector",
            "embedding",
            [1.0, 2.0],
            constraints={"dimensions": 2},
            metadata={"tags": ["x"]},
        )
        listed_before = record_of(state, "vector")
        record = state.get_record("vector")
        record.value.append(3.0)
        record.metadata["tags"].append("y")
        record.metadata["added"] = True
        record.constraints["dimensions"] = 3

        again = state.get_record("vector")
        assert same(again.value, [1.0, 2.0]), f"a record's value edit reached the store: {again}"
        assert same(again.metadata, {"tags": ["x"]})
        assert same(again.constraints, {"dimensions": 2})
        assert same(state.get_variable("vector"), [1.0, 2.0])
        assert same(record_of(state, "vector"), listed_before)
        with pytest.raises(ValidationError):  # the constraint in the store is still 2
            state.set_variable("vector", [1.0, 2.0, 3.0])

    def test_get_record_is_immutable(self, state: StateProvider) -> None:
        state.register_variable("a", "integer", 1)
        record = state.get_record("a")
        for field, value in (("value", 2), ("version", 9), ("name", "b")):
            with pytest.raises(AttributeError):
                setattr(record, field, value)
        assert (record.value, record.version, record.name) == (1, 0, "a")

    def test_get_record_after_delete_raises_variable_not_found(self, state: StateProvider) -> None:
        old_id = state.register_variable("a", "integer", 1)
        state.set_variable("a", 2)
        state.delete_variable("a")
        for identifier in ("a", old_id):
            with pytest.raises(VariableNotFound):
                state.get_record(identifier)
        new_id = state.register_variable("a", "string", "fresh")
        record = state.get_record("a")
        assert (record.id, record.type, record.value, record.version) == (
            new_id,
            "string",
            "fresh",
            0,
        )
        with pytest.raises(VariableNotFound):
            state.get_record(old_id)

    @pytest.mark.parametrize("glob", list(_GLOBS))
    def test_list_variables_pattern_globs_names(self, state: StateProvider, glob: str) -> None:
        for i, name in enumerate(_NAMES):
            state.register_variable(name, "integer", i)
        everything = state.list_variables()
        by_name = {r["name"]: r for r in everything}
        expected = [by_name[name] for name in _GLOBS[glob]]
        for how, listed in (
            ("pattern=", state.list_variables(pattern=glob)),
            ("positional", state.list_variables(glob)),
        ):
            names = [r["name"] for r in listed]
            assert names == _GLOBS[glob], f"list_variables({how}{glob!r}) gave {names}"
            assert same(listed, expected)

    def test_list_variables_without_pattern_lists_all(self, state: StateProvider) -> None:
        assert state.list_variables(None) == []
        assert state.list_variables("*") == []
        for i, name in enumerate(_NAMES):
            state.register_variable(name, "integer", i)
        everything = state.list_variables()
        assert [r["name"] for r in everything] == _NAMES
        for listed in (
            state.list_variables(None),
            state.list_variables(pattern=""),
            state.list_variables(""),
        ):
            assert same(listed, everything)

    def test_list_variables_pattern_is_over_names_not_ids(self, state: StateProvider) -> None:
        var_id = state.register_variable("a", "integer", 1)
        assert state.list_variables(var_id) == []
        assert state.list_variables(var_id[:4] + "*") == []
        assert [r["id"] for r in state.list_variables("a")] == [var_id]

    def test_list_variables_pattern_follows_deletes_and_creation_order(
        self, state: StateProvider
    ) -> None:
        for i, name in enumerate(_NAMES):
            state.register_variable(name, "integer", i)
        state.delete_variable("temp_b")
        assert [r["name"] for r in state.list_variables("temp_*")] == ["temp_a"]
        state.register_variable("temp_b", "integer", 99)
        listed = state.list_variables("temp_*")
        assert [r["name"] for r in listed] == ["temp_a", "temp_b"]
        assert [(r["value"], r["version"]) for r in listed] == [(5, 0), (99, 0)]

    @pytest.mark.parametrize("pattern", _NOT_PATTERNS, ids=repr)
    def test_list_variables_rejects_a_pattern_that_is_not_a_string(
        self, state: StateProvider, pattern: Any
    ) -> None:
        state.register_variable("temp_a", "integer", 1)
        before = state.list_variables()
        with pytest.raises(ValidationError) as info:
            state.list_variables(pattern)
        assert info.value.rule == "pattern", f".rule is {info.value.rule!r}"
        assert "pattern" in str(info.value), f"{str(info.value)!r} does not name the rule"
        assert_unchanged(state, before)
