"""SessionColumns on the wire: both export forms, both import forms, and what a
peer can break in a columns message (real server on loopback, raw stub)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from dspex_actors.bridge import BridgedState, SessionStoreServer, serve
from dspex_actors.errors import (
    InvalidExport,
    LimitExceeded,
    StateError,
    ValidationError,
)
from dspex_actors.exports import (
    ExportColumns,
    check_shape,
    columns_digest,
    columns_of,
    export_of,
)
from dspex_actors.v1 import session_store_pb2 as pb
from dspex_actors.v1 import session_store_pb2_grpc as pb_grpc
from dspex_actors.wire import codec
from dspex_actors.wire import status as wire_status
from dspex_actors.wire.columns import columns_from_message, columns_to_message

MAX = 1 << 20


@pytest.fixture
def server() -> Iterator[SessionStoreServer]:
    with serve() as running:
        yield running


@pytest.fixture
def state(server: SessionStoreServer) -> Iterator[BridgedState]:
    with BridgedState.init(address=server.address) as handle:
        handle.register_variable("t", "float", 0.7, constraints={"min": 0, "max": 2})
        handle.register_variable("e", "embedding", [1.0, 2.0], metadata={"from": "test"})
        handle.register_variable("c", "choice", "x", constraints={"choices": ["x", "y"]})
        handle.set_variable("t", 0.9)
        yield handle


@pytest.fixture
def stub(server: SessionStoreServer) -> Iterator[pb_grpc.SessionStoreStub]:
    with grpc.insecure_channel(server.address) as channel:
        yield pb_grpc.SessionStoreStub(channel)


def _raise_from(server: SessionStoreServer, call: Any) -> Any:
    """Run a raw-stub call; turn its RpcError into the dspex_actors error it carries."""
    try:
        return call()
    except grpc.RpcError as exc:
        raise wire_status.error_from_rpc(exc, server.address) from exc


def test_both_export_forms_describe_the_same_session(
    state: BridgedState, stub: pb_grpc.SessionStoreStub
) -> None:
    request = pb.ExportSessionRequest(session_id=state.session_id)
    as_map = stub.ExportSession(request, timeout=5)
    request.columnar = True
    as_columns = stub.ExportSession(request, timeout=5)
    assert as_map.WhichOneof("form") == "state"
    assert as_columns.WhichOneof("form") == "columns"
    decoded = columns_from_message(as_columns.columns, max_bytes=MAX)
    assert export_of(decoded) == codec.unpack(as_map.state, max_bytes=MAX)
    assert export_of(decoded) == state.export_state()
    assert as_columns.columns.ByteSize() < len(as_map.state)


def test_an_import_in_columns_is_verified_by_the_servers_digest(
    server: SessionStoreServer, state: BridgedState
) -> None:
    columns = state.export_columns()
    with BridgedState.init(address=server.address) as copy:
        digest = copy.import_with_digest(columns)
        assert digest == columns_digest(columns)
        assert copy.export_state()["variables"] == state.export_state()["variables"]


def test_an_import_as_a_msgpack_map_still_works(
    server: SessionStoreServer, state: BridgedState, stub: pb_grpc.SessionStoreStub
) -> None:
    with BridgedState.init(address=server.address) as copy:
        response = stub.ImportSession(
            pb.ImportSessionRequest(
                session_id=copy.session_id,
                state=codec.pack(state.export_state()),
                want_digest=True,
            ),
            timeout=5,
        )
        assert response.count == 3
        assert response.digest == columns_digest(state.export_columns())
        assert copy.get_variable("e") == [1.0, 2.0]


def _columns(**changes: Any) -> pb.SessionColumns:
    """A valid two-variable columns message, with some fields replaced."""
    fields: dict[str, Any] = {
        "session_id": "from-elsewhere",
        "ids": ["var_a", "var_b"],
        "names": ["alpha", "beta"],
        "definitions": [
            pb.VariableDefinition(type="float", constraints=codec.pack({"max": 1.0})),
            pb.VariableDefinition(type="integer"),
        ],
        "definition": [0, 1],
        "values": codec.pack([0.5, 7]),
        "versions": [2, 0],
        "created_at": [1.0, 1.0],
        "last_updated_at": [2.0, 1.0],
        "variable_metadata": codec.pack([{}, {"k": "v"}]),
    }
    fields.update(changes)
    return pb.SessionColumns(**fields)


def test_a_columns_message_from_any_client_imports(
    server: SessionStoreServer, stub: pb_grpc.SessionStoreStub
) -> None:
    with BridgedState.init(address=server.address) as target:
        response = stub.ImportSession(
            pb.ImportSessionRequest(session_id=target.session_id, columns=_columns()),
            timeout=5,
        )
        assert response.count == 2
        assert target.get_variables(["alpha", "beta"]) == {"alpha": 0.5, "beta": 7}
        records = {r["name"]: r for r in target.list_variables()}
        assert records["alpha"]["version"] == 2
        assert records["beta"]["metadata"] == {"k": "v"}
        assert records["beta"]["constraints"] == {}


BAD_MESSAGES: dict[str, tuple[dict[str, Any], type[StateError], str]] = {
    "a short column": ({"versions": [1]}, InvalidExport, "versions"),
    "values not an array": ({"values": codec.pack({"a": 1})}, InvalidExport, "values"),
    "values not msgpack": ({"values": b"\xc1"}, ValidationError, "values"),
    "metadata not an array": ({"variable_metadata": codec.pack(1)}, InvalidExport, "metadata"),
    "constraints not a map": (
        {"definitions": [pb.VariableDefinition(type="float", constraints=codec.pack([1]))]},
        ValidationError,
        "constraints",
    ),
    "a definition past the list": ({"definition": [0, 5]}, InvalidExport, "'beta'"),
    "a negative version": ({"versions": [0, -3]}, InvalidExport, "'beta'"),
    "an unknown type": (
        {"definitions": [pb.VariableDefinition(type="float"), pb.VariableDefinition(type="q")]},
        ValidationError,
        "'beta'",
    ),
    "a value over its maximum": ({"values": codec.pack([1.5, 7])}, ValidationError, "'alpha'"),
    "an empty name": ({"names": ["alpha", ""]}, ValidationError, "name"),
}


@pytest.mark.parametrize("fault", list(BAD_MESSAGES))
def test_a_bad_columns_message_is_refused_and_changes_nothing(
    server: SessionStoreServer, stub: pb_grpc.SessionStoreStub, fault: str
) -> None:
    changes, error, named = BAD_MESSAGES[fault]
    with BridgedState.init(address=server.address) as target:
        target.register_variable("keep", "integer", 1)
        request = pb.ImportSessionRequest(
            session_id=target.session_id, columns=_columns(**changes)
        )
        with pytest.raises(error, match=named):
            _raise_from(server, lambda: stub.ImportSession(request, timeout=5))
        assert [r["name"] for r in target.list_variables()] == ["keep"]


def test_columns_past_the_servers_limits_are_refused() -> None:
    with (
        serve(max_variables_per_session=1, max_value_bytes=64) as server,
        grpc.insecure_channel(server.address) as channel,
        BridgedState.init(address=server.address) as target,
    ):
        stub = pb_grpc.SessionStoreStub(channel)
        request = pb.ImportSessionRequest(session_id=target.session_id, columns=_columns())
        with pytest.raises(LimitExceeded, match="limit of 1"):
            _raise_from(server, lambda: stub.ImportSession(request, timeout=5))
        big = _columns(
            ids=["var_a"],
            names=["alpha"],
            definitions=[pb.VariableDefinition(type="string")],
            definition=[0],
            values=codec.pack(["x" * 100]),
            versions=[0],
            created_at=[1.0],
            last_updated_at=[1.0],
            variable_metadata=codec.pack([{}]),
        )
        request = pb.ImportSessionRequest(session_id=target.session_id, columns=big)
        with pytest.raises(LimitExceeded, match="over the limit of 64 bytes"):
            _raise_from(server, lambda: stub.ImportSession(request, timeout=5))
        assert target.list_variables() == []


def _local_columns(**changes: Any) -> ExportColumns:
    exported = {
        "session_id": "s",
        "variables": {
            "var_a": {
                "id": "var_a",
                "name": "alpha",
                "type": "integer",
                "value": 1,
                "constraints": {},
                "metadata": {},
                "version": 0,
                "created_at": 1.0,
                "last_updated_at": 1.0,
            }
        },
        "variable_index": {"alpha": "var_a"},
        "metadata": {},
    }
    return columns_of(exported)._replace(**changes)


def test_columns_the_wire_cannot_carry_get_the_error_a_local_import_gives() -> None:
    with pytest.raises(InvalidExport, match="variable id 5"):
        columns_to_message(_local_columns(ids=[5]))
    with pytest.raises(InvalidExport, match="'alpha': created_at 'soon'"):
        columns_to_message(_local_columns(created_at=["soon"]))
    with pytest.raises(ValidationError, match="'alpha'"):
        columns_to_message(_local_columns(values=[object()]))
    with pytest.raises(InvalidExport, match="'alpha': version 18446744073709551616"):
        columns_to_message(_local_columns(versions=[2**64]))
    # protobuf would take these for a string and a number: the session does not.
    with pytest.raises(ValidationError, match="rule 'name'"):
        columns_to_message(_local_columns(names=[b"alpha"]))
    with pytest.raises(InvalidExport, match="'alpha': created_at True"):
        columns_to_message(_local_columns(created_at=[True]))
    with pytest.raises(InvalidExport, match="variable id b'var_a'"):
        columns_to_message(_local_columns(ids=[b"var_a"]))
    # The session's own metadata gets the session's check too:
    with pytest.raises(ValidationError, match="rule 'metadata'"):
        columns_to_message(_local_columns(metadata={"when": object()}))


def test_a_message_cannot_ask_for_more_than_its_variables_need(
    server: SessionStoreServer, stub: pb_grpc.SessionStoreStub
) -> None:
    with BridgedState.init(address=server.address) as target:
        for changes, named in (
            ({"definitions": [pb.VariableDefinition(type="float")] * 3}, "3 definitions"),
            ({"names": ["alpha"] * 1000}, "names"),
        ):
            request = pb.ImportSessionRequest(
                session_id=target.session_id, columns=_columns(**changes)
            )
            with pytest.raises(InvalidExport, match=named):
                _raise_from(server, lambda r=request: stub.ImportSession(r, timeout=5))
        assert target.list_variables() == []


def test_columns_decoded_from_a_peer_are_shape_checked_before_use() -> None:
    # What BridgedState.export_columns does with a server's answer before handing it out.
    misshapen = columns_from_message(
        _columns(values=codec.pack([0.5, 7, 9]), definition=[0, 5]), max_bytes=MAX
    )
    with pytest.raises(InvalidExport, match="column lengths"):
        check_shape(misshapen)
    with pytest.raises(InvalidExport, match="'beta': definition 5"):
        check_shape(misshapen._replace(values=[0.5, 7]))
