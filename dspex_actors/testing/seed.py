"""The seed's four tests (``DSPex.Bridge.StateProviderTest``), translated."""

from __future__ import annotations

import pytest

from dspex_actors.errors import VariableNotFound
from dspex_actors.provider import is_provider, validate_provider
from dspex_actors.testing.base import ContractBase, Opener

__all__ = ["SeedContract"]


class SeedContract(ContractBase):
    """The seed's four tests (``DSPex.Bridge.StateProviderTest``), translated."""

    def test_implements_all_required_callbacks(self) -> None:
        validate_provider(self.provider)  # raises TypeError naming what is missing
        assert is_provider(self.provider)

    def test_basic_variable_lifecycle(self, open_state: Opener) -> None:
        state = open_state(session_id="test")

        var_id = state.register_variable("test_var", "string", "hello")
        assert isinstance(var_id, str)
        assert var_id

        assert state.get_variable("test_var") == "hello"
        assert state.get_variable(var_id) == "hello"

        state.set_variable("test_var", "world", {})
        assert state.get_variable("test_var") == "world"

        state.delete_variable("test_var")
        with pytest.raises(VariableNotFound):
            state.get_variable("test_var")

        assert state.cleanup() is None

    def test_batch_operations(self, open_state: Opener) -> None:
        state = open_state(session_id="test")
        state.register_variable("a", "integer", 1)
        state.register_variable("b", "integer", 2)
        state.register_variable("c", "integer", 3)

        values = state.get_variables(["a", "b", "c"])
        assert values["a"] == 1
        assert values["b"] == 2
        assert values["c"] == 3

        assert state.update_variables({"a": 10, "b": 20, "c": 30}, {}) is None

        assert state.get_variable("a") == 10
        assert state.get_variable("b") == 20
        assert state.get_variable("c") == 30
        state.cleanup()

    def test_export_and_import_state(self, open_state: Opener) -> None:
        state1 = open_state(session_id="test")
        state1.register_variable("x", "float", 3.14)
        state1.register_variable("y", "string", "test")

        exported = state1.export_state()
        assert exported["session_id"] == "test"
        assert len(exported["variables"]) == 2

        state2 = open_state(session_id="test2")
        assert state2.import_state(exported) is None

        assert state2.get_variable("x") == 3.14
        assert state2.get_variable("y") == "test"

        state1.cleanup()
        state2.cleanup()

    def test_capabilities_and_metadata(self) -> None:
        caps = self.provider.capabilities()
        assert isinstance(caps, dict)
        assert isinstance(caps["atomic_updates"], bool)
        assert isinstance(caps["streaming"], bool)
        assert isinstance(self.provider.requires_bridge(), bool)
