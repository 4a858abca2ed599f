"""Change events on the wire: a :class:`~dspex_actors.streaming.Event` <-> the Watch
stream's ``VariableEvent``, its value and metadata msgpack within the receiver's limits."""

from __future__ import annotations

from typing import Any

from dspex_actors.streaming import Event, EventKind, Progress
from dspex_actors.v1 import session_store_pb2 as pb
from dspex_actors.wire import codec

__all__ = ["event_message", "event_of", "progress", "started", "started_message"]

_KINDS: dict[EventKind, Any] = {
    "registered": pb.VariableEvent.KIND_REGISTERED,
    "updated": pb.VariableEvent.KIND_UPDATED,
    "deleted": pb.VariableEvent.KIND_DELETED,
    "overflow": pb.VariableEvent.KIND_OVERFLOW,
    "closed": pb.VariableEvent.KIND_CLOSED,
}
_NAMES: dict[int, EventKind] = {number: kind for kind, number in _KINDS.items()}
_CHANGES = ("registered", "updated", "deleted")


def event_message(event: Event | Progress) -> pb.VariableEvent:
    """One change event (or a watcher's progress) on the wire."""
    if isinstance(event, Progress):
        return pb.VariableEvent(kind=pb.VariableEvent.KIND_PROGRESS, sequence=event.sequence)
    return pb.VariableEvent(
        kind=_KINDS[event.kind],
        session_id=event.session_id,
        var_id=event.variable_id or "",
        name=event.name or "",
        value=codec.pack(event.value) if event.kind in ("registered", "updated") else b"",
        version=event.version or 0,
        metadata=codec.pack_map(event.metadata),
        timestamp=event.timestamp or 0.0,
        sequence=event.sequence,
    )


def event_of(message: pb.VariableEvent, max_bytes: int) -> Event:
    """The event a message carries, its payloads decoded within ``max_bytes``
    (``StateError`` for what cannot be decoded); a kind this client does not know
    reads as ``updated``."""
    kind = _NAMES.get(message.kind, "updated")
    changed = kind in ("registered", "updated")
    return Event(
        message.session_id,
        message.sequence,
        kind,
        message.var_id or None,
        message.name or None,
        codec.unpack(message.value, max_bytes=max_bytes, what="event value")
        if message.value
        else None,
        message.version if kind in _CHANGES else None,
        codec.unpack_map(message.metadata, max_bytes=max_bytes, what="metadata") or {}
        if changed
        else None,
        message.timestamp or None,
    )


def started_message(session_id: str, start: int, incarnation: str) -> pb.VariableEvent:
    """A Watch stream's first message: where it starts, and the session's incarnation."""
    return pb.VariableEvent(
        kind=pb.VariableEvent.KIND_STARTED,
        session_id=session_id,
        sequence=start,
        incarnation=incarnation,
    )


def progress(message: pb.VariableEvent) -> int | None:
    """The sequence a ``KIND_PROGRESS`` message says the server has read up to; None
    for any other message."""
    if message.kind != pb.VariableEvent.KIND_PROGRESS:
        return None
    return message.sequence


def started(message: pb.VariableEvent) -> tuple[int, str] | None:
    """(start, incarnation) of a stream's first message; None for any other message."""
    if message.kind != pb.VariableEvent.KIND_STARTED:
        return None
    return message.sequence, message.incarnation
