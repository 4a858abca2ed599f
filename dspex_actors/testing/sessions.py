"""Sessions: ids, capabilities, cleanup and the context manager.

Subscriptions (and ``NotSupported`` without streaming) are :mod:`.streaming`'s.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from dspex_actors.errors import StateError
from dspex_actors.provider import CAPABILITY_KEYS, StateProvider, get_capabilities
from dspex_actors.testing.base import ContractBase, Opener, guarded_call

__all__ = ["SessionContract"]


class SessionContract(ContractBase):
    """Session ids, capabilities, cleanup and the context manager."""

    def test_session_id_given_is_kept(self, open_state: Opener) -> None:
        session_id = f"compliance-{uuid.uuid4().hex}"
        state = open_state(session_id=session_id)
        assert state.session_id == session_id
        assert state.export_state()["session_id"] == session_id

    def test_generated_session_ids_are_distinct(self, open_state: Opener) -> None:
        states = [open_state(session_id=None) for _ in range(5)]
        ids = [s.session_id for s in states]
        assert all(isinstance(i, str) and len(i) >= 16 for i in ids), ids
        assert len(set(ids)) == len(ids)
        for state in states:
            assert state.export_state()["session_id"] == state.session_id

    def test_capabilities_are_exact_booleans(self) -> None:
        caps = self.provider.capabilities()
        assert isinstance(caps, dict)
        assert set(caps) >= set(CAPABILITY_KEYS)
        for key in CAPABILITY_KEYS:
            assert type(caps[key]) is bool, f"capabilities()[{key!r}] is {caps[key]!r}"
        assert get_capabilities(self.provider) == caps
        assert type(self.provider.requires_bridge()) is bool

    def test_cleanup_is_idempotent(self, open_state: Opener) -> None:
        state = open_state()
        state.register_variable("a", "integer", 1)
        _, error = guarded_call("cleanup", state.cleanup, self.hang_guard_seconds)
        assert error is None, f"first cleanup raised {error!r}"
        _, error = guarded_call("second cleanup", state.cleanup, self.hang_guard_seconds)
        assert error is None, f"second cleanup raised {error!r}"

    def test_close_is_cleanup(self, open_state: Opener) -> None:
        state = open_state()
        state.register_variable("a", "integer", 1)
        _, error = guarded_call("close()", state.close, self.hang_guard_seconds)
        assert error is None, f"close raised {error!r}"
        _, error = guarded_call("a second close()", state.close, self.hang_guard_seconds)
        assert error is None, f"a second close raised {error!r}"
        _, error = guarded_call(
            "get_variable after close", lambda: state.get_variable("a"), self.hang_guard_seconds
        )
        assert isinstance(error, StateError), f"after close(): {error!r}"

    def test_operations_after_cleanup_raise_promptly(
        self, state: StateProvider, open_state: Opener
    ) -> None:
        var_id = state.register_variable("a", "integer", 1)
        state.cleanup()
        other = open_state()
        other.register_variable("z", "integer", 1)
        other_export = other.export_state()
        operations: dict[str, Callable[[], Any]] = {
            "get_variable": lambda: state.get_variable("a"),
            "get_variable(id)": lambda: state.get_variable(var_id),
            "set_variable": lambda: state.set_variable("a", 2),
            "register_variable": lambda: state.register_variable("b", "integer", 1),
            "list_variables": state.list_variables,
            "get_variables": lambda: state.get_variables(["a"]),
            "update_variables": lambda: state.update_variables({"a": 3}),
            "delete_variable": lambda: state.delete_variable("a"),
            "export_state": state.export_state,
            "import_state": lambda: state.import_state(other_export),
        }
        for label, operation in operations.items():
            result, error = guarded_call(label, operation, self.hang_guard_seconds)
            assert isinstance(error, StateError), (
                f"{label} after cleanup returned {result!r} / raised {error!r}; "
                "expected a StateError"
            )

    def test_context_manager_cleans_up(self, open_state: Opener) -> None:
        state = open_state()
        with state as entered:
            assert entered is state
            entered.register_variable("a", "integer", 1)
            assert entered.get_variable("a") == 1
        _, error = guarded_call(
            "get_variable after with", lambda: state.get_variable("a"), self.hang_guard_seconds
        )
        assert isinstance(error, StateError), f"after the with block: {error!r}"

        failing = open_state()
        with pytest.raises(RuntimeError, match="boom"), failing:
            raise RuntimeError("boom")
        _, error = guarded_call(
            "list_variables after with", failing.list_variables, self.hang_guard_seconds
        )
        assert isinstance(error, StateError), f"after a failing with block: {error!r}"
