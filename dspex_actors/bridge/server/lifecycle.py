"""A session's lifecycle as its server sees it: each event logged once and counted.

The events: a session opened (``created``, or ``attached`` to), ``closed`` by a
call, ``imported`` into (with ``migration`` for a migration's copy, which was
opened ``pending``), ``committed`` (a migration's copy made visible),
``expired`` (idle past its TTL, closed by the reaper) and ``crashed`` (closed
after its actor died too often). Which answered calls are events is read from
the request's wire type, so the table below names no operation.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf.message import Message

from dspex_actors.bridge.server import logs
from dspex_actors.bridge.server.metrics import ServerMetrics
from dspex_actors.records import Opened
from dspex_actors.v1 import session_store_pb2 as pb

__all__ = ["EVENTS", "answered", "crashed", "expired"]

EVENTS: dict[type[Message], str] = {
    pb.OpenSessionRequest: "opened",
    pb.CloseSessionRequest: "closed",
    pb.CommitSessionRequest: "committed",
    pb.ImportSessionRequest: "imported",
}
"""The requests that, answered, are a lifecycle event of their session."""


def answered(
    event: str,
    method: str,
    session_id: str,
    operation: Any,
    result: Any,
    store_kind: str,
    metrics: ServerMetrics | None,
) -> None:
    """A call of :data:`EVENTS` succeeded: its line, and its count."""
    fields: dict[str, Any] = {}
    counted = event
    if isinstance(result, Opened):  # its id, when the server chose one
        session_id = result.session_id
        counted = "created" if result.created else "attached"
        fields = {
            "created": result.created,
            "pending": bool(operation.pending),
            "incarnation": result.incarnation,
        }
    elif event == "imported":
        fields = {
            "variables": operation.columns.variable_count,
            "migration": operation.continue_from is not None,
        }
    logs.session_event(event, session_id, method, store=store_kind, **fields)
    if metrics is not None:
        metrics.lifecycle_event(counted)


def expired(session_ids: Iterable[str], store_kind: str, metrics: ServerMetrics | None) -> None:
    """The reaper closed these sessions, idle past their TTL (on the server's loop)."""
    count = 0
    for session_id in session_ids:
        logs.session_event("expired", session_id, reason="idle", store=store_kind)
        count += 1
    if count and metrics is not None:
        metrics.lifecycle_event("expired", count)


def crashed(session_id: str, failure: BaseException, store_kind: str) -> None:
    """A session was closed after its actor died too often: its line (the failure's
    class only: its message may quote a value). Counted by the caller, on the loop."""
    logs.session_event(
        "closed", session_id, reason="crashed", error=type(failure).__name__, store=store_kind
    )
