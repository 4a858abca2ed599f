"""Pythonic access: items, ``v``, ``batch()`` and ``variable()``, each the method it
stands for, with that method's errors (:mod:`dspex_actors.access`)."""

from __future__ import annotations

from typing import Any

import pytest

from dspex_actors.errors import (
    AttributeNotFound,
    NotSupported,
    PartialFailure,
    ValidationError,
    VariableNotFound,
    VersionConflict,
)
from dspex_actors.methods import SessionMethods
from dspex_actors.testing.base import ContractBase, Opener, assert_unchanged

__all__ = ["AccessContract"]


class _Boom(Exception):
    """Raised inside a batch to leave it."""


def _seed(state: Any) -> None:
    state.register_variable("temperature", "float", 0.7, constraints={"min": 0, "max": 2})
    state.register_variable("temp", "integer", 1)
    state.register_variable("max_tokens", "integer", 256, constraints={"min": 1})


class AccessContract(ContractBase):
    """Item and attribute access, batches and variable handles, on every backend that
    has them (this package's handles and Contexts: ``SessionMethods``)."""

    @pytest.fixture
    def state(self, open_state: Opener) -> SessionMethods:
        state = open_state()
        if not isinstance(state, SessionMethods):
            pytest.skip(f"{self.provider.__name__} has no Pythonic access (SessionMethods)")
        return state

    def test_items_stand_for_the_methods(self, state: Any) -> None:
        _seed(state)
        assert state["temperature"] == 0.7
        state["temperature"] = 0.9
        assert state.get_record("temperature").version == 1
        assert "temperature" in state and "nothing" not in state and 1 not in state
        assert list(state) == ["temperature", "temp", "max_tokens"]
        assert len(state) == 3
        del state["temp"]
        assert "temp" not in state and len(state) == 2
        with pytest.raises(VariableNotFound) as missing:
            _ = state["nothing"]
        assert isinstance(missing.value, KeyError)
        before = state.list_variables()
        with pytest.raises(ValidationError) as refused:
            state["temperature"] = 3.5
        assert (refused.value.variable, refused.value.rule) == ("temperature", "max")
        assert_unchanged(state, before)
        with pytest.raises(VariableNotFound):
            state["unregistered"] = 1  # assigning sets; it never registers

    def test_an_empty_session_is_still_a_true_handle(self, state: Any) -> None:
        assert len(state) == 0 and list(state) == []
        assert state

    def test_attributes_stand_for_the_items(self, state: Any) -> None:
        _seed(state)
        assert state.v.max_tokens == 256
        state.v.max_tokens = 512
        assert state.get_variable("max_tokens") == 512
        del state.v.temp
        assert "temp" not in state
        assert {"temperature", "max_tokens"} <= set(dir(state.v))
        assert not hasattr(state.v, "nothing")
        with pytest.raises(AttributeNotFound):
            _ = state.v.nothing
        with pytest.raises(ValidationError):
            state.v.max_tokens = 0

    def test_a_batch_applies_its_sets_together_at_its_end(self, state: Any) -> None:
        _seed(state)
        with state.batch() as gathered:
            state["temperature"] = 1.5
            state.v.max_tokens = 1024
            assert state["temperature"] == 1.5  # what the batch holds
            assert state.get_variable("temperature") == 0.7  # not applied yet
            assert gathered == {"temperature": 1.5, "max_tokens": 1024}
        assert state.get_variables(["temperature", "max_tokens"]) == {
            "temperature": 1.5,
            "max_tokens": 1024,
        }
        assert state.get_record("temperature").version == 1
        assert state.get_record("max_tokens").version == 1

    def test_a_batch_that_fails_applies_nothing(self, state: Any) -> None:
        _seed(state)
        before = state.list_variables()
        with pytest.raises(_Boom), state.batch():
            state["temperature"] = 1.5
            raise _Boom
        assert_unchanged(state, before)
        with pytest.raises(PartialFailure), state.batch():  # update_variables' error
            state["temperature"] = 1.5
            state["max_tokens"] = 0  # breaks its minimum: the whole batch is refused
        assert_unchanged(state, before)
        with pytest.raises(NotSupported), state.batch():
            del state["temp"]
        assert_unchanged(state, before)

    def test_a_variable_handle_reads_sets_and_follows_one_variable(
        self, open_state: Opener
    ) -> None:
        state: Any = open_state()
        _seed(state)
        temp = state.variable("temp")
        assert (temp.value, temp.version) == (1, 0)
        assert temp.set(2) == 1
        assert temp.record.value == 2
        with pytest.raises(VersionConflict):
            temp.set(3, expected_version=0)
        assert temp.value == 2
        if not self.provider.capabilities()["streaming"]:
            return
        events: list[object] = []
        with temp.subscribe(events.append):
            state["temperature"] = 1.0  # a name the glob "temp*" would match
            temp.set(5)
        assert [(e.name, e.value) for e in events] == [("temp", 5)]  # type: ignore[attr-defined]
