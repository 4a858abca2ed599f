"""What an operation's wire form is made of, and the two tables the forms fill.

The forms themselves are registered in :mod:`dspex_actors.wire.operations`; this
module holds their shape (:class:`Rpc`, :class:`Send`), the registry, and what the
forms share: decoding within limits, records on the wire, and the errors a session
would raise for what cannot be sent.

Read the tables through :mod:`dspex_actors.wire.operations`, whose import fills
them: :data:`RPCS` (RPC name -> :class:`Rpc`, what a server serves) and :data:`SENDS`
(operation type -> :class:`Send`, how a client sends it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from google.protobuf.message import Message

from dspex_actors import vartypes
from dspex_actors.errors import PartialFailure, StateError, ValidationError
from dspex_actors.limits import Limits
from dspex_actors.messages import Operation
from dspex_actors.records import VariableRecord, variable_not_found
from dspex_actors.text import describe_value, utf8_encodable
from dspex_actors.v1 import session_store_pb2 as pb
from dspex_actors.wire import codec

__all__ = [
    "CALL_FIELDS",
    "RPCS",
    "SENDS",
    "SERVICE",
    "Copy",
    "Ids",
    "Limited",
    "Rpc",
    "Send",
    "Settled",
    "batch_error",
    "call_reply_bytes",
    "embedded",
    "identifier_of",
    "metadata_of",
    "record_message",
    "record_of",
    "serve",
    "unencodable",
    "unpack_within",
]

Op = TypeVar("Op", bound=Operation[Any])
R = TypeVar("R")

SERVICE: str = pb.DESCRIPTOR.services_by_name["SessionStore"].full_name
"""The service's full name (``dspex_actors.v1.SessionStore``)."""


class Ids(NamedTuple):
    """What every request names besides its operation."""

    session_id: str
    incarnation: str
    request_id: str


class Copy(Protocol):
    """What a reply tells a client's copy of the session (the bridge's cache)."""

    def expect(self, identifier: str, version: int) -> None: ...
    def expect_all(self, versions: Any) -> None: ...
    def expect_gone(self, identifier: str) -> None: ...
    def expect_sequence(self, identifiers: Any, sequence: int) -> None: ...


class Settled(Exception):
    """An operation answered without a round trip (nothing it names can exist on the
    other side: a glob or identifier that no UTF-8 name can be)."""

    def __init__(self, answer: Any) -> None:
        super().__init__("answered without a round trip")
        self.answer = answer


_CALL_FIELD_OF: dict[str, str] = {
    field.message_type.full_name: field.name
    for field in pb.CallRequest.DESCRIPTOR.oneofs_by_name["body"].fields
    if field.message_type is not None
}


def call_reply_bytes(call: int, field: str, response: bytes) -> bytes:
    """A Calls reply to ``call`` carrying ``response`` (its RPC's serialized response)
    in ``field``, as wire bytes, without parsing ``response`` again: protobuf reads
    concatenated encodings as one message, and an embedded message is its length
    and its bytes."""
    number = pb.CallReply.DESCRIPTOR.fields_by_name[field].number
    return pb.CallReply(call=call).SerializeToString() + embedded(number, response)


def embedded(number: int, payload: bytes) -> bytes:
    """Field ``number`` of a message holding ``payload`` (an encoded message, or
    bytes), as protobuf encodes it: its tag, its length, the payload."""
    return b"".join((_varint(number << 3 | 2), _varint(len(payload)), payload))


def _varint(value: int) -> bytes:
    """``value`` (not negative) as a protobuf base-128 varint."""
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class Limited:
    """A server's decoding of request payloads within its limits."""

    __slots__ = ("limits",)

    def __init__(self, limits: Limits) -> None:
        self.limits = limits

    def value(self, data: bytes, variable: str) -> Any:
        return codec.unpack(
            data, max_bytes=self.limits.max_value_bytes, what="value", variable=variable
        )

    def map(self, data: bytes, what: str, variable: str | None = None) -> dict[str, Any] | None:
        return codec.unpack_map(
            data,
            max_bytes=self.limits.max_metadata_bytes,
            what=what,
            variable=variable,
            limit="max_metadata_bytes",
        )

    def batch(self, data: bytes, what: str) -> Any:
        return codec.unpack(
            data,
            max_bytes=self.limits.max_message_bytes,
            max_item_bytes=self.limits.max_value_bytes,
            what=what,
            limit="max_message_bytes",
        )


@dataclass(frozen=True, slots=True)
class Rpc:
    """One SessionStore RPC as the server serves it."""

    name: str
    request: type[Message]
    response: type[Message]
    decode: Callable[[Any, Limited], Operation[Any]]
    """The request as an operation, its payloads decoded within the server's limits."""
    answer: Callable[[Any, Any], Message]
    """The operation's result (and the operation) as the response."""
    pieces: Callable[[Any, Any], bytes] | None = None
    """The same response serialized a piece at a time, for answers that grow with
    the session: built off the loop, where one long protobuf call would hold the
    GIL (and so the loop) for all of it."""
    field: str | None = dataclass_field(init=False)
    """Its field in a Calls request and reply, when it may travel on that stream."""
    has_request_id: bool = dataclass_field(init=False)
    """Whether its request carries a request id (a write: applied once)."""
    has_incarnation: bool = dataclass_field(init=False)
    """Whether its request names the incarnation it is meant for."""

    def __post_init__(self) -> None:
        fields = self.request.DESCRIPTOR.fields_by_name
        object.__setattr__(self, "field", _CALL_FIELD_OF.get(self.request.DESCRIPTOR.full_name))
        object.__setattr__(self, "has_request_id", "request_id" in fields)
        object.__setattr__(self, "has_incarnation", "incarnation" in fields)

    @property
    def path(self) -> str:
        """The method's path on the wire (``/dspex_actors.v1.SessionStore/Name``)."""
        return f"/{SERVICE}/{self.name}"


@dataclass(frozen=True, slots=True)
class Send(Generic[Op, R]):
    """How a client sends one operation and reads its reply."""

    rpc: Rpc
    encode: Callable[[Op, Ids], Message]
    """The operation as its RPC's request; what cannot be sent raises the session's
    error (or :class:`Settled`: answered without a round trip)."""
    result: Callable[[Op, Any, int], R]
    """The reply as the operation's result (decoding at most the given bytes)."""
    seen: Callable[[Op, Any, R, Copy], None] | None = None
    """What the reply proved, told to a client's copy of the session."""
    retry: bool = True
    """Whether an attempt that got no answer is sent again within the deadline."""


RPCS: dict[str, Rpc] = {}
SENDS: dict[type[Operation[Any]], Send[Any, Any]] = {}
CALL_FIELDS: dict[str, Rpc] = {}
"""A Calls request's body field -> the RPC it runs as."""


def serve(rpc: Rpc) -> Rpc:
    """Register an RPC a server serves (and the Calls field it may travel in)."""
    RPCS[rpc.name] = rpc
    if rpc.field is not None:
        CALL_FIELDS[rpc.field] = rpc
    return rpc


# -- what cannot be sent: the errors a session would raise --------------------------------


def unencodable(
    variable: str, what: str, value: Any, exc: Exception, rule: str = "type"
) -> ValidationError:
    return ValidationError(
        f"variable {variable!r}: {what} is not plain data msgpack can carry: {exc} "
        f"(rule {rule!r}, value {describe_value(value)})",
        variable=variable,
        rule=rule,
        value=describe_value(value),
    )


def identifier_of(identifier: Any, ids: Ids) -> str:
    """An identifier that can travel; any other names no variable."""
    if not isinstance(identifier, str) or not utf8_encodable(identifier):
        raise variable_not_found(identifier, ids.session_id)
    return identifier


def metadata_of(variable: str, metadata: Any) -> bytes:
    """msgpack of metadata (None: none given); a bad one fails by the session's rule.

    Anything but None counts as given, so an empty non-mapping (``[]``) is refused
    like any other non-mapping.
    """
    if metadata is None:
        return b""
    checked = vartypes.check_metadata(variable, metadata)  # the canonical error, if any
    try:
        return codec.pack_map(checked)
    except (TypeError, ValueError, OverflowError) as exc:  # e.g. a string that is not UTF-8
        raise unencodable(variable, "metadata", metadata, exc, rule="metadata") from exc


def batch_error(batch: Mapping[Any, Any], metadata: Any, session_id: str) -> Exception | None:
    """Why ``batch`` cannot be sent, entry by entry (the failure path only): a
    PartialFailure worded as the session words it, naming each entry (and
    ``<metadata>``) that cannot be sent; None when no entry is to blame."""
    errors: dict[str, StateError] = {}
    for key, value in batch.items():
        if not isinstance(key, str) or not utf8_encodable(key):
            errors[str(key)] = variable_not_found(key, session_id)
            continue
        try:
            codec.pack(value)
        except (TypeError, ValueError, OverflowError) as exc:
            errors[key] = unencodable(key, "value", value, exc)
    try:
        metadata_of("<batch>", metadata)
    except StateError as exc:
        errors["<metadata>"] = exc
    if errors:
        return PartialFailure.for_batch(errors, len(batch))
    return None


# -- records ----------------------------------------------------------------------------


def record_message(record: Mapping[str, Any]) -> pb.Variable:
    """One record on the wire (ListVariables, GetVariable with ``full``): a
    VariableRecord, or any mapping of its keys (read as items: C lookups)."""
    return pb.Variable(
        id=record["id"],
        name=record["name"],
        type=record["type"],
        value=codec.pack(record["value"]),
        constraints=codec.pack(record["constraints"]),
        metadata=codec.pack(record["metadata"]),
        version=record["version"],
        created_at=record["created_at"],
        last_updated_at=record["last_updated_at"],
    )


def record_of(v: pb.Variable, max_bytes: int) -> VariableRecord:
    """The VariableRecord a ``pb.Variable`` carries, its maps unpacked within
    ``max_bytes``."""

    def unpack(data: bytes, what: str) -> Any:
        return codec.unpack(data, max_bytes=max_bytes, what=what)

    return VariableRecord(
        id=v.id,
        name=v.name,
        type=v.type,
        value=unpack(v.value, "value"),
        constraints=unpack(v.constraints, "constraints"),
        metadata=unpack(v.metadata, "metadata"),
        version=v.version,
        created_at=v.created_at,
        last_updated_at=v.last_updated_at,
    )


def unpack_within(data: bytes, max_bytes: int, what: str) -> Any:
    return codec.unpack(data, max_bytes=max_bytes, what=what)
