"""SessionColumns on the wire: :class:`~dspex_actors.exports.ExportColumns` to and
from the proto message that ImportSession and ExportSession carry.

Ids, names, versions and timestamps travel as repeated proto fields (decoded in C);
values, metadata and constraints as msgpack (an array of all the values, an array of
all the per-variable metadata maps, one map per definition), decoded within the
receiver's size limits like every other payload. Decoding checks only the encoding;
the session actor checks the contents, exactly as for an export map.
"""

from __future__ import annotations

from typing import Any

from dspex_actors.errors import InvalidExport, StateError
from dspex_actors.exports import ExportColumns, check_lengths, check_shape
from dspex_actors.imported import records_from_columns
from dspex_actors.session import SessionTable
from dspex_actors.v1 import session_store_pb2 as pb
from dspex_actors.vartypes import all_of_type
from dspex_actors.wire import codec

__all__ = ["PIECE", "columns_from_message", "columns_in_pieces", "columns_to_message"]

PIECE = 1_000
"""Variables per piece when a large export is serialized a piece at a time."""


def columns_to_message(columns: ExportColumns) -> pb.SessionColumns:
    """The message for ``columns``; for what cannot be encoded, the error a local
    import of them would raise (else ``InvalidExport``).

    protobuf would quietly turn bytes into a string field and True into a number
    field; columns whose ids, names, types, versions or timestamps are not exactly
    of their field's type go through the session's checks first, so the bridge
    refuses what a local import refuses.
    """
    if not _exactly_typed(columns):
        records_from_columns(columns, SessionTable(columns.session_id))
    try:
        return pb.SessionColumns(
            session_id=columns.session_id,
            metadata=codec.pack_map(columns.metadata),
            ids=columns.ids,
            names=columns.names,
            definitions=[
                pb.VariableDefinition(type=type_name, constraints=codec.pack_map(constraints))
                for type_name, constraints in columns.definitions
            ],
            definition=columns.definition,
            values=codec.pack(columns.values),
            versions=columns.versions,
            created_at=columns.created_at,
            last_updated_at=columns.last_updated_at,
            variable_metadata=codec.pack(columns.variable_metadata),
        )
    except (TypeError, ValueError, OverflowError) as exc:
        # Rare, so the checks run only now: they name the variable and the rule.
        try:
            records_from_columns(columns, SessionTable(columns.session_id))
        except StateError as precise:
            raise precise from exc
        raise InvalidExport(f"export is not plain data the bridge can carry: {exc}") from exc


def columns_in_pieces(columns: ExportColumns) -> bytes:
    """The encoded message :func:`columns_to_message` builds, a piece at a time:
    the payloads, then the repeated fields :data:`PIECE` variables per message
    (protobuf reads concatenated messages as one, their repeated fields joined), so
    no single call builds or serializes the whole session."""
    if not _exactly_typed(columns):
        return columns_to_message(columns).SerializeToString()  # raises what it must
    try:
        values = codec.pack_items(columns.values)
        variable_metadata = codec.pack_items(columns.variable_metadata)
    except (TypeError, ValueError, OverflowError):
        return columns_to_message(columns).SerializeToString()  # raises what it must
    pieces = [
        pb.SessionColumns(
            session_id=columns.session_id,
            metadata=codec.pack_map(columns.metadata),
            definitions=[
                pb.VariableDefinition(type=type_name, constraints=codec.pack_map(constraints))
                for type_name, constraints in columns.definitions
            ],
            values=values,
            variable_metadata=variable_metadata,
        ).SerializeToString()
    ]
    for start in range(0, columns.variable_count, PIECE):
        end = start + PIECE
        pieces.append(
            pb.SessionColumns(
                ids=columns.ids[start:end],
                names=columns.names[start:end],
                definition=columns.definition[start:end],
                versions=columns.versions[start:end],
                created_at=columns.created_at[start:end],
                last_updated_at=columns.last_updated_at[start:end],
            ).SerializeToString()
        )
    return b"".join(pieces)


def _exactly_typed(columns: ExportColumns) -> bool:
    check_shape(columns)
    return (
        all_of_type(columns.ids, str)
        and all_of_type(columns.names, str)
        and all_of_type((type_name for type_name, _ in columns.definitions), str)
        and all_of_type(columns.versions, int)
        and all_of_type(columns.created_at, float)
        and all_of_type(columns.last_updated_at, float)
    )


def columns_from_message(
    message: pb.SessionColumns, *, max_bytes: int, max_item_bytes: int | None = None
) -> ExportColumns:
    """Columns decoded from a peer's message within the size limits (``LimitExceeded``);
    a malformed payload raises ``ValidationError`` or ``InvalidExport``.

    The repeated fields' lengths are checked before anything is decoded into Python
    objects, and there may be no more definitions than variables, so a message
    cannot make the receiver build much more than its variables need.
    """
    count = len(message.ids)
    check_lengths(
        {
            "ids": count,
            "names": len(message.names),
            "definition": len(message.definition),
            "versions": len(message.versions),
            "created_at": len(message.created_at),
            "last_updated_at": len(message.last_updated_at),
        }
    )
    if len(message.definitions) > count:
        raise InvalidExport(
            f"export lists {len(message.definitions)} definitions for {count} variables"
        )

    def array(data: bytes, what: str) -> list[Any]:
        decoded = (
            codec.unpack(data, max_bytes=max_bytes, max_item_bytes=max_item_bytes, what=what)
            if data
            else []
        )
        if not isinstance(decoded, list):
            raise InvalidExport(f"export {what} must be a msgpack array")
        return decoded

    def mapping(data: bytes, what: str) -> dict[str, Any]:
        return codec.unpack_map(data, max_bytes=max_item_bytes or max_bytes, what=what) or {}

    return ExportColumns(
        message.session_id,
        mapping(message.metadata, "metadata"),
        list(message.ids),
        list(message.names),
        [(d.type, mapping(d.constraints, "constraints")) for d in message.definitions],
        list(message.definition),
        array(message.values, "values"),
        list(message.versions),
        list(message.created_at),
        list(message.last_updated_at),
        array(message.variable_metadata, "variable metadata"),
    )  # not shape-checked here: the import checks it in the actor; other callers
    # (BridgedState.export_columns) call exports.check_shape themselves
