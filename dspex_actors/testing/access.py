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
    def handle(self, open_state: Opener) -> SessionMethods:
        """A handle with Pythonic access (named apart from the kit's ``state``, which
        every other concern's tests use on every backend)."""
        state = open_state()
        if not isinstance(state, SessionMethods):
            pytest.skip(f"{self.provider.__name__} has no Pythonic access (SessionMethods)")
        return state

    def test_items_stand_for_the_methods(self, handle: Any) -> None:
        _seed(handle)
        assert handle["temperature"] == 0.7
        handle["temperature"] = 0.9
        assert handle.get_record("temperature").version == 1
        assert "temperature" in handle and "nothing" not in handle and 1 not in handle
        assert list(handle) == ["temperature", "temp", "max_tokens"]
        assert len(handle) == 3
        del handle["temp"]
        assert "temp" not in handle and len(handle) == 2
        with pytest.raises(VariableNotFound) as missing:
            _ = handle["nothing"]
        assert isinstance(missing.value, KeyError)
        before = handle.list_variables()
        with pytest.raises(ValidationError) as refused:
            handle["temperature"] = 3.5
        assert (refused.value.variable, refused.value.rule) == ("temperature", "max")
        assert_unchanged(handle, before)
        with pytest.raises(VariableNotFound):
            handle["unregistered"] = 1  # assigning sets; it never registers

    def test_an_empty_session_is_still_a_true_handle(self, handle: Any) -> None:
        assert len(handle) == 0 and list(handle) == []
        assert handle

    def test_attributes_stand_for_the_items(self, handle: Any) -> None:
        _seed(handle)
        assert handle.v.max_tokens == 256
        handle.v.max_tokens = 512
        assert handle.get_variable("max_tokens") == 512
        del handle.v.temp
        assert "temp" not in handle
        assert {"temperature", "max_tokens"} <= set(dir(handle.v))
        assert not hasattr(handle.v, "nothing")
        with pytest.raises(AttributeNotFound):
            _ = handle.v.nothing
        with pytest.raises(ValidationError):
            handle.v.max_tokens = 0

    def test_a_batch_applies_its_sets_together_at_its_end(self, handle: Any) -> None:
        _seed(handle)
        with handle.batch() as gathered:
            handle["temperature"] = 1.5
            handle.v.max_tokens = 1024
            assert handle["temperature"] == 1.5  # what the batch holds
            assert handle.get_variable("temperature") == 0.7  # not applied yet
            assert gathered == {"temperature": 1.5, "max_tokens": 1024}
        assert handle.get_variables(["temperature", "max_tokens"]) == {
            "temperature": 1.5,
            "max_tokens": 1024,
        }
        assert handle.get_record("temperature").version == 1
        assert handle.get_record("max_tokens").version == 1

    def test_a_batch_that_fails_applies_nothing(self, handle: Any) -> None:
        _seed(handle)
        before = handle.list_variables()
        with pytest.raises(_Boom), handle.batch():
            handle["temperature"] = 1.5
            raise _Boom
        assert_unchanged(handle, before)
        with pytest.raises(PartialFailure), handle.batch():  # update_variables' error
            handle["temperature"] = 1.5
            handle["max_tokens"] = 0  # breaks its minimum: the whole batch is refused
        assert_unchanged(handle, before)
        with pytest.raises(NotSupported), handle.batch():
            del handle["temp"]
        assert_unchanged(handle, before)

    def test_a_variable_handle_reads_sets_and_follows_one_variable(self, handle: Any) -> None:
        _seed(handle)
        temp = handle.variable("temp")
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
            handle["temperature"] = 1.0  # a name the glob "temp*" would match
            temp.set(5)
        assert [(e.name, e.value) for e in events] == [("temp", 5)]  # type: ignore[attr-defined]
