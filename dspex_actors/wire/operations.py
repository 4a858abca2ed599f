"""Each operation's wire form, registered once: its RPC, how a client sends it and reads
the reply, how a server decodes it and answers.

Both halves of the bridge are built on the two tables these registrations fill
(:data:`~dspex_actors.wire.forms.RPCS` and :data:`~dspex_actors.wire.forms.SENDS`)
and nothing else: the server serves each RPC through one dispatch (decode, run on
the store, answer), on its own or on the Calls stream; a client's ``run(op)`` encodes,
sends, and reads the reply. Which RPCs may travel on the Calls stream is read from
the ``.proto`` itself (the ``CallRequest`` body's fields). Adding an operation is one
registration here, its message in :mod:`dspex_actors.messages`, its method in
:mod:`dspex_actors.methods`, and its RPC in the ``.proto``.

**Length.** Past 600 lines on purpose: one registration per RPC, each a screenful,
and the point of the module is that they are read side by side (what a client
encodes is what the server decodes, next to it). Split by kind, a change to one
wire rule would have to be made in several files again.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from dspex_actors import vartypes
from dspex_actors.bulk import BULK_ITEMS, gc_paused
from dspex_actors.errors import PartialFailure, StateError, ValidationError
from dspex_actors.exports import ExportColumns, columns_of, export_of
from dspex_actors.messages import (
    CloseSession,
    CommitSession,
    DeleteVariable,
    ExportSession,
    ExportState,
    GetRecord,
    GetSession,
    GetVariable,
    GetVariables,
    GetVersioned,
    HasVariable,
    Heartbeat,
    ImportState,
    ListVariables,
    OpenSession,
    Operation,
    ReadOperation,
    RegisterVariable,
    Settle,
    SetVariable,
    UpdateVariables,
)
from dspex_actors.records import Opened, SessionInfo, VariableRecord, check_pattern
from dspex_actors.text import utf8_encodable
from dspex_actors.v1 import session_store_pb2 as pb
from dspex_actors.wire import codec
from dspex_actors.wire.columns import (
    columns_from_message,
    columns_in_pieces,
    columns_to_message,
)
from dspex_actors.wire.forms import (
    CALL_FIELDS,
    RPCS,
    SENDS,
    Copy,
    Ids,
    Limited,
    Rpc,
    Send,
    Settled,
    batch_error,
    embedded,
    identifier_of,
    metadata_of,
    record_message,
    record_of,
    serve,
    unencodable,
    unpack_within,
)

__all__ = ["CALL_FIELDS", "PROMPT_FIELDS", "RPCS", "SENDS"]


# -- reads --------------------------------------------------------------------------------


def _get_request(identifier: Any, ids: Ids, full: bool) -> pb.GetVariableRequest:
    return pb.GetVariableRequest(
        session_id=ids.session_id,
        identifier=identifier_of(identifier, ids),
        full=full,
        incarnation=ids.incarnation,
    )


def _answer_get(op: Operation[Any], result: Any) -> pb.GetVariableResponse:
    if isinstance(result, VariableRecord):
        return pb.GetVariableResponse(
            value=codec.pack(result.value), version=result.version, record=record_message(result)
        )
    value, version = result
    return pb.GetVariableResponse(value=codec.pack(value), version=version)


def _seen_version(op: GetVariable | GetRecord, response: Any, result: Any, copy: Copy) -> None:
    copy.expect(op.identifier, response.version)  # the server was this new: never older again


_GET = serve(
    Rpc(
        "GetVariable",
        pb.GetVariableRequest,
        pb.GetVariableResponse,
        lambda r, _: GetRecord(r.identifier) if r.full else GetVersioned(r.identifier),
        _answer_get,
    )
)
SENDS[GetVariable] = Send(
    _GET,
    lambda op, ids: _get_request(op.identifier, ids, False),
    lambda op, r, max_bytes: unpack_within(r.value, max_bytes, "value"),
    _seen_version,
)
SENDS[GetRecord] = Send(
    _GET,
    lambda op, ids: _get_request(op.identifier, ids, True),
    lambda op, r, max_bytes: record_of(r.record, max_bytes),
    _seen_version,
)


def _get_many_request(op: GetVariables, ids: Ids) -> pb.GetVariablesRequest:
    wanted = [i for i in op.identifiers if isinstance(i, str) and utf8_encodable(i)]
    return pb.GetVariablesRequest(
        session_id=ids.session_id, identifiers=wanted, incarnation=ids.incarnation
    )


SENDS[GetVariables] = Send(
    serve(
        Rpc(
            "GetVariables",
            pb.GetVariablesRequest,
            pb.GetVariablesResponse,
            lambda r, _: GetVariables(list(r.identifiers)),
            lambda op, values: pb.GetVariablesResponse(values=codec.pack(values)),
        )
    ),
    _get_many_request,
    lambda op, r, max_bytes: unpack_within(r.values, max_bytes, "values"),
)


def _has_request(op: HasVariable, ids: Ids) -> pb.HasVariableRequest:
    identifier = op.identifier
    if not isinstance(identifier, str) or not utf8_encodable(identifier):
        raise Settled(False)  # no name or id can be that
    return pb.HasVariableRequest(
        session_id=ids.session_id, identifier=identifier, incarnation=ids.incarnation
    )


SENDS[HasVariable] = Send(
    serve(
        Rpc(
            "HasVariable",
            pb.HasVariableRequest,
            pb.HasVariableResponse,
            lambda r, _: HasVariable(r.identifier),
            lambda op, exists: pb.HasVariableResponse(exists=exists),
        )
    ),
    _has_request,
    lambda op, r, max_bytes: bool(r.exists),
)


_VARIABLES_FIELD = pb.ListVariablesResponse.DESCRIPTOR.fields_by_name["variables"].number


def _list_request(op: ListVariables, ids: Ids) -> pb.ListVariablesRequest:
    if op.pattern is not None and not utf8_encodable(op.pattern):
        raise Settled([])  # not UTF-8: no name can match it
    return pb.ListVariablesRequest(
        session_id=ids.session_id, pattern=op.pattern or "", incarnation=ids.incarnation
    )


SENDS[ListVariables] = Send(
    serve(
        Rpc(
            "ListVariables",
            pb.ListVariablesRequest,
            pb.ListVariablesResponse,
            lambda r, _: ListVariables(check_pattern(r.pattern)),
            lambda op, records: pb.ListVariablesResponse(
                variables=[record_message(r) for r in records]
            ),
            lambda op, records: b"".join(
                [
                    embedded(
                        _VARIABLES_FIELD,
                        record_message(r).SerializeToString(),
                    )
                    for r in records
                ]
            ),
        )
    ),
    _list_request,
    lambda op, r, max_bytes: [record_of(v, max_bytes) for v in r.variables],
    lambda op, r, records, copy: _seen_listed(records, copy),
)


def _seen_listed(records: Iterable[VariableRecord | Mapping[str, Any]], copy: Copy) -> None:
    """A listing or export the server answered: each variable was at least this new
    (a later read, from the copy, must not be older)."""
    copy.expect_all(
        (r.id, r.version) if isinstance(r, VariableRecord) else (r["id"], r["version"])
        for r in records
    )


def _export_request(op: Operation[Any], ids: Ids) -> pb.ExportSessionRequest:
    """Both exports ask for columns (the compact form); ExportState converts them."""
    return pb.ExportSessionRequest(
        session_id=ids.session_id, columnar=True, incarnation=ids.incarnation
    )


def _answer_export(op: Operation[Any], result: Any) -> pb.ExportSessionResponse:
    if isinstance(result, ExportColumns):
        with gc_paused(result.variable_count >= BULK_ITEMS):
            return pb.ExportSessionResponse(columns=columns_to_message(result))
    return pb.ExportSessionResponse(state=codec.pack(result))


def _export_in_pieces(op: Operation[Any], result: Any) -> bytes:
    if isinstance(result, ExportColumns):
        with gc_paused(result.variable_count >= BULK_ITEMS):
            return embedded(_COLUMNS_FIELD, columns_in_pieces(result))
    return _answer_export(op, result).SerializeToString()


_COLUMNS_FIELD = pb.ExportSessionResponse.DESCRIPTOR.fields_by_name["columns"].number


def _columns_of_reply(r: pb.ExportSessionResponse, max_bytes: int) -> ExportColumns:
    """The columns an export's reply carries (a server that only has maps answers one)."""
    if r.WhichOneof("form") != "columns":
        return columns_of(unpack_within(r.state, max_bytes, "exported state"))
    with gc_paused(len(r.columns.ids) >= BULK_ITEMS):
        return columns_from_message(r.columns, max_bytes=max_bytes)


_EXPORT = serve(
    Rpc(
        "ExportSession",
        pb.ExportSessionRequest,
        pb.ExportSessionResponse,
        lambda r, _: ExportSession() if r.columnar else ExportState(),
        _answer_export,
        _export_in_pieces,
    )
)
SENDS[ExportSession] = Send(
    _EXPORT,
    _export_request,
    lambda op, r, max_bytes: _columns_of_reply(r, max_bytes),
)
SENDS[ExportState] = Send(
    _EXPORT,
    _export_request,
    lambda op, r, max_bytes: export_of(_columns_of_reply(r, max_bytes)),  # checks the shape
    lambda op, r, exported, copy: _seen_listed(exported["variables"].values(), copy),
)


# -- writes -------------------------------------------------------------------------------


def _register_error(op: RegisterVariable, exc: Exception) -> ValidationError:
    """The error the session would raise for a registration that cannot be sent.

    The checks are those of ``vartypes``, so a local and a bridged session reject
    the same input with the same error (a name that is not UTF-8 fails check_name);
    what passes them but still cannot be sent is named here.
    """
    name = op.name
    vartypes.check_name(name)
    validator = vartypes.compile_type(name, op.type_name, op.constraints)
    validator.check(name, op.initial_value)
    vartypes.check_description(name, op.description)
    try:
        codec.pack_map(op.constraints)
    except (TypeError, ValueError, OverflowError) as error:
        return unencodable(name, "constraints", op.constraints, error, rule="constraints")
    if op.description is not None and not utf8_encodable(op.description):
        return unencodable(name, "description", op.description, exc, rule="description")
    return unencodable(name, "value", op.initial_value, exc)


def _register_request(op: RegisterVariable, ids: Ids) -> pb.RegisterVariableRequest:
    try:
        request = pb.RegisterVariableRequest(
            session_id=ids.session_id,
            name=op.name,
            type=op.type_name,
            initial_value=codec.pack(op.initial_value),
            constraints=codec.pack_map(op.constraints),
            description=op.description,
            request_id=ids.request_id,
            incarnation=ids.incarnation,
        )
    except (TypeError, ValueError, OverflowError) as exc:
        raise _register_error(op, exc) from exc
    request.metadata = metadata_of(op.name, op.metadata)
    return request


def _decode_register(r: pb.RegisterVariableRequest, limited: Limited) -> RegisterVariable:
    name = r.name
    return RegisterVariable(
        name,
        r.type,
        limited.value(r.initial_value, name),
        limited.map(r.constraints, "constraints", name),
        limited.map(r.metadata, "metadata", name),
        r.description if r.HasField("description") else None,
    )


def _seen_registered(op: RegisterVariable, response: Any, var_id: str, copy: Copy) -> None:
    copy.expect(var_id, 0)
    copy.expect(op.name, 0)


SENDS[RegisterVariable] = Send(
    serve(
        Rpc(
            "RegisterVariable",
            pb.RegisterVariableRequest,
            pb.RegisterVariableResponse,
            _decode_register,
            lambda op, var_id: pb.RegisterVariableResponse(var_id=var_id),
        )
    ),
    _register_request,
    lambda op, r, max_bytes: str(r.var_id),
    _seen_registered,
)


def _set_request(op: SetVariable, ids: Ids) -> pb.SetVariableRequest:
    identifier = identifier_of(op.identifier, ids)
    expected = vartypes.check_expected_version(identifier, op.expected_version)
    try:
        value = codec.pack(op.value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise unencodable(identifier, "value", op.value, exc) from exc
    return pb.SetVariableRequest(
        session_id=ids.session_id,
        identifier=identifier,
        value=value,
        metadata=metadata_of(identifier, op.metadata),
        expected_version=expected,
        request_id=ids.request_id,
        incarnation=ids.incarnation,
    )


def _decode_set(r: pb.SetVariableRequest, limited: Limited) -> SetVariable:
    identifier = r.identifier
    return SetVariable(
        identifier,
        limited.value(r.value, identifier),
        limited.map(r.metadata, "metadata", identifier),
        r.expected_version if r.HasField("expected_version") else None,
    )


def _seen_set(op: SetVariable, response: Any, version: int, copy: Copy) -> None:
    copy.expect(op.identifier, version)


SENDS[SetVariable] = Send(
    serve(
        Rpc(
            "SetVariable",
            pb.SetVariableRequest,
            pb.SetVariableResponse,
            _decode_set,
            lambda op, version: pb.SetVariableResponse(version=version),
        )
    ),
    _set_request,
    lambda op, r, max_bytes: int(r.version),
    _seen_set,
)


def _update_request(op: UpdateVariables, ids: Ids) -> pb.UpdateVariablesRequest:
    """The batch packed in one call; only when that fails, or a key cannot name a
    variable, are the entries examined one by one to name each that cannot be sent
    (entries the session would refuse for other reasons are not known then)."""
    batch, metadata = op.updates, op.metadata
    try:
        if not all(map(str.__instancecheck__, batch)):
            raise TypeError("a key that is not a string")
        payload = codec.pack(batch)
        packed_metadata = metadata_of("<batch>", metadata)
        request = pb.UpdateVariablesRequest(
            session_id=ids.session_id,
            updates=payload,
            metadata=packed_metadata,
            request_id=ids.request_id,
            incarnation=ids.incarnation,
        )
    except (TypeError, ValueError, OverflowError) as exc:
        error = batch_error(batch, metadata, ids.session_id)
        raise (error or unencodable("<batch>", "updates", batch, exc)) from exc
    except StateError as exc:  # the metadata breaks a rule: as the session reports it
        raise PartialFailure.for_batch({"<metadata>": exc}, len(batch)) from exc
    return request


def _decode_update(r: pb.UpdateVariablesRequest, limited: Limited) -> UpdateVariables:
    updates = limited.batch(r.updates, "updates")
    if not isinstance(updates, dict):
        raise ValidationError(
            f"updates must be a msgpack map (rule 'type', value {type(updates).__name__})",
            rule="type",
            value=type(updates).__name__,
        )
    return UpdateVariables(updates, limited.map(r.metadata, "metadata", "<batch>"))


def _seen_updated(op: UpdateVariables, response: Any, sequence: int, copy: Copy) -> None:
    copy.expect_sequence(op.updates, sequence)


SENDS[UpdateVariables] = Send(
    serve(
        Rpc(
            "UpdateVariables",
            pb.UpdateVariablesRequest,
            pb.UpdateVariablesResponse,
            _decode_update,
            lambda op, sequence: pb.UpdateVariablesResponse(next_sequence=sequence),
        )
    ),
    _update_request,
    lambda op, r, max_bytes: int(r.next_sequence),
    _seen_updated,
)


def _seen_deleted(op: DeleteVariable, response: Any, result: None, copy: Copy) -> None:
    copy.expect_gone(op.identifier)


SENDS[DeleteVariable] = Send(
    serve(
        Rpc(
            "DeleteVariable",
            pb.DeleteVariableRequest,
            pb.DeleteVariableResponse,
            lambda r, _: DeleteVariable(r.identifier),
            lambda op, _: pb.DeleteVariableResponse(),
        )
    ),
    lambda op, ids: pb.DeleteVariableRequest(
        session_id=ids.session_id,
        identifier=identifier_of(op.identifier, ids),
        request_id=ids.request_id,
        incarnation=ids.incarnation,
    ),
    lambda op, r, max_bytes: None,
    _seen_deleted,
)


def _import_request(op: ImportState, ids: Ids) -> pb.ImportSessionRequest:
    with gc_paused(op.columns.variable_count >= BULK_ITEMS):
        message = columns_to_message(op.columns)
    return pb.ImportSessionRequest(
        session_id=ids.session_id,
        columns=message,
        want_digest=op.want_digest,
        request_id=ids.request_id,
        incarnation=ids.incarnation,
        continue_sequence=op.continue_from or 0,
    )


def _decode_import(r: pb.ImportSessionRequest, limited: Limited) -> ImportState:
    limits = limited.limits
    if r.WhichOneof("form") == "columns":
        with gc_paused(len(r.columns.ids) >= BULK_ITEMS):
            columns = columns_from_message(
                r.columns,
                max_bytes=limits.max_message_bytes,
                max_item_bytes=limits.max_value_bytes,
            )
    else:
        with gc_paused(len(r.state) >= BULK_ITEMS * 1000):
            columns = columns_of(limited.batch(r.state, "exported state"))
    return ImportState(columns, r.continue_sequence or None, r.want_digest)


def _seen_imported(op: ImportState, response: Any, result: bytes, copy: Copy) -> None:
    columns = op.columns
    for var_id, name, version in zip(columns.ids, columns.names, columns.versions, strict=True):
        copy.expect(var_id, version)
        copy.expect(name, version)  # read by name before its event names it


SENDS[ImportState] = Send(
    serve(
        Rpc(
            "ImportSession",
            pb.ImportSessionRequest,
            pb.ImportSessionResponse,
            _decode_import,
            lambda op, digest: pb.ImportSessionResponse(
                count=op.columns.variable_count,
                digest=digest,
            ),
        )
    ),
    _import_request,
    lambda op, r, max_bytes: bytes(r.digest),
    _seen_imported,
)


# -- the session as a whole -------------------------------------------------------------


def _open_request(op: OpenSession, ids: Ids) -> pb.OpenSessionRequest:
    return pb.OpenSessionRequest(
        session_id=ids.session_id,
        create_if_missing=op.create,
        pending=op.pending,
        metadata=metadata_of("<session>", op.metadata),
        request_id=ids.request_id,
    )


def _opened(op: OpenSession, r: pb.OpenSessionResponse, max_bytes: int) -> Opened:
    return Opened(
        r.session_id,
        r.created,
        r.incarnation,
        r.ttl_seconds or None,
        r.store,
        r.max_calls_per_connection,
    )


SENDS[OpenSession] = Send(
    serve(
        Rpc(
            "OpenSession",
            pb.OpenSessionRequest,
            pb.OpenSessionResponse,
            lambda r, limited: OpenSession(
                r.create_if_missing, r.pending, limited.map(r.metadata, "metadata", "<session>")
            ),
            lambda op, o: pb.OpenSessionResponse(
                session_id=o.session_id,
                created=o.created,
                incarnation=o.incarnation,
                ttl_seconds=o.ttl_seconds or 0.0,
                store=o.store,
                max_calls_per_connection=o.max_calls_per_connection,
            ),
        )
    ),
    _open_request,
    _opened,
)
SENDS[CommitSession] = Send(
    serve(
        Rpc(
            "CommitSession",
            pb.CommitSessionRequest,
            pb.CommitSessionResponse,
            lambda r, _: CommitSession(),
            lambda op, _: pb.CommitSessionResponse(),
        )
    ),
    lambda op, ids: pb.CommitSessionRequest(
        session_id=ids.session_id, incarnation=ids.incarnation
    ),
    lambda op, r, max_bytes: None,
)
SENDS[CloseSession] = Send(
    serve(
        Rpc(
            "CloseSession",
            pb.CloseSessionRequest,
            pb.CloseSessionResponse,
            lambda r, _: CloseSession(),
            lambda op, _: pb.CloseSessionResponse(),
        )
    ),
    lambda op, ids: pb.CloseSessionRequest(session_id=ids.session_id, incarnation=ids.incarnation),
    lambda op, r, max_bytes: None,
    retry=False,  # one attempt: a session left by a lost reply expires with its TTL
)


def _info(op: GetSession, r: pb.SessionInfo, max_bytes: int) -> SessionInfo:
    return SessionInfo(
        r.session_id,
        r.incarnation,
        r.variable_count,
        r.created_at,
        r.last_active_at,
        r.ttl_seconds or None,
        unpack_within(r.metadata, max_bytes, "metadata") if r.metadata else {},
        r.next_sequence,
    )


SENDS[GetSession] = Send(
    serve(
        Rpc(
            "GetSession",
            pb.GetSessionRequest,
            pb.SessionInfo,
            lambda r, _: GetSession(),
            lambda op, info: pb.SessionInfo(
                session_id=info.session_id,
                variable_count=info.variable_count,
                created_at=info.created_at,
                last_active_at=info.last_active_at,
                ttl_seconds=info.ttl_seconds or 0.0,
                metadata=codec.pack_map(info.metadata),
                incarnation=info.incarnation,
                next_sequence=info.next_sequence,
            ),
        )
    ),
    lambda op, ids: pb.GetSessionRequest(session_id=ids.session_id, incarnation=ids.incarnation),
    _info,
)
SENDS[Heartbeat] = Send(
    serve(
        Rpc(
            "Heartbeat",
            pb.HeartbeatRequest,
            pb.HeartbeatResponse,
            lambda r, _: Heartbeat(),
            lambda op, expires: pb.HeartbeatResponse(
                expires_at=float("inf") if expires is None else expires
            ),
        )
    ),
    lambda op, ids: pb.HeartbeatRequest(session_id=ids.session_id, incarnation=ids.incarnation),
    lambda op, r, max_bytes: float(r.expires_at),
)


def _decode_settle(r: pb.SettleRequest) -> Settle:
    if not r.write_request_id or not math.isfinite(r.age_seconds) or r.age_seconds < 0:
        raise ValidationError(
            "Settle needs a write's request id and a finite, non-negative age (rule "
            f"'settle', value {r.write_request_id!r}, {r.age_seconds!r}s)",
            rule="settle",
            value=[r.write_request_id, r.age_seconds],
        )
    return Settle(r.write_request_id, r.age_seconds)


SENDS[Settle] = Send(
    serve(
        Rpc(
            "Settle",
            pb.SettleRequest,
            pb.SettleResponse,
            lambda r, _: _decode_settle(r),
            lambda op, applied: pb.SettleResponse(applied=applied),
        )
    ),
    lambda op, ids: pb.SettleRequest(
        session_id=ids.session_id,
        incarnation=ids.incarnation,
        write_request_id=op.request_id,
        age_seconds=op.age,
    ),
    lambda op, r, max_bytes: bool(r.applied),
)


def _prompt(rpc: Rpc) -> bool:
    """Whether every operation sent as ``rpc`` is a read that scans nothing."""
    ops = [op for op, send in SENDS.items() if send.rpc is rpc]
    return bool(ops) and all(issubclass(op, ReadOperation) and not op.scans for op in ops)


PROMPT_FIELDS: frozenset[str] = frozenset(
    field for field, rpc in CALL_FIELDS.items() if _prompt(rpc)
)
"""The Calls fields of the reads that scan nothing: as a rule a server answers them
from what it holds at once, or (on an engine) in one round trip to it."""
