"""Errors on the wire: every ``StateError`` <-> gRPC's standard rich status.

An error crosses as a status code chosen from :data:`STATUS_FOR_ERROR`, the message
as the status details, and a ``google.rpc.Status`` (in the
``grpc-status-details-bin`` trailer of a unary call, or in a Calls reply's ``error``
field) whose ``details`` hold, in this order:

* ``google.rpc.ErrorInfo``: ``reason`` is the error's ``.reason`` tag ("invalid",
  "not_found", "version_conflict", ...), ``domain`` is :data:`ERROR_DOMAIN`, and
  ``metadata`` has ``error_class`` plus, where the error has them, ``variable``,
  ``rule``, ``value``, ``expected``, ``actual``, ``limit`` and ``session_id`` as
  text (a string as it is, anything else as its repr; each cut to 256 bytes);
* ``google.rpc.BadRequest`` for a ValidationError naming its variable, and for a
  PartialFailure (one violation per failing entry sent): ``field`` is the variable
  or identifier, ``description`` the message, ``reason`` the rule (or, for an entry
  that is not a ValidationError, its reason tag);
* ``dspex_actors.v1.ErrorDetail``, from which :func:`error_of_status` rebuilds the
  same ``dspex_actors.errors`` class with the same message and attributes
  (PartialFailure's per-entry errors included).

Any gRPC client reads the first two without our ``.proto``; the Python client reads
only the ErrorDetail, never the text. The server builds the status with
:func:`error_status` at its one dispatch; the client turns a status back into a
``StateError`` with :func:`error_of_status` (a Calls reply) or :func:`error_from_rpc`
(a failed unary call, ``raise ... from exc``), so no other module sees gRPC errors.
A status without an ErrorDetail (the transport failed, a proxy or a foreign server
answered) maps by its code, and its message is ours: the target, what happened, and
gRPC's status as ``CODE: details`` on one line (:func:`failure_text`), never the
repr of grpcio's call object.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import grpc
import grpc.aio
from google.protobuf.message import DecodeError
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
from dspex_actors.text import describe_value
from dspex_actors.v1 import session_store_pb2 as pb
from dspex_actors.wire.codec import pack, unpack

__all__ = [
    "ERROR_DOMAIN",
    "STATUS_DETAILS_KEY",
    "STATUS_FOR_ERROR",
    "answered_by_server",
    "error_from_rpc",
    "error_of_status",
    "error_status",
    "failure_text",
    "grpc_status",
    "status_for",
]

logger = logging.getLogger(__name__)

ERROR_DOMAIN = "dspex_actors"
"""``google.rpc.ErrorInfo.domain`` of every error this bridge sends."""

STATUS_DETAILS_KEY = "grpc-status-details-bin"
"""The trailer carrying the serialized ``google.rpc.Status`` (gRPC's standard key)."""

STATUS_FOR_ERROR: tuple[tuple[type[StateError], grpc.StatusCode], ...] = (
    (ValidationError, grpc.StatusCode.INVALID_ARGUMENT),
    (PartialFailure, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidExport, grpc.StatusCode.INVALID_ARGUMENT),
    (VariableNotFound, grpc.StatusCode.NOT_FOUND),
    (AttributeNotFound, grpc.StatusCode.NOT_FOUND),
    (SessionNotFound, grpc.StatusCode.NOT_FOUND),
    (VariableExists, grpc.StatusCode.ALREADY_EXISTS),
    (VersionConflict, grpc.StatusCode.ABORTED),
    (SessionClosed, grpc.StatusCode.FAILED_PRECONDITION),
    (LimitExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (NotSupported, grpc.StatusCode.UNIMPLEMENTED),
    (BridgeUnavailable, grpc.StatusCode.UNAVAILABLE),
    (OutcomeUnknown, grpc.StatusCode.UNKNOWN),
)
"""The one error <-> status table. Server: an error's status is that of the first
entry it is an instance of (else INTERNAL). Client: a status without an ErrorDetail
among its details (from the transport, a proxy or a foreign server) becomes the
first class listed for it, and DEADLINE_EXCEEDED / CANCELLED become
BridgeUnavailable."""

_STATUS_BY_CLASS = dict(STATUS_FOR_ERROR)
_CLASS_FOR_BARE_STATUS: dict[grpc.StatusCode, type[StateError]] = {
    grpc.StatusCode.DEADLINE_EXCEEDED: BridgeUnavailable,
    grpc.StatusCode.CANCELLED: BridgeUnavailable,
    grpc.StatusCode.UNKNOWN: StateError,  # only our own OutcomeUnknown is told apart
}
for _cls, _code in STATUS_FOR_ERROR:
    _CLASS_FOR_BARE_STATUS.setdefault(_code, _cls)

# Trailing metadata is capped by receivers: gRPC core fails calls whose metadata
# passes 8 KiB (``grpc.max_metadata_size``: at random up to 16 KiB, always beyond)
# and grpc-js stops at 8 KiB. An error's trailer carries its message as
# ``grpc-message``, percent-encoded (a byte outside printable ASCII, or "%", costs
# three), and the google.rpc.Status, base64-encoded (four bytes per three), which
# holds the message again (Status.message, ErrorDetail.message) beside ErrorInfo,
# BadRequest and ErrorDetail. Every budget below is in those encoded bytes, never in
# characters: the message is cut, an attribute whose encoding is long becomes a cut
# repr, and a PartialFailure sends every entry's identifier, class and reason (up to
# ``_MAX_ENTRIES``, each with room for the start of its message), shares what room
# is left among their messages and attributes, and counts the entries it could not
# send in ``omitted_errors``. The whole serialized Status is bounded, not only our
# ErrorDetail.
_TRAILER_BUDGET = 7 * 1024
"""Bytes grpc-message and grpc-status-details-bin may use together (each entry costs
its encoded key and value + 32 in HPACK's accounting); the rest of 8 KiB is left for
grpc-status and what proxies add."""
_MAX_MESSAGE_BYTES = 1024
"""An error's message, percent-encoded (the cut text and its "... (N more characters)")."""
_MAX_BATCH_MESSAGE_BYTES = 512
"""A PartialFailure's own message (it repeats its entries' messages), percent-encoded."""
_MAX_ENTRY_MESSAGE_BYTES = 512
"""A PartialFailure entry's message, or a BadRequest description, UTF-8."""
_ENTRY_MESSAGE_RESERVE = 64
"""Bytes of its message an entry is sent with at least (twice: ErrorDetail and
BadRequest), so an entry never arrives without the start of its message."""
_ENTRY_ATTRIBUTE_RESERVE = 64
"""Bytes of its attributes an entry is planned with (its variable and rule, typically)."""
_MAX_IDENTIFIER_BYTES = 1024
"""A PartialFailure entry's identifier: a name (256 characters) always fits."""
_MAX_ATTRIBUTE_BYTES = 256
"""One attribute's msgpack encoding; a longer one travels as its cut repr."""
_MAX_INFO_VALUE_BYTES = 256
"""One ErrorInfo metadata value, UTF-8 (a longer one is cut and ends with "...")."""
_MAX_ENTRIES = 32
"""PartialFailure entries sent at most; the rest are counted in ``omitted_errors``."""
_HEADER_OVERHEAD = 2 * 32 + len("grpc-message") + len(STATUS_DETAILS_KEY)
_INFO_KEYS = ("variable", "rule", "value", "expected", "actual", "limit", "session_id")
"""Attributes copied into ErrorInfo.metadata (besides error_class) when present."""
_CODE_NUMBERS: dict[grpc.StatusCode, int] = {code: code.value[0] for code in grpc.StatusCode}
_CODES = {number: code for code, number in _CODE_NUMBERS.items()}
_TYPE_URL_PREFIX = "type.googleapis.com/"
_ERROR_DETAIL_NAME: str = pb.ErrorDetail.DESCRIPTOR.full_name
# An Any inside Status.details: its type URL, the tags and lengths around it and its
# value (a length below 2 MiB takes at most three bytes of varint).
_ANY_OVERHEAD = (
    max(
        len(_TYPE_URL_PREFIX + d.full_name)
        for d in (pb.ErrorDetail.DESCRIPTOR, BadRequest.DESCRIPTOR)
    )
    + 2 * (1 + 3)
    + (1 + 3)
)
# Bytes gRPC sends as they are in grpc-message; any other byte becomes %XX.
_UNESCAPED = bytes(b for b in range(0x20, 0x7F) if b != ord("%"))


# -- errors: server side --------------------------------------------------------------


def status_for(exc: StateError) -> grpc.StatusCode:
    """The status code for an error, by the first table entry it is an instance of."""
    code = _STATUS_BY_CLASS.get(type(exc))
    if code is not None:
        return code
    for cls, code in STATUS_FOR_ERROR:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def _utf8(text: str) -> bytes:
    """UTF-8 of ``text``; what UTF-8 cannot carry (a lone surrogate) as an escape."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace")


def _percent_encoded_len(data: bytes) -> int:
    """Bytes ``data`` takes as gRPC sends it in ``grpc-message``."""
    return len(data) + 2 * len(data.translate(None, _UNESCAPED))


def _prefix(data: bytes, budget: int, cost: Callable[[bytes], int]) -> str:
    """The longest whole-character prefix of UTF-8 ``data`` costing at most ``budget``."""
    head = data[: max(budget, 0)]  # every byte costs at least one
    low, high = 0, len(head)
    while low < high:  # the longest head[:n] within the budget (cost grows with n)
        mid = (low + high + 1) // 2
        if cost(head[:mid]) <= budget:
            low = mid
        else:
            high = mid - 1
    return head[:low].decode("utf-8", "ignore")  # drops a character cut in two


def _cut(message: str, budget: int, cost: Callable[[bytes], int] = len) -> str:
    """``message`` made UTF-8 safe and cut so that it costs at most ``budget`` bytes.

    A cut message ends with "... (N more characters)"; with no room even for
    that, it is empty.
    """
    data = _utf8(message)
    if cost(data) <= budget:
        return message if len(data) == len(message) else data.decode()
    text = data.decode()
    kept = _prefix(data, budget - 40, cost)  # 40: room for the suffix
    if not kept:
        return ""
    return f"{kept}... ({len(text) - len(kept)} more characters)"


def _attribute(value: Any) -> Any:
    """``value`` if its encoding is small, else its repr cut to the attribute budget."""
    try:
        # Anything with more items than bytes allowed cannot fit: skip encoding it.
        sized = isinstance(value, str | bytes | list | tuple | dict)
        if not (sized and len(value) > _MAX_ATTRIBUTE_BYTES) and (
            len(pack(value)) <= _MAX_ATTRIBUTE_BYTES
        ):
            return value
    except (TypeError, ValueError, OverflowError):
        pass
    text = describe_value(value)
    data = _utf8(text)
    if len(data) + 3 <= _MAX_ATTRIBUTE_BYTES:  # + a str's msgpack header
        return text if len(data) == len(text) else data.decode()
    return _prefix(data, _MAX_ATTRIBUTE_BYTES - 6, len) + "..."


_Attributes = list[tuple[str, Any, int]]
"""An error's attributes made small: (name, value or cut repr, encoded size)."""


def _small_attributes(details: Mapping[str, Any]) -> _Attributes:
    """Each attribute made small (once: a huge value's repr is costly), with its size."""
    small: _Attributes = []
    for key, value in details.items():
        name, item = str(key), _attribute(value)
        try:
            small.append((name, item, len(pack(name)) + len(pack(item))))
        except (TypeError, ValueError, OverflowError):
            continue
    return small


def _pack_within(attributes: _Attributes, budget: int) -> bytes:
    """msgpack of the attributes that fit, in order, within ``budget`` bytes."""
    kept: dict[str, Any] = {}
    used = 3  # a map header
    for name, item, size in attributes:
        if used + size <= budget:
            kept[name] = item
            used += size
    return pack(kept) if kept else b""


def _pack_attributes(details: Mapping[str, Any], budget: int) -> bytes:
    """msgpack of an error's attributes: each one small, all within ``budget`` bytes.

    An attribute that does not fit in what is left is left out.
    """
    return _pack_within(_small_attributes(details), budget)


def _field_bytes(size: int) -> int:
    """Bytes a length-delimited protobuf field of ``size`` bytes takes (tag + length)."""
    return 1 + (size.bit_length() + 6) // 7 + size if size else 2


def error_status(exc: StateError) -> Status:
    """The ``google.rpc.Status`` describing ``exc``, small enough to travel as a trailer.

    Its details are ErrorInfo, BadRequest (when a variable or batch entry is to
    blame) and our ErrorDetail. The serialized Status, base64-encoded, and the
    status message percent-encoded as ``grpc-message`` together stay within
    ``_TRAILER_BUDGET`` bytes.
    """
    batch = isinstance(exc, PartialFailure) and bool(exc.errors)
    limit = _MAX_BATCH_MESSAGE_BYTES if batch else _MAX_MESSAGE_BYTES
    message = _cut(exc.message, limit, _percent_encoded_len)
    # What the Status may take serialized, so that its base64 fits beside the message.
    budget = (_TRAILER_BUDGET - _HEADER_OVERHEAD - _percent_encoded_len(_utf8(message))) * 3 // 4
    status = Status(code=_CODE_NUMBERS[status_for(exc)], message=message)
    status.details.add().Pack(_error_info(exc))
    detail = pb.ErrorDetail(error_class=type(exc).__name__, reason=exc.reason, message=message)
    bad_request = BadRequest()
    # Room for BadRequest and the ErrorDetail's attributes or entries, each in an Any.
    room = budget - status.ByteSize() - detail.ByteSize() - 2 * _ANY_OVERHEAD
    if isinstance(exc, PartialFailure) and batch:
        _add_entries(detail, bad_request, exc, room)
    else:
        _add_violation(bad_request, exc, room // 3)
        detail.details = _pack_attributes(exc.details, room - bad_request.ByteSize() - 4)
    if bad_request.field_violations:
        status.details.add().Pack(bad_request)
    status.details.add().Pack(detail)
    if status.ByteSize() > budget:  # the accounting above leaves margins: never expected
        logger.warning("error status over its trailer budget; sending it bare: %r", exc)
        del status.details[1:]
        status.details.add().Pack(
            pb.ErrorDetail(error_class=detail.error_class, reason=detail.reason, message=message)
        )
    return status


def _info_text(value: Any) -> str:
    """An ErrorInfo metadata value: a string as it is, anything else as its repr, cut."""
    text = value if isinstance(value, str) else describe_value(value)
    data = _utf8(text)
    if len(data) <= _MAX_INFO_VALUE_BYTES:
        return data.decode()
    return _prefix(data, _MAX_INFO_VALUE_BYTES - 3, len) + "..."


def _error_info(exc: StateError) -> ErrorInfo:
    """The ErrorInfo any gRPC client can read: the reason tag and the key attributes."""
    info = ErrorInfo(reason=_info_text(exc.reason), domain=ERROR_DOMAIN)
    info.metadata["error_class"] = type(exc).__name__
    for key in _INFO_KEYS:
        value = exc.details.get(key)
        if value is not None:
            info.metadata[key] = _info_text(value)
    return info


def _violation_reason(exc: BaseException) -> str:
    """A FieldViolation's reason: a ValidationError's rule, else the error's reason tag."""
    rule = exc.rule if isinstance(exc, ValidationError) else None
    if rule is None:
        rule = getattr(exc, "reason", StateError.reason)
    return _info_text(rule)


def _add_violation(bad_request: BadRequest, exc: StateError, room: int) -> None:
    """The one field violation of a ValidationError naming its variable, if it fits ``room``."""
    if not isinstance(exc, ValidationError) or exc.variable is None:
        return
    violation = BadRequest.FieldViolation(
        field=_cut(str(exc.variable), _MAX_IDENTIFIER_BYTES), reason=_violation_reason(exc)
    )
    left = room - _field_bytes(violation.ByteSize()) - 8  # 8: the description's tag, length
    if left < _ENTRY_MESSAGE_RESERVE:
        return  # no room for a useful description: ErrorInfo still names the variable
    violation.description = _cut(exc.message, min(_MAX_ENTRY_MESSAGE_BYTES, left))
    bad_request.field_violations.append(violation)


def _add_entries(
    detail: pb.ErrorDetail,
    bad_request: BadRequest,
    exc: PartialFailure,
    budget: int,
) -> None:
    """A PartialFailure's entries, in the batch's order, as EntryErrors and violations.

    First every entry's identifier, class and reason (cut identifiers, never a
    dropped entry), while each also leaves room for the start of its message, until
    ``_MAX_ENTRIES`` or ``budget``; then the room left is shared among their
    attributes and messages, in order, each entry taking at most its share of what
    remains (a short one leaves more for the next). Entry and violation share the
    same (cut) message.
    """
    head = _pack_attributes({**exc.details, "omitted_errors": len(exc.errors)}, 512)
    left = budget - _field_bytes(len(head) + 9)  # + 9: any omitted_errors count
    reserved = 0
    planned: list[tuple[pb.EntryError, BadRequest.FieldViolation, str, _Attributes]] = []
    for identifier, inner in exc.errors.items():
        if len(planned) >= _MAX_ENTRIES:
            break
        name = _cut(str(identifier), _MAX_IDENTIFIER_BYTES)
        entry = pb.EntryError(
            identifier=name,
            error=pb.ErrorDetail(
                error_class=type(inner).__name__,
                reason=getattr(inner, "reason", StateError.reason),
            ),
        )
        violation = BadRequest.FieldViolation(field=name, reason=_violation_reason(inner))
        text = getattr(inner, "message", str(inner))
        attributes = _small_attributes(getattr(inner, "details", {}))
        size = _field_bytes(entry.ByteSize()) + _field_bytes(violation.ByteSize())
        # Room kept for the start of its message (twice), its first small attributes,
        # and the tags and lengths they add (the 16 taken off each share below).
        reserve = (
            2 * min(len(_utf8(text)), _ENTRY_MESSAGE_RESERVE)
            + len(_pack_within(attributes, _ENTRY_ATTRIBUTE_RESERVE))
            + 16
        )
        if size + reserve > left - reserved:
            break
        left -= size
        reserved += reserve
        planned.append((entry, violation, text, attributes))
    for position, (entry, violation, text, attributes) in enumerate(planned):
        share = left // (len(planned) - position) - 16  # 16: tags, lengths
        if share <= 0:
            break
        before = _field_bytes(entry.ByteSize()) + _field_bytes(violation.ByteSize())
        error = entry.error
        wanted = 2 * min(len(_utf8(text)), _ENTRY_MESSAGE_RESERVE)
        error.details = _pack_within(attributes, share - wanted)
        error.message = _cut(
            text, min(_MAX_ENTRY_MESSAGE_BYTES, (share - len(error.details)) // 2)
        )
        violation.description = error.message
        grown = _field_bytes(entry.ByteSize()) + _field_bytes(violation.ByteSize()) - before
        if grown > left:  # cannot happen with the margin; stay safe anyway
            error.details, error.message, violation.description = b"", "", ""
        else:
            left -= grown
    detail.errors.extend(entry for entry, _, _, _ in planned)
    bad_request.field_violations.extend(violation for _, violation, _, _ in planned)
    omitted = len(exc.errors) - len(planned)
    detail.details = _pack_attributes(
        {**exc.details, "omitted_errors": omitted} if omitted else exc.details, 512
    )


# -- errors: client side --------------------------------------------------------------


def grpc_status(exc: StateError) -> grpc.Status:
    """``exc`` as the ``grpc.Status`` a servicer aborts a unary call with."""
    return rpc_status.to_status(error_status(exc))


def _rebuild(detail: pb.ErrorDetail, code: grpc.StatusCode) -> StateError:
    cls = ERROR_CLASSES.get(detail.error_class) or _CLASS_FOR_BARE_STATUS.get(code, StateError)
    attributes: dict[str, Any] = {}
    if detail.details:
        try:
            decoded = unpack(detail.details, max_bytes=len(detail.details), what="error details")
        except StateError:
            decoded = None
        if isinstance(decoded, dict):
            attributes = {k: v for k, v in decoded.items() if k not in ("message", "errors")}
    try:
        if issubclass(cls, PartialFailure):
            inner = {entry.identifier: _rebuild(entry.error, code) for entry in detail.errors}
            return cls(detail.message, errors=inner, **attributes)
        return cls(detail.message, **attributes)
    except TypeError:  # a class with another signature: keep the message at least
        return StateError(detail.message, **attributes)


def _detail_of(status: Status, target: str) -> pb.ErrorDetail | None:
    """The ErrorDetail among a status's details, if it has one."""
    for detail in status.details:
        if detail.TypeName() == _ERROR_DETAIL_NAME:
            try:
                return pb.ErrorDetail.FromString(detail.value)
            except DecodeError:
                logger.warning("undecodable ErrorDetail from %s", target)
                return None
    return None


def _code_of(number: int) -> grpc.StatusCode:
    return _CODES.get(number, grpc.StatusCode.UNKNOWN)


def error_of_status(status: bytes | Status, target: str) -> StateError:
    """The ``StateError`` a serialized (or parsed) ``google.rpc.Status`` stands for: the
    answer of our server to a streamed call (see :func:`error_from_rpc` for the rest)."""
    if isinstance(status, bytes):
        try:
            status = Status.FromString(status)
        except DecodeError:
            return StateError(f"SessionStore at {target} answered an undecodable status")
    code = _code_of(status.code)
    detail = _detail_of(status, target)
    if detail is not None:
        return _rebuild(detail, code)
    return _bare(code, status.message, target)


_MAX_FAILURE_TEXT = 300
"""Characters of gRPC's own details a message quotes at most."""

_BARE_WORDS = {
    grpc.StatusCode.UNAVAILABLE: " is unreachable",
    grpc.StatusCode.DEADLINE_EXCEEDED: " did not answer in time",
    grpc.StatusCode.CANCELLED: ": the call was cancelled",
}
"""What a bare status of each BridgeUnavailable code says of the server."""


_CALLS = (grpc.Call, grpc.aio.AioRpcError)
"""What a failed call is, sync or asyncio: both tell their code, details and
trailing metadata alike."""


def _one_line(text: str) -> str:
    """``text`` on one line (any run of whitespace, newlines and tabs included, as
    one space), cut to :data:`_MAX_FAILURE_TEXT` characters."""
    line = " ".join(text.split())
    if len(line) > _MAX_FAILURE_TEXT:
        return line[: _MAX_FAILURE_TEXT - 3] + "..."
    return line


def _quoted(code: grpc.StatusCode, details: str) -> str:
    """``CODE: details`` on one line (gRPC's details are its own text, kept only as a
    hint for people; nothing reads it), or ``CODE`` alone without details."""
    line = _one_line(details)
    return f"{code.name}: {line}" if line else code.name


def failure_text(exc: grpc.RpcError) -> str:
    """A failed call as a message quotes it (:func:`_quoted`)."""
    if not isinstance(exc, _CALLS):
        return type(exc).__name__
    return _quoted(exc.code(), exc.details() or "")


def _bare(code: grpc.StatusCode, text: str, target: str) -> StateError:
    """A status without our ErrorDetail: a class chosen by its code."""
    cls = _CLASS_FOR_BARE_STATUS.get(code, StateError)
    quoted = _quoted(code, text)
    if cls is BridgeUnavailable:
        words = _BARE_WORDS.get(code, " is unavailable")
        return BridgeUnavailable(f"SessionStore at {target}{words} ({quoted})", status=code.name)
    return cls(f"SessionStore at {target} answered {quoted}", status=code.name)


def _status_of_call(call: grpc.Call | grpc.aio.AioRpcError, target: str) -> Status | None:
    try:
        # An asyncio call's error reads alike (code, details, trailing metadata).
        status: Status | None = rpc_status.from_call(call)  # type: ignore[arg-type]
    except (ValueError, DecodeError) as exc:  # code or message differ, or not a Status
        logger.warning("unusable %s trailer from %s: %s", STATUS_DETAILS_KEY, target, exc)
        return None
    return status


def answered_by_server(exc: grpc.RpcError) -> bool:
    """Whether a failed call carries our server's own answer (its ErrorDetail), as
    opposed to a failure of the transport, a proxy or a foreign server."""
    if not isinstance(exc, _CALLS):
        return False
    status = _status_of_call(exc, "")
    return status is not None and _detail_of(status, "") is not None


def error_from_rpc(exc: grpc.RpcError, target: str) -> StateError:
    """The ``StateError`` a failed unary call stands for (the caller raises it
    ``from exc``).

    With an ErrorDetail in the status details: the same class, message and
    attributes the server raised. Without one (the transport failed, or a proxy or
    foreign server answered): a class chosen by status code; UNAVAILABLE,
    DEADLINE_EXCEEDED and CANCELLED become ``BridgeUnavailable`` naming ``target``.
    """
    if not isinstance(exc, _CALLS):  # every sync-stub error is a Call too
        return BridgeUnavailable(f"SessionStore at {target} failed ({failure_text(exc)})")
    status = _status_of_call(exc, target)
    detail = _detail_of(status, target) if status is not None else None
    if detail is not None:
        return _rebuild(detail, exc.code())
    return _bare(exc.code(), exc.details() or "", target)
