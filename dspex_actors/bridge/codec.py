"""The bridge's one translation layer: msgpack payloads and errors <-> gRPC status.

Values, constraints, metadata and exports cross the wire as msgpack (never pickle):
:func:`pack` on the way out, :func:`unpack` on the way in, the latter always with
explicit size limits so a hostile peer cannot make the decoder allocate more than
the payload's own size allows.

Errors cross as gRPC's standard rich status (grpcio-status): a status code chosen
from :data:`STATUS_FOR_ERROR`, the message as the status details, and a
``google.rpc.Status`` in the ``grpc-status-details-bin`` trailer whose ``details``
hold, in this order:

* ``google.rpc.ErrorInfo``: ``reason`` is the error's ``.reason`` tag ("invalid",
  "not_found", "version_conflict", ...), ``domain`` is :data:`ERROR_DOMAIN`, and
  ``metadata`` has ``error_class`` plus, where the error has them, ``variable``,
  ``rule``, ``value``, ``expected``, ``actual``, ``limit`` and ``session_id`` as
  text (a string as it is, anything else as its repr; each cut to 256 bytes);
* ``google.rpc.BadRequest`` for a ValidationError naming its variable, and for a
  PartialFailure (one violation per failing entry sent): ``field`` is the variable
  or identifier, ``description`` the message, ``reason`` the rule (or, for an entry
  that is not a ValidationError, its reason tag);
* ``dspex_actors.v1.ErrorDetail``, from which :func:`error_from_rpc` rebuilds the
  same ``dspex_actors.errors`` class with the same message and attributes
  (PartialFailure's per-entry errors included).

Any gRPC client reads the first two without our ``.proto``; the Python client reads
only the ErrorDetail, never the text. The server calls :func:`abort_with_error`; the
client turns every ``grpc.RpcError`` into a ``StateError`` with
:func:`error_from_rpc` (``raise ... from exc``), so no other module sees gRPC
errors. A status without an ErrorDetail (the transport failed, a proxy or a foreign
server answered) maps by its code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import grpc
import msgpack
from google.protobuf.message import DecodeError
from google.rpc.error_details_pb2 import BadRequest, ErrorInfo
from google.rpc.status_pb2 import Status
from grpc_status import rpc_status

from dspex_actors.errors import (
    ERROR_CLASSES,
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
from dspex_actors.v1 import session_store_pb2 as pb
from dspex_actors.vartypes import describe_value

__all__ = [
    "CALLS_LIMIT_KEY",
    "CALLS_MAX_REPLY_KEY",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "ERROR_DOMAIN",
    "FRAMING_BYTES",
    "STATUS_DETAILS_KEY",
    "STATUS_FOR_ERROR",
    "abort_with_error",
    "answered_by_server",
    "error_from_rpc",
    "error_status",
    "pack",
    "pack_map",
    "status_for",
    "unpack",
    "unpack_map",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 64 << 20
"""Largest gRPC message either side accepts unless configured otherwise."""

ERROR_DOMAIN = "dspex_actors"
"""``google.rpc.ErrorInfo.domain`` of every error this bridge sends."""

STATUS_DETAILS_KEY = "grpc-status-details-bin"
FRAMING_BYTES = 64 * 1024
"""Headroom over ``max_message_bytes`` for protobuf's own framing: the server's gRPC
message limits are this much larger, so a batch of exactly ``max_message_bytes``
still reaches the limit's own check (and its answer fits)."""
CALLS_LIMIT_KEY = "dspex-calls-limit"
"""Initial metadata of a Calls stream: how many of its calls the server runs at once."""
CALLS_MAX_REPLY_KEY = "dspex-max-reply-bytes"
"""Metadata a client opens a Calls stream with: the largest reply it can receive."""
"""The trailer carrying the serialized ``google.rpc.Status`` (gRPC's standard key)."""

STATUS_FOR_ERROR: tuple[tuple[type[StateError], grpc.StatusCode], ...] = (
    (ValidationError, grpc.StatusCode.INVALID_ARGUMENT),
    (PartialFailure, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidExport, grpc.StatusCode.INVALID_ARGUMENT),
    (VariableNotFound, grpc.StatusCode.NOT_FOUND),
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


# -- msgpack -------------------------------------------------------------------------


def pack(value: Any) -> bytes:
    """msgpack of plain data; ``TypeError``/``ValueError`` for anything else."""
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


def pack_map(mapping: Mapping[str, Any] | None) -> bytes:
    """msgpack of an optional map; ``None`` or an empty map travel as empty bytes."""
    if mapping is None:
        return b""
    if not isinstance(mapping, Mapping):
        raise TypeError(f"expected a mapping, got {type(mapping).__name__}")
    return pack(dict(mapping)) if mapping else b""


def unpack(
    data: bytes,
    *,
    max_bytes: int,
    max_item_bytes: int | None = None,
    what: str = "payload",
    variable: str | None = None,
    rule: str = "encoding",
    limit: str = "max_value_bytes",
) -> Any:
    """Decode peer-supplied msgpack within explicit limits.

    ``max_bytes`` bounds the whole payload and ``max_item_bytes`` (default: the same)
    each string, binary, array and map inside it. Extension types are refused, map
    keys must be strings (no hash flooding with crafted int keys), and ``raw=False``
    decodes strings as UTF-8. Over a limit: ``LimitExceeded``; malformed:
    ``ValidationError`` with ``rule``. Errors name ``what`` and ``variable``;
    their text is built only on failure, keeping the hot path cheap.
    """
    if len(data) > max_bytes:
        raise LimitExceeded(
            f"{_subject(what, variable)} is {len(data)} bytes, over the limit of "
            f"{max_bytes} bytes",
            limit=limit,
            variable=variable,
            size=len(data),
        )
    item = max_bytes if max_item_bytes is None else max_item_bytes
    try:
        return _decode(data, item)
    except Exception as exc:
        # Past an item limit, or malformed? Not by msgpack's wording: decode again
        # with every item allowed up to the payload's own size (so no more memory
        # than the payload allows): what then decodes was only too large. The
        # failure path only.
        try:
            _decode(data, len(data))
        except Exception:
            raise ValidationError(
                f"{_subject(what, variable)} is not valid msgpack: {exc} (rule {rule!r})",
                variable=variable,
                rule=rule,
                value=None,
            ) from exc
        raise LimitExceeded(
            f"{_subject(what, variable)} holds an item over the limit of {item} bytes",
            limit="max_value_bytes",
            variable=variable,
        ) from exc


class _ExtensionType(Exception):
    """msgpack extension types are not plain data: refused as malformed."""


def _no_extensions(code: int, data: bytes) -> Any:
    raise _ExtensionType(f"extension type {code} is not plain data")


def _decode(data: bytes, item: int) -> Any:
    """msgpack of plain data with every string, binary, array and map at most
    ``item`` long, string map keys, and no extension types."""
    return msgpack.unpackb(
        data,
        raw=False,
        strict_map_key=True,
        use_list=True,
        max_str_len=item,
        max_bin_len=item,
        max_array_len=item,
        max_map_len=item,
        max_ext_len=item,
        ext_hook=_no_extensions,
    )


def _subject(what: str, variable: str | None) -> str:
    return what if variable is None else f"{what} of variable {variable!r}"


def unpack_map(
    data: bytes,
    *,
    max_bytes: int,
    what: str,
    variable: str | None = None,
    limit: str = "max_value_bytes",
) -> dict[str, Any] | None:
    """Decode an optional msgpack map (empty bytes -> None).

    Failures carry ``what`` as their rule ("metadata", "constraints"), the name the
    session actor uses for a bad map of that kind.
    """
    if not data:
        return None
    decoded = unpack(
        data, max_bytes=max_bytes, what=what, variable=variable, rule=what, limit=limit
    )
    if not isinstance(decoded, dict):
        raise ValidationError(
            f"{_subject(what, variable)} must be a msgpack map "
            f"(rule {what!r}, value {describe_value(decoded)})",
            variable=variable,
            rule=what,
            value=describe_value(decoded),
        )
    return decoded


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


def abort_with_error(context: grpc.ServicerContext, exc: StateError) -> NoReturn:
    """End the current call with ``exc`` as gRPC's rich status (code, message, details).

    For a sync ``grpc.ServicerContext``. A ``grpc.aio`` servicer needs the same status
    awaited instead: ``await context.abort_with_status(rpc_status.to_status(
    error_status(exc)))`` (aio's ``abort_with_status`` is a coroutine).
    """
    context.abort_with_status(rpc_status.to_status(error_status(exc)))


# -- errors: client side --------------------------------------------------------------


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


def _error_detail_of(call: grpc.Call, target: str) -> pb.ErrorDetail | None:
    """The ErrorDetail among a failed call's rich status details, if it has one."""
    try:
        status: Status | None = rpc_status.from_call(call)
    except (ValueError, DecodeError) as exc:  # code or message differ, or not a Status
        logger.warning("unusable %s trailer from %s: %s", STATUS_DETAILS_KEY, target, exc)
        return None
    if status is None:
        return None
    for detail in status.details:
        if detail.TypeName() == _ERROR_DETAIL_NAME:
            try:
                return pb.ErrorDetail.FromString(detail.value)
            except DecodeError:
                logger.warning("undecodable ErrorDetail from %s", target)
                return None
    return None


def answered_by_server(exc: grpc.RpcError) -> bool:
    """Whether a failed call carries our server's own answer (its ErrorDetail), as
    opposed to a failure of the transport, a proxy or a foreign server."""
    return isinstance(exc, grpc.Call) and _error_detail_of(exc, "") is not None


def error_from_rpc(exc: grpc.RpcError, target: str) -> StateError:
    """The ``StateError`` a failed call stands for (the caller raises it ``from exc``).

    With an ErrorDetail in the status details: the same class, message and
    attributes the server raised. Without one (the transport failed, or a proxy or
    foreign server answered): a class chosen by status code; UNAVAILABLE,
    DEADLINE_EXCEEDED and CANCELLED become ``BridgeUnavailable`` naming ``target``.
    """
    if not isinstance(exc, grpc.Call):  # every sync-stub error is a Call too
        return BridgeUnavailable(f"SessionStore at {target} failed: {exc!r}")
    code = exc.code()
    detail = _error_detail_of(exc, target)
    if detail is not None:
        return _rebuild(detail, code)
    cls = _CLASS_FOR_BARE_STATUS.get(code, StateError)
    text = exc.details() or ""
    if cls is BridgeUnavailable:
        return BridgeUnavailable(
            f"SessionStore at {target} is unavailable ({code.name}: {text})", status=code.name
        )
    return cls(f"SessionStore at {target} answered {code.name}: {text}", status=code.name)
