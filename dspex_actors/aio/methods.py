"""The public methods of every asyncio handle, written once over ``await run(op)``.

The same operations as the sync API (:mod:`dspex_actors.messages`, each defined once
with its checks and its wire form), the same argument checks, the same errors: only
the way an operation runs differs, as redis-py's ``redis.asyncio`` and httpx's
``AsyncClient`` differ from their sync twins only in their I/O. Each method here is
its sync twin's (:class:`~dspex_actors.methods.SessionMethods`) with ``await``;
``tests/test_aio.py`` holds the two lists of names and signatures equal, so they
cannot drift apart.

Change events are an async iterator (``async for event in state.events("temp*")``)
instead of a subscriber thread; ``aclose()`` (or leaving ``async with``) ends a
handle as ``cleanup()`` ends its sync twin.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping
from typing import Any, Self, TypeVar

from dspex_actors.aio.following import EventStream
from dspex_actors.exports import ExportColumns, check_shape, columns_of
from dspex_actors.messages import (
    CloseSession,
    DeleteVariable,
    Digest,
    ExportSession,
    ExportState,
    GetRecord,
    GetSession,
    GetVariable,
    GetVariables,
    HasVariable,
    Heartbeat,
    ImportState,
    ListVariables,
    OpenSession,
    Operation,
    RegisterVariable,
    Settle,
    SetVariable,
    UpdateVariables,
)
from dspex_actors.records import Opened, VariableRecord, check_pattern

__all__ = ["ASYNC_METHODS", "AsyncRemoteSessionMethods", "AsyncSessionMethods"]

R = TypeVar("R")

ASYNC_METHODS = (
    "get_variable",
    "get_variables",
    "get_record",
    "has_variable",
    "list_variables",
    "export_state",
    "export_columns",
    "digest",
    "session_info",
    "register_variable",
    "set_variable",
    "update_variables",
    "delete_variable",
    "import_state",
    "import_columns",
    "heartbeat",
)
"""The methods an asyncio handle shares, by name and signature, with its sync twin."""


class AsyncSessionMethods(abc.ABC):
    """Every session method as a coroutine, over one abstract :meth:`run`."""

    session_id: str

    @abc.abstractmethod
    async def run(self, operation: Operation[R]) -> R:
        """Run one operation on the session; raise its ``StateError``."""

    @abc.abstractmethod
    def events(self, pattern: str | None = None, start: int | None = None) -> EventStream:
        """The session's change events whose names match the glob ``pattern`` (None:
        all), from sequence ``start`` (None: from when it opens), until ``closed``:
        ``async for event in state.events(...)``, or ``async with`` to open it first
        (:class:`~dspex_actors.aio.following.EventStream`)."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """End this handle: an owner closes its session, an attached one detaches."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- reads ------------------------------------------------------------------------

    async def get_variable(self, identifier: str) -> Any:
        return await self.run(GetVariable(identifier))

    async def get_variables(self, identifiers: Iterable[str]) -> dict[str, Any]:
        return await self.run(GetVariables(list(identifiers)))

    async def get_record(self, identifier: str) -> VariableRecord:
        return await self.run(GetRecord(identifier))

    async def has_variable(self, identifier: str) -> bool:
        """Whether a variable exists, by name or id."""
        return await self.run(HasVariable(identifier))

    async def list_variables(self, pattern: str | None = None) -> list[VariableRecord]:
        return await self.run(ListVariables(check_pattern(pattern)))

    async def export_state(self) -> dict[str, Any]:
        return await self.run(ExportState())

    async def export_columns(self) -> ExportColumns:
        """The export as columns (see the sync twin)."""
        columns = await self.run(ExportSession())
        check_shape(columns)
        return columns

    async def digest(self) -> bytes:
        return await self.run(Digest())

    async def session_info(self) -> dict[str, Any]:
        """The session as what keeps it sees it (see the sync twin)."""
        return (await self.run(GetSession()))._asdict()

    # -- writes -----------------------------------------------------------------------

    async def register_variable(
        self,
        name: str,
        type: str,  # the contract's word, shadowing the builtin here only
        initial_value: Any,
        *,
        constraints: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        description: str | None = None,
    ) -> str:
        return await self.run(
            RegisterVariable(name, type, initial_value, constraints, metadata, description)
        )

    async def set_variable(
        self,
        identifier: str,
        new_value: Any,
        metadata: Mapping[str, Any] | None = None,
        *,
        expected_version: int | None = None,
    ) -> int:
        return await self.run(SetVariable(identifier, new_value, metadata, expected_version))

    async def update_variables(
        self, updates: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
    ) -> None:
        if not isinstance(updates, Mapping):
            raise TypeError(f"updates must be a mapping, got {type(updates).__name__}")
        await self.run(UpdateVariables(dict(updates), metadata))

    async def delete_variable(self, identifier: str) -> None:
        await self.run(DeleteVariable(identifier))

    async def import_state(self, exported: Mapping[str, Any]) -> None:
        await self.run(ImportState(columns_of(exported)))

    async def import_columns(self, columns: ExportColumns) -> None:
        await self.run(ImportState(columns))

    # -- lifecycle --------------------------------------------------------------------

    async def heartbeat(self) -> float | None:
        """Keep a session that expires when idle alive: when it would expire (epoch
        seconds), None for one that never does."""
        return await self.run(Heartbeat())


class AsyncRemoteSessionMethods(AsyncSessionMethods):
    """The methods of an asyncio handle on a session a store keeps."""

    async def _open_session(self, *, create: bool, pending: bool) -> Opened:
        """Attach to the handle's session, or create it: what opening does first."""
        return await self.run(OpenSession(create, pending))

    async def settle(self, request_id: str, age: float, within: float | None = None) -> bool:
        """Whether this handle's write ``request_id``, first sent ``age`` seconds ago,
        was applied; after False it never will be (see the sync twin)."""
        return await self.run(Settle(request_id, age, within))

    async def close_remote(self) -> None:
        """Close this handle's incarnation of the session where it is kept, now."""
        await self.run(CloseSession())
