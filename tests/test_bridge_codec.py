"""The codec: msgpack within limits, and every error class across a real gRPC call as
gRPC's rich status (ErrorInfo and BadRequest for any client, ErrorDetail for ours)."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any, TypeVar

import grpc
import msgpack
import pytest
from google.rpc.error_details_pb2 import BadRequest, ErrorInfo
from google.rpc.status_pb2 import Status
from grpc_status import rpc_status

from dspex_actors.errors import (
    ERROR_CLASSES,
    AttributeNotFound,
    BridgeUnavailable,
    InvalidExport,
    LimitExceeded,
    NotSupported,
    OutcomeUnknown,
    PartialFailure,
    SessionClosed,
    SessionNotFound,
    StateError,
    Unauthenticated,
    ValidationError,
    VariableExists,
    VariableNotFound,
    VersionConflict,
)
from dspex_actors.v1.session_store_pb2 import ErrorDetail
from dspex_actors.wire import codec
from dspex_actors.wire import status as wire_status

# -- msgpack ---------------------------------------------------------------------------


def test_plain_data_round_trips() -> None:
    value = {
        "f": 0.5,
        "i": -(2**63),
        "s": "héllo",
        "b": b"\x00\xff",
        "l": [1, [2.0, None, True]],
        "nan": float("inf"),
    }
    assert codec.unpack(codec.pack(value), max_bytes=1024) == value


def test_payload_over_the_limit_is_refused_before_decoding() -> None:
    data = codec.pack("x" * 100)
    with pytest.raises(LimitExceeded, match=r"value of variable 'v' is \d+ bytes") as caught:
        codec.unpack(data, max_bytes=50, what="value", variable="v")
    assert caught.value.limit == "max_value_bytes"
    assert caught.value.details["variable"] == "v"


@pytest.mark.parametrize(
    "payload",
    [["x" * 100], [b"x" * 100], [list(range(100))], [{str(i): i for i in range(100)}]],
    ids=["str", "bin", "array", "map"],
)
def test_items_over_the_item_limit_are_refused(payload: Any) -> None:
    with pytest.raises(LimitExceeded, match="over the limit of 50 bytes"):
        codec.unpack(codec.pack(payload), max_bytes=10_000, max_item_bytes=50, what="updates")


@pytest.mark.parametrize(
    "data",
    [
        b"\xc1",  # never used
        msgpack.packb(1) + b"\x01",  # trailing bytes
        msgpack.packb({1: "int keys"}),
        msgpack.packb(msgpack.ExtType(5, b"code")),
        b"\x91" * 5000 + b"\xc0",  # nested arrays deeper than the decoder's stack
        b"\xa5abc",  # truncated string
    ],
    ids=["reserved", "extra", "int-key", "ext", "deep", "truncated"],
)
def test_malformed_msgpack_is_a_validation_error(data: bytes) -> None:
    with pytest.raises(ValidationError, match="is not valid msgpack") as caught:
        codec.unpack(data, max_bytes=len(data), what="value", variable="v", rule="encoding")
    assert caught.value.rule == "encoding"
    assert caught.value.variable == "v"


def test_every_refusal_says_why() -> None:
    """msgpack's own error for a too deep nesting has no text: the reason is ours."""
    for data in (b"\x91" * 5000 + b"\xc0", b"\xc1", b"\x92\x01"):
        with pytest.raises(ValidationError) as caught:
            codec.unpack(data, max_bytes=1 << 20, what="value", variable="v")
        reason = str(caught.value).split("is not valid msgpack: ")[1].split(" (rule")[0]
        assert reason.strip(), str(caught.value)
    with pytest.raises(ValidationError, match="nested deeper than msgpack decodes"):
        codec.unpack(b"\x91" * 5000 + b"\xc0", max_bytes=1 << 20)


def test_pack_items_is_pack_of_the_list() -> None:
    items = [1, "a", b"b", {"k": [1.5, None]}, [], {}] * 300
    assert codec.pack_items(items) == codec.pack(items)
    assert codec.pack_items([]) == codec.pack([])


def test_unpack_map_rejects_a_non_map_under_its_rule() -> None:
    with pytest.raises(ValidationError, match=r"metadata of variable 'v' must be a msgpack map"):
        codec.unpack_map(codec.pack([1]), max_bytes=100, what="metadata", variable="v")
    assert codec.unpack_map(b"", max_bytes=100, what="metadata") is None


def test_pack_refuses_what_is_not_plain_data() -> None:
    with pytest.raises(TypeError):
        codec.pack({1, 2})
    with pytest.raises(TypeError):
        codec.pack_map([("a", 1)])  # type: ignore[arg-type]
    assert codec.pack_map(None) == b"" == codec.pack_map({})


# -- errors over the wire ---------------------------------------------------------------


def _examples() -> list[StateError]:
    return [
        ValidationError(
            "variable 'x': above the maximum 2.0 (rule 'max', value 5.0)",
            variable="x",
            rule="max",
            value=5.0,
        ),
        VariableNotFound("variable 'x' not found in session 's'", variable="x"),
        AttributeNotFound("variable 'x' not found in session 's'", variable="x"),
        VariableExists("variable 'x' already exists in session 's'", variable="x"),
        VersionConflict("variable 'x': expected 1, at 2", variable="x", expected=1, actual=2),
        PartialFailure(
            "2 of 2 updates failed, none applied",
            errors={
                "z": ValidationError("z bad (rule 'type', value 'q')", variable="z", rule="type"),
                "a": VariableNotFound("a missing", variable="a"),
            },
        ),
        SessionNotFound("session 's' not found", session_id="s"),
        SessionClosed("session 's' is closed"),
        LimitExceeded("too many sessions", limit="max_sessions"),
        Unauthenticated("missing or wrong token"),
        InvalidExport("export is missing variables"),
        NotSupported("no streaming"),
        BridgeUnavailable("no bridge"),
        OutcomeUnknown("maybe applied"),
        StateError("something else"),
    ]


Call = Callable[[bytes], bytes]


@pytest.fixture
def raising_call() -> Iterator[Callable[[Callable[[grpc.ServicerContext], None]], None]]:
    """Call a real gRPC method whose server side runs the given function."""
    behaviours: list[Callable[[grpc.ServicerContext], None]] = []

    def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
        behaviours[-1](context)
        return b""

    handler = grpc.method_handlers_generic_handler(
        "test.Errors", {"Raise": grpc.unary_unary_rpc_method_handler(handle)}
    )
    executor = futures.ThreadPoolExecutor(max_workers=2)
    server = grpc.server(executor, handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    method = channel.unary_unary(
        "/test.Errors/Raise", request_serializer=None, response_deserializer=None
    )

    def call(behaviour: Callable[[grpc.ServicerContext], None]) -> None:
        behaviours.append(behaviour)
        method(b"", timeout=5)

    try:
        yield call
    finally:
        channel.close()
        server.stop(None).wait()
        executor.shutdown(wait=True)


def _rebuilt(call: Callable[..., None], error: StateError) -> tuple[StateError, grpc.StatusCode]:
    with pytest.raises(grpc.RpcError) as caught:
        call(lambda context: context.abort_with_status(wire_status.grpc_status(error)))
    rpc_error = caught.value
    assert isinstance(rpc_error, grpc.Call)
    return wire_status.error_from_rpc(rpc_error, "test"), rpc_error.code()


def _same(rebuilt: StateError, original: StateError) -> None:
    assert type(rebuilt) is type(original)
    assert str(rebuilt) == str(original)
    assert rebuilt.details == original.details
    assert rebuilt.reason == original.reason


@pytest.mark.parametrize("error", _examples(), ids=lambda e: type(e).__name__)
def test_every_error_crosses_the_wire_with_class_message_and_attributes(
    raising_call: Callable[..., None], error: StateError
) -> None:
    rebuilt, code = _rebuilt(raising_call, error)
    _same(rebuilt, error)
    assert code == wire_status.status_for(error)
    if isinstance(error, PartialFailure):
        assert isinstance(rebuilt, PartialFailure)
        assert list(rebuilt.errors) == list(error.errors)  # the batch's order
        for key, inner in error.errors.items():
            _same(rebuilt.errors[key], inner)


def test_examples_cover_every_error_class() -> None:
    assert {type(e).__name__ for e in _examples()} == set(ERROR_CLASSES)


def test_status_codes_follow_the_table() -> None:
    expected = {
        ValidationError: grpc.StatusCode.INVALID_ARGUMENT,
        PartialFailure: grpc.StatusCode.INVALID_ARGUMENT,
        InvalidExport: grpc.StatusCode.INVALID_ARGUMENT,
        VariableNotFound: grpc.StatusCode.NOT_FOUND,
        AttributeNotFound: grpc.StatusCode.NOT_FOUND,
        SessionNotFound: grpc.StatusCode.NOT_FOUND,
        VariableExists: grpc.StatusCode.ALREADY_EXISTS,
        VersionConflict: grpc.StatusCode.ABORTED,
        SessionClosed: grpc.StatusCode.FAILED_PRECONDITION,
        LimitExceeded: grpc.StatusCode.RESOURCE_EXHAUSTED,
        Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
        NotSupported: grpc.StatusCode.UNIMPLEMENTED,
        StateError: grpc.StatusCode.INTERNAL,
    }
    for cls, code in expected.items():
        assert wire_status.status_for(cls("m")) == code, cls


def test_huge_errors_stay_within_the_trailer_budget(raising_call: Callable[..., None]) -> None:
    big = [0.5] * 100_000
    error = PartialFailure(
        "x" * 5000,
        errors={
            f"v{i}": ValidationError(f"v{i} bad " + "y" * 300, variable=f"v{i}", value=big)
            for i in range(1000)
        },
    )
    rebuilt, _ = _rebuilt(raising_call, error)
    assert isinstance(rebuilt, PartialFailure)
    assert str(rebuilt).startswith("x" * 400)
    assert str(rebuilt).endswith("more characters)")
    assert 0 < len(rebuilt.errors) < 1000
    assert list(rebuilt.errors) == [f"v{i}" for i in range(len(rebuilt.errors))]
    assert rebuilt.details["omitted_errors"] == 1000 - len(rebuilt.errors)
    for i, inner in enumerate(rebuilt.errors.values()):
        assert type(inner) is ValidationError
        assert inner.variable == f"v{i}"
        assert str(inner).startswith(f"v{i} bad y")

    single, _ = _rebuilt(raising_call, ValidationError("x" * 5000, variable="v", value=big))
    assert isinstance(single, ValidationError)
    assert str(single).startswith("x" * 900)
    assert str(single).endswith("(4016 more characters)")
    assert isinstance(single.value, str) and single.value.endswith("...")  # a cut repr


def test_every_entry_is_sent_even_when_its_message_is_long(
    raising_call: Callable[..., None],
) -> None:
    error = PartialFailure(
        "5 of 5 updates failed",
        errors={
            f"v{i}": ValidationError(f"v{i} bad " + "y" * 3000, variable=f"v{i}", rule="max")
            for i in range(5)
        },
    )
    rebuilt, _ = _rebuilt(raising_call, error)
    assert isinstance(rebuilt, PartialFailure)
    assert list(rebuilt.errors) == [f"v{i}" for i in range(5)]  # the message is cut, not the entry
    assert "omitted_errors" not in rebuilt.details
    for i, inner in enumerate(rebuilt.errors.values()):
        assert isinstance(inner, ValidationError)
        assert inner.reason == "invalid"
        assert (inner.variable, inner.rule) == (f"v{i}", "max")
        assert str(inner).startswith(f"v{i} bad yyy")
        assert str(inner).endswith("more characters)")


def _hostile_errors() -> dict[str, StateError]:
    euro = "\u20ac"  # three bytes of UTF-8, nine percent-encoded
    return {
        "non-ascii message": ValidationError(
            euro * 5000, variable=euro * 256, rule="type", value=euro * 5000
        ),
        "percent signs": VariableNotFound("%" * 5000, variable="%" * 256),
        "control characters": StateError("\n\t" * 3000),
        "lone surrogates": ValidationError("\ud800" * 3000, variable="x", value="\udfff" * 80),
        "many attributes": StateError("m", **{f"k{i}": euro * 80 for i in range(100)}),
        "many long non-ascii entries": PartialFailure(
            euro * 5000,
            errors={
                euro * 255 + str(i): ValidationError(
                    euro * 3000, variable=euro * 255 + str(i), rule="type", value=euro * 1000
                )
                for i in range(300)
            },
        ),
        "many short entries": PartialFailure(
            "%" * 3000,
            errors={f"v{i}": VariableNotFound(f"v{i}", variable=f"v{i}") for i in range(5000)},
        ),
    }


def _trailer_bytes(error: StateError) -> int:
    """What the error's trailer takes as gRPC sends it (HPACK counts 32 per entry)."""
    status = wire_status.error_status(error)
    message = status.message.encode()
    percent_encoded = sum(1 if 0x20 <= b < 0x7F and b != ord("%") else 3 for b in message)
    binary = len(base64.b64encode(status.SerializeToString()))
    return (
        32 + len("grpc-message") + percent_encoded + 32 + len("grpc-status-details-bin") + binary
    )


@pytest.mark.parametrize("case", list(_hostile_errors()))
def test_long_and_non_ascii_errors_stay_under_the_8_kib_trailer_limit(
    raising_call: Callable[..., None], case: str
) -> None:
    error = _hostile_errors()[case]
    # grpc-status and what proxies add need the rest of gRPC's 8 KiB.
    assert _trailer_bytes(error) <= 8192 - 512
    rebuilt, code = _rebuilt(raising_call, error)
    assert code == wire_status.status_for(error)  # not RESOURCE_EXHAUSTED: the trailer arrived
    assert type(rebuilt) is type(error)
    sent = wire_status.error_status(error).message
    assert str(rebuilt) == sent
    kept = sent.rsplit("... (", 1)[0]  # the message, cut
    assert kept and error.message.encode("utf-8", "backslashreplace").decode().startswith(kept)
    if isinstance(error, PartialFailure):
        assert isinstance(rebuilt, PartialFailure)
        assert rebuilt.errors, "a PartialFailure must keep entries"
        assert list(rebuilt.errors) == list(error.errors)[: len(rebuilt.errors)]
        assert rebuilt.details["omitted_errors"] == len(error.errors) - len(rebuilt.errors)
        for key, inner in rebuilt.errors.items():
            assert type(inner) is type(error.errors[key])


def test_a_message_that_is_not_utf8_crosses_the_wire(raising_call: Callable[..., None]) -> None:
    error = ValidationError("bad \ud800 name (rule 'name')", variable="x", rule="name")
    rebuilt, code = _rebuilt(raising_call, error)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert type(rebuilt) is ValidationError
    assert str(rebuilt) == "bad \\ud800 name (rule 'name')"
    assert rebuilt.details == {"variable": "x", "rule": "name"}


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.UNAVAILABLE, BridgeUnavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, BridgeUnavailable),
        (grpc.StatusCode.CANCELLED, BridgeUnavailable),
        (grpc.StatusCode.INVALID_ARGUMENT, ValidationError),
        (grpc.StatusCode.NOT_FOUND, VariableNotFound),
        (grpc.StatusCode.UNAUTHENTICATED, Unauthenticated),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, LimitExceeded),
        (grpc.StatusCode.UNIMPLEMENTED, NotSupported),
        (grpc.StatusCode.UNKNOWN, StateError),
    ],
)
def test_a_status_without_detail_maps_by_code(
    raising_call: Callable[..., None], code: grpc.StatusCode, cls: type[StateError]
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        raising_call(lambda context: context.abort(code, "plain status"))
    assert isinstance(caught.value, grpc.Call)
    rebuilt = wire_status.error_from_rpc(caught.value, "127.0.0.1:9")
    assert type(rebuilt) is cls
    assert "plain status" in str(rebuilt)
    assert rebuilt.details["status"] == code.name


def test_an_unknown_error_class_falls_back_by_status(raising_call: Callable[..., None]) -> None:
    def abort(context: grpc.ServicerContext) -> None:
        status = wire_status.error_status(VariableNotFound("gone", variable="x"))
        detail = _unpacked(status, ErrorDetail)
        detail.error_class = "SomethingNewer"
        status.details[-1].Pack(detail)
        context.abort_with_status(rpc_status.to_status(status))

    with pytest.raises(grpc.RpcError) as caught:
        raising_call(abort)
    assert isinstance(caught.value, grpc.Call)
    rebuilt = wire_status.error_from_rpc(caught.value, "t")
    assert type(rebuilt) is VariableNotFound
    assert str(rebuilt) == "gone"
    assert rebuilt.details == {"variable": "x"}


# -- the standard details any gRPC client reads ---------------------------------------------

_M = TypeVar("_M", ErrorInfo, BadRequest, ErrorDetail)


def _unpacked(status: Status, kind: type[_M]) -> _M:
    """The one detail of ``kind`` in ``status`` (fails when there is none or several)."""
    [found] = [d for d in status.details if d.TypeName() == kind.DESCRIPTOR.full_name]
    message = kind()
    assert found.Unpack(message)
    return message


def _status_over_the_wire(call: Callable[..., None], error: StateError) -> Status:
    """The google.rpc.Status a client receives, read as any gRPC client would."""
    with pytest.raises(grpc.RpcError) as caught:
        call(lambda context: context.abort_with_status(wire_status.grpc_status(error)))
    assert isinstance(caught.value, grpc.Call)
    status = rpc_status.from_call(caught.value)
    assert isinstance(status, Status)
    assert status.code == caught.value.code().value[0]
    assert status.message == caught.value.details()
    return status


def test_a_validation_error_carries_error_info_and_bad_request(
    raising_call: Callable[..., None],
) -> None:
    error = ValidationError(
        "variable 'x': above the maximum 2.0 (rule 'max', value 5.0)",
        variable="x",
        rule="max",
        value=5.0,
    )
    status = _status_over_the_wire(raising_call, error)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert [d.TypeName() for d in status.details] == [
        "google.rpc.ErrorInfo",
        "google.rpc.BadRequest",
        "dspex_actors.v1.ErrorDetail",
    ]
    info = _unpacked(status, ErrorInfo)
    assert (info.reason, info.domain) == ("invalid", wire_status.ERROR_DOMAIN)
    assert dict(info.metadata) == {
        "error_class": "ValidationError",
        "variable": "x",
        "rule": "max",
        "value": "5.0",
    }
    [violation] = _unpacked(status, BadRequest).field_violations
    assert (violation.field, violation.reason) == ("x", "max")
    assert violation.description == error.message


def test_error_info_names_each_errors_own_attributes(raising_call: Callable[..., None]) -> None:
    conflict = VersionConflict("expected 1, at 2", variable="x", expected=1, actual=2)
    info = _unpacked(_status_over_the_wire(raising_call, conflict), ErrorInfo)
    assert info.reason == "version_conflict"
    assert dict(info.metadata) == {
        "error_class": "VersionConflict",
        "variable": "x",
        "expected": "1",
        "actual": "2",
    }
    limit = LimitExceeded("too many", limit="max_sessions", size=3)
    info = _unpacked(_status_over_the_wire(raising_call, limit), ErrorInfo)
    assert info.reason == "limit_exceeded"
    assert dict(info.metadata) == {"error_class": "LimitExceeded", "limit": "max_sessions"}
    missing = SessionNotFound("session 's' not found", session_id="s")
    status = _status_over_the_wire(raising_call, missing)
    assert dict(_unpacked(status, ErrorInfo).metadata) == {
        "error_class": "SessionNotFound",
        "session_id": "s",
    }
    assert not [d for d in status.details if d.TypeName() == "google.rpc.BadRequest"]


def test_a_partial_failure_lists_every_sent_entry_as_a_field_violation(
    raising_call: Callable[..., None],
) -> None:
    error = PartialFailure.for_batch(
        {
            "z": ValidationError("z: above the maximum", variable="z", rule="max", value=9),
            "a": VariableNotFound("variable 'a' not found", variable="a"),
        },
        total=3,
    )
    status = _status_over_the_wire(raising_call, error)
    info = _unpacked(status, ErrorInfo)
    assert (info.reason, dict(info.metadata)) == (
        "partial_failure",
        {"error_class": "PartialFailure"},
    )
    violations = [
        (v.field, v.reason, v.description) for v in _unpacked(status, BadRequest).field_violations
    ]
    assert violations == [
        ("z", "max", "z: above the maximum"),
        ("a", "not_found", "variable 'a' not found"),
    ]


def test_error_info_values_are_short_text(raising_call: Callable[..., None]) -> None:
    error = ValidationError(
        "bad", variable="\u00e9" * 256, rule="type", value=[0.5] * 10_000, expected=True
    )
    info = _unpacked(_status_over_the_wire(raising_call, error), ErrorInfo)
    assert info.metadata["variable"] == "\u00e9" * 126 + "..."  # cut to 256 bytes of UTF-8
    assert info.metadata["value"].startswith("[0.5, 0.5")
    assert len(info.metadata["value"].encode()) <= 256
    assert info.metadata["expected"] == "True"  # anything but a string: its repr


@pytest.mark.parametrize("case", list(_hostile_errors()))
def test_hostile_errors_keep_their_standard_details(case: str) -> None:
    error = _hostile_errors()[case]
    status = wire_status.error_status(error)
    info = _unpacked(status, ErrorInfo)
    assert info.reason == error.reason
    assert info.metadata["error_class"] == type(error).__name__
    assert all(len(value.encode()) <= 256 for value in info.metadata.values())
    detail = _unpacked(status, ErrorDetail)
    assert detail.message == status.message
    if isinstance(error, PartialFailure):
        violations = _unpacked(status, BadRequest).field_violations
        assert [v.field for v in violations] == [e.identifier for e in detail.errors]
        assert [v.description for v in violations] == [e.error.message for e in detail.errors]
    elif isinstance(error, ValidationError):
        [violation] = _unpacked(status, BadRequest).field_violations
        assert violation.field == error.variable
        assert violation.description


def test_no_error_needs_the_bare_fallback(caplog: pytest.LogCaptureFixture) -> None:
    for error in [*_examples(), *_hostile_errors().values()]:
        wire_status.error_status(error)
    assert not [r for r in caplog.records if "over its trailer budget" in r.message]


def test_a_status_without_our_detail_maps_by_code(raising_call: Callable[..., None]) -> None:
    # A foreign server's rich status: standard details only.
    def abort(context: grpc.ServicerContext) -> None:
        status = Status(code=grpc.StatusCode.NOT_FOUND.value[0], message="no such thing")
        status.details.add().Pack(ErrorInfo(reason="NOT_FOUND", domain="example.com"))
        context.abort_with_status(rpc_status.to_status(status))

    with pytest.raises(grpc.RpcError) as caught:
        raising_call(abort)
    assert isinstance(caught.value, grpc.Call)
    rebuilt = wire_status.error_from_rpc(caught.value, "t")
    assert type(rebuilt) is VariableNotFound
    assert "no such thing" in str(rebuilt)
    assert rebuilt.details == {"status": "NOT_FOUND"}


@pytest.mark.parametrize(
    "trailer",
    [b"\xff\xff not a status", None],
    ids=["undecodable", "code-differs"],
)
def test_an_unusable_status_trailer_maps_by_code(
    raising_call: Callable[..., None], trailer: bytes | None
) -> None:
    def abort(context: grpc.ServicerContext) -> None:
        if trailer is None:  # a well-formed Status that contradicts the call's code
            data = wire_status.error_status(
                VariableExists("x exists", variable="x")
            ).SerializeToString()
        else:
            data = trailer
        context.set_trailing_metadata(((wire_status.STATUS_DETAILS_KEY, data),))
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "x exists")

    with pytest.raises(grpc.RpcError) as caught:
        raising_call(abort)
    assert isinstance(caught.value, grpc.Call)
    rebuilt = wire_status.error_from_rpc(caught.value, "t")
    assert type(rebuilt) is ValidationError  # INVALID_ARGUMENT's class, not VariableExists
    assert rebuilt.details == {"status": "INVALID_ARGUMENT"}
