"""dspex_actors.provider: the StateProvider contract and the helpers that check a backend."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Self

import pytest

from dspex_actors import LocalState, NotSupported, SessionClosed
from dspex_actors.provider import (
    CAPABILITY_KEYS,
    REQUIRED_METHODS,
    StateProvider,
    get_capabilities,
    is_provider,
    validate_provider,
)
from dspex_actors.records import VariableRecord

_SHARED_CAPABILITIES = {
    "atomic_updates": False,
    "streaming": False,
    "persistence": True,
    "distribution": False,
}


class ToyProvider(StateProvider):
    """A minimal concrete provider that starts nothing (no actor, no thread)."""

    __slots__ = ("cleanups", "session_id")

    def __init__(self) -> None:
        self.session_id = "toy"
        self.cleanups = 0

    @classmethod
    def init(
        cls,
        *,
        session_id: str | None = None,
        existing_state: Mapping[str, Any] | None = None,
        **backend_opts: Any,
    ) -> Self:
        return cls()

    def register_variable(
        self,
        name: str,
        type: str,
        initial_value: Any,
        *,
        constraints: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        description: str | None = None,
    ) -> str:
        return "var_toy"

    def get_variable(self, identifier: str) -> Any:
        return None

    def set_variable(
        self,
        identifier: str,
        new_value: Any,
        metadata: Mapping[str, Any] | None = None,
        *,
        expected_version: int | None = None,
    ) -> int:
        return 1

    def list_variables(self, pattern: str | None = None) -> list[VariableRecord]:
        return []

    def get_variables(self, identifiers: Iterable[str]) -> dict[str, Any]:
        return {}

    def update_variables(
        self, updates: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
    ) -> None:
        return None

    def delete_variable(self, identifier: str) -> None:
        return None

    def export_state(self) -> dict[str, Any]:
        return {}

    def import_state(self, exported: Mapping[str, Any]) -> None:
        return None

    @classmethod
    def requires_bridge(cls) -> bool:
        return False

    @classmethod
    def capabilities(cls) -> dict[str, bool]:
        # The same dict every time: get_capabilities must hand out a copy.
        return _SHARED_CAPABILITIES

    def cleanup(self) -> None:
        self.cleanups += 1


class HalfProvider(StateProvider):
    """Implements only some methods, so several stay abstract."""

    def get_variable(self, identifier: str) -> Any:
        return None

    def cleanup(self) -> None:
        return None


class DuckProvider:
    """Has every method but does not subclass StateProvider."""


for _name in REQUIRED_METHODS:
    setattr(DuckProvider, _name, lambda self: None)


class NotAProvider:
    def init(self) -> None:
        return None

    def get_variable(self) -> None:
        return None

    export_state = "not callable"


def _missing_in(message: str) -> set[str]:
    """The method names listed after the colon of validate_provider's message."""
    _, _, listed = message.partition(": ")
    return {name.strip() for name in listed.split(",")}


# -- is_provider -------------------------------------------------------------------------


def test_is_provider_accepts_provider_classes() -> None:
    assert is_provider(LocalState) is True
    assert is_provider(ToyProvider) is True
    assert is_provider(StateProvider) is True


@pytest.mark.parametrize(
    "candidate",
    [ToyProvider(), dict, DuckProvider, NotAProvider, 42, None, "LocalState"],
    ids=["instance", "dict", "duck", "partial-duck", "int", "none", "str"],
)
def test_is_provider_rejects_everything_else(candidate: object) -> None:
    assert is_provider(candidate) is False


# -- get_capabilities ---------------------------------------------------------------------


def test_get_capabilities_of_local_state() -> None:
    assert get_capabilities(LocalState) == {
        "atomic_updates": True,
        "streaming": True,
        "persistence": False,
        "distribution": False,
    }
    assert set(get_capabilities(LocalState)) == set(CAPABILITY_KEYS)


def test_get_capabilities_returns_a_copy() -> None:
    caps = get_capabilities(ToyProvider)
    assert caps == _SHARED_CAPABILITIES
    assert caps is not _SHARED_CAPABILITIES
    caps["streaming"] = True
    caps["extra"] = True
    assert get_capabilities(ToyProvider) == {
        "atomic_updates": False,
        "streaming": False,
        "persistence": True,
        "distribution": False,
    }
    assert _SHARED_CAPABILITIES["streaming"] is False


def test_get_capabilities_copies_local_state_too() -> None:
    caps = get_capabilities(LocalState)
    caps["atomic_updates"] = False
    assert get_capabilities(LocalState)["atomic_updates"] is True


@pytest.mark.parametrize(
    "candidate",
    [ToyProvider(), dict, DuckProvider, 42, None],
    ids=["instance", "dict", "duck", "int", "none"],
)
def test_get_capabilities_rejects_non_providers(candidate: object) -> None:
    with pytest.raises(TypeError, match="not a StateProvider"):
        get_capabilities(candidate)


# -- validate_provider ---------------------------------------------------------------------


def test_validate_provider_passes_for_complete_providers() -> None:
    validate_provider(LocalState)  # raises TypeError on any gap
    validate_provider(ToyProvider)
    assert is_provider(ToyProvider)


def test_validate_provider_names_every_missing_method_of_a_plain_class() -> None:
    with pytest.raises(TypeError) as info:
        validate_provider(NotAProvider)
    expected = set(REQUIRED_METHODS) - {"init", "get_variable"}
    # export_state exists but is not callable: it counts as missing.
    assert "export_state" in expected
    assert _missing_in(str(info.value)) == expected
    assert "NotAProvider" in str(info.value)


def test_validate_provider_names_every_still_abstract_method() -> None:
    with pytest.raises(TypeError) as info:
        validate_provider(HalfProvider)
    assert _missing_in(str(info.value)) == set(REQUIRED_METHODS) - {"get_variable", "cleanup"}
    assert "HalfProvider" in str(info.value)


def test_validate_provider_of_the_abstract_base_names_all_methods() -> None:
    with pytest.raises(TypeError) as info:
        validate_provider(StateProvider)
    assert _missing_in(str(info.value)) == set(REQUIRED_METHODS)


def test_validate_provider_requires_the_subclass() -> None:
    with pytest.raises(TypeError, match="does not subclass"):
        validate_provider(DuckProvider)


@pytest.mark.parametrize(
    "candidate",
    [ToyProvider(), 42, None, "LocalState"],
    ids=["instance", "int", "none", "str"],
)
def test_validate_provider_rejects_non_classes(candidate: object) -> None:
    with pytest.raises(TypeError, match="not a class"):
        validate_provider(candidate)


def test_subscribe_and_unsubscribe_are_optional() -> None:
    assert "subscribe" not in REQUIRED_METHODS
    assert "unsubscribe" not in REQUIRED_METHODS


# -- defaults: streaming and the context manager -----------------------------------------


def test_subscribe_and_unsubscribe_default_to_not_supported() -> None:
    toy = ToyProvider()
    with pytest.raises(NotSupported, match="ToyProvider") as info:
        toy.subscribe("temp*", lambda event: None)
    assert "temp*" in str(info.value)
    with pytest.raises(NotSupported, match="ToyProvider"):
        toy.unsubscribe(object())


def test_local_state_unsubscribe_refuses_what_is_no_subscription() -> None:
    with LocalState.init() as state, pytest.raises(TypeError, match="not a subscription"):
        state.unsubscribe(None)


def test_context_manager_returns_the_provider_and_cleans_up() -> None:
    toy = ToyProvider()
    with toy as entered:
        assert entered is toy
        assert toy.cleanups == 0
    assert toy.cleanups == 1


def test_context_manager_cleans_up_on_error_and_lets_it_propagate() -> None:
    toy = ToyProvider()
    with pytest.raises(RuntimeError, match="inside"), toy:
        raise RuntimeError("inside")
    assert toy.cleanups == 1


def test_context_manager_stops_a_local_state() -> None:
    with LocalState.init() as state:
        state.register_variable("x", "integer", 1)
        assert state.alive
    assert not state.alive
    with pytest.raises(SessionClosed):
        state.get_variable("x")
