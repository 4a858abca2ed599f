"""Batches: ``get_variables`` keyed as asked, ``update_variables`` all or nothing."""

from __future__ import annotations

import pytest

from dspex_actors.errors import PartialFailure, VariableNotFound
from dspex_actors.provider import StateProvider
from dspex_actors.testing.base import ContractBase, assert_unchanged, assert_validation_error

__all__ = ["BatchContract"]


class BatchContract(ContractBase):
    """get_variables and all-or-nothing update_variables."""

    def test_get_variables_keyed_as_given_and_skips_missing(self, state: StateProvider) -> None:
        state.register_variable("a", "integer", 1)
        b_id = state.register_variable("b", "string", "two")
        got = state.get_variables(["a", b_id, "missing", "var_missing"])
        assert got == {"a": 1, b_id: "two"}
        assert state.get_variables([]) == {}
        assert state.get_variables(("a",)) == {"a": 1}
        assert state.get_variables(n for n in ["b", "a"]) == {"b": "two", "a": 1}

    def test_update_variables_by_name_and_id(self, state: StateProvider) -> None:
        a_id = state.register_variable("a", "integer", 1)
        state.register_variable("b", "string", "x")
        assert state.update_variables({a_id: 2, "b": "y"}) is None
        assert state.get_variables(["a", "b"]) == {"a": 2, "b": "y"}
        state.update_variables({})
        assert {r["name"]: r["version"] for r in state.list_variables()} == {"a": 1, "b": 1}

    def test_update_variables_one_bad_value_changes_nothing(self, state: StateProvider) -> None:
        state.register_variable("a", "integer", 1)
        state.register_variable("b", "integer", 2, constraints={"max": 10})
        state.register_variable("c", "integer", 3)
        before = state.list_variables()
        with pytest.raises(PartialFailure) as info:
            state.update_variables({"a": 10, "b": 99, "c": 30}, {"source": "batch"})
        assert set(info.value.errors) == {"b"}
        assert_validation_error(info.value.errors["b"], name="b", rule="max", value=99)
        assert "b" in str(info.value)
        assert_unchanged(state, before)
        assert state.get_variables(["a", "b", "c"]) == {"a": 1, "b": 2, "c": 3}

    def test_update_variables_unknown_identifier_changes_nothing(
        self, state: StateProvider
    ) -> None:
        state.register_variable("a", "integer", 1)
        state.register_variable("c", "integer", 3)
        before = state.list_variables()
        with pytest.raises(PartialFailure) as info:
            state.update_variables({"a": 10, "nope": 5, "c": 30})
        assert set(info.value.errors) == {"nope"}
        error = info.value.errors["nope"]
        assert isinstance(error, VariableNotFound)
        assert error.variable == "nope"
        assert "nope" in str(info.value)
        assert_unchanged(state, before)

    def test_update_variables_reports_every_failing_entry(self, state: StateProvider) -> None:
        a_id = state.register_variable("a", "integer", 1)
        state.register_variable("b", "string", "ok", constraints={"max_length": 3})
        state.register_variable("c", "integer", 3)
        before = state.list_variables()
        with pytest.raises(PartialFailure) as info:
            state.update_variables({a_id: "ten", "b": "long", "ghost": 1, "c": 30})
        errors = info.value.errors
        assert set(errors) == {a_id, "b", "ghost"}
        assert_validation_error(errors[a_id], name="a", rule="type", value="ten")
        assert_validation_error(errors["b"], name="b", rule="max_length", value="long")
        assert isinstance(errors["ghost"], VariableNotFound)
        for identifier in (a_id, "b", "ghost"):
            assert identifier in str(info.value)
        assert_unchanged(state, before)
