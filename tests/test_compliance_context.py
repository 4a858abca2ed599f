"""The compliance kit against a Context, local and after its switch to the bridge.

A Context is not a StateProvider class (a Supervisor makes it), so a thin adapter
gives the kit one: each ``init`` starts a Supervisor and one context on it, and
every contract method is the Context's own. Two ways: a context that stays local,
and one moved to the embedded bridge right after it starts — so the kit's checks
(``get_record``, globbed listings, errors, batches, streaming...) hold for what
users actually hold, before and after a switch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Self

from dspex_actors import LocalState, Supervisor
from dspex_actors.exports import ExportColumns
from dspex_actors.provider import StateProvider
from dspex_actors.records import VariableRecord
from dspex_actors.supervision import Context
from dspex_actors.testing import StateProviderContract


class ContextProvider(StateProvider):
    """A StateProvider whose every call is a Context's (its supervisor owned here)."""

    bridged: ClassVar[bool] = False

    def __init__(self, supervisor: Supervisor, context: Context) -> None:
        self._supervisor = supervisor
        self.context = context
        self.session_id = context.session_id

    @classmethod
    def init(
        cls,
        *,
        session_id: str | None = None,
        existing_state: Mapping[str, Any] | None = None,
        **backend_opts: Any,
    ) -> Self:
        if backend_opts:
            raise TypeError(f"unknown options: {', '.join(backend_opts)}")
        supervisor = Supervisor.start()
        try:
            if session_id is not None:
                LocalState.init(session_id=session_id).cleanup()  # the same id checks
            context = supervisor.start_context(session_id=session_id)
            if cls.bridged:
                context.ensure_bridged()
            if existing_state is not None:
                context.import_state(existing_state)
        except BaseException:
            supervisor.stop()
            raise
        return cls(supervisor, context)

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
        return self.context.register_variable(
            name,
            type,
            initial_value,
            constraints=constraints,
            metadata=metadata,
            description=description,
        )

    def get_variable(self, identifier: str) -> Any:
        return self.context.get_variable(identifier)

    def get_record(self, identifier: str) -> VariableRecord:
        return self.context.get_record(identifier)

    def set_variable(
        self,
        identifier: str,
        new_value: Any,
        metadata: Mapping[str, Any] | None = None,
        *,
        expected_version: int | None = None,
    ) -> int:
        return self.context.set_variable(
            identifier, new_value, metadata, expected_version=expected_version
        )

    def list_variables(self, pattern: str | None = None) -> list[dict[str, Any]]:
        return self.context.list_variables(pattern)

    def get_variables(self, identifiers: Iterable[str]) -> dict[str, Any]:
        return self.context.get_variables(identifiers)

    def update_variables(
        self, updates: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
    ) -> None:
        self.context.update_variables(updates, metadata)

    def delete_variable(self, identifier: str) -> None:
        self.context.delete_variable(identifier)

    def export_state(self) -> dict[str, Any]:
        return self.context.export_state()

    def import_state(self, exported: Mapping[str, Any]) -> None:
        self.context.import_state(exported)

    def export_columns(self) -> ExportColumns:
        return self.context.export_columns()

    def import_columns(self, columns: ExportColumns) -> None:
        self.context.import_columns(columns)

    def subscribe(self, pattern: str | None, subscriber: Any) -> Any:
        return self.context.subscribe(pattern, subscriber)

    def unsubscribe(self, subscription: Any) -> None:
        self.context.unsubscribe(subscription)

    @classmethod
    def requires_bridge(cls) -> bool:
        return cls.bridged

    @classmethod
    def capabilities(cls) -> dict[str, bool]:
        return {
            "atomic_updates": True,
            "streaming": True,
            "persistence": False,
            "distribution": cls.bridged,
        }

    def cleanup(self) -> None:
        self._supervisor.stop()  # stops the context too; idempotent


class BridgedContextProvider(ContextProvider):
    bridged: ClassVar[bool] = True


class TestLocalContext(StateProviderContract):
    provider = ContextProvider


class TestBridgedContext(StateProviderContract):
    provider = BridgedContextProvider
