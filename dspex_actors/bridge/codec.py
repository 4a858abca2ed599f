"""The bridge's one translation layer: msgpack payloads and errors <-> gRPC status.

Values, constraints, metadata and exports cross the wire as msgpack (never pickle):
:func:`pack` on the way out, :func:`unpack` on the way in, the latter always with
explicit size limits so a hostile peer cannot make the decoder allocate more than
the payload's own size allows.

Errors cross as a gRPC status code chosen from :data:`STATUS_FOR_ERROR` plus the
trailing metadata ``dspex-error-bin`` (a serialized ``ErrorDetail``), from which
:func:`error_from_rpc` rebuilds the same ``dspex_actors.errors`` class with the same
message and attributes. The server calls :func:`abort_with_error`; the client turns
every ``grpc.RpcError`` into a ``StateError`` with :func:`error_from_rpc`
(``raise ... from exc``), so no other module sees gRPC errors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import grpc
import msgpack
from google.protobuf.message import DecodeError

from dspex_actors.errors import (
    ERROR_CLASSES,
    BridgeUnavailable,
    InvalidExport,
    LimitExceeded,
    NotSupported,
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
    "DEFAULT_MAX_MESSAGE_BYTES",
    "ERROR_METADATA_KEY",
    "STATUS_FOR_ERROR",
    "abort_with_error",
    "error_detail",
    "error_from_rpc",
    "pack",
    "pack_map",
    "status_for",
    "unpack",
    "unpack_map",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 64 << 20
"""Largest gRPC message either side accepts unless configured otherwise."""

ERROR_METADATA_KEY = "dspex-error-bin"
"""Trailing metadata key carrying a serialized ``ErrorDetail`` (``-bin``: binary)."""

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
)
"""The one error <-> status table. Server: an error's status is that of the first
entry it is an instance of (else INTERNAL). Client: a status without an ErrorDetail
(from the transport, a proxy or a foreign server) becomes the first class listed for
it, and DEADLINE_EXCEEDED / CANCELLED become BridgeUnavailable."""

_STATUS_BY_CLASS = dict(STATUS_FOR_ERROR)
_CLASS_FOR_BARE_STATUS: dict[grpc.StatusCode, type[StateError]] = {
    grpc.StatusCode.DEADLINE_EXCEEDED: BridgeUnavailable,
    grpc.StatusCode.CANCELLED: BridgeUnavailable,
}
for _cls, _code in STATUS_FOR_ERROR:
    _CLASS_FOR_BARE_STATUS.setdefault(_code, _cls)

# Trailing metadata is capped by receivers: gRPC core fails calls whose metadata
# passes 8 KiB (``grpc.max_metadata_size``: at random up to 16 KiB, always beyond)
# and grpc-js stops at 8 KiB. An error's trailer carries its message twice: as
# ``grpc-message``, percent-encoded (a byte outside printable ASCII, or "%", costs
# three), and inside the ErrorDetail, which travels base64-encoded (four bytes per
# three). Every budget below is in those encoded bytes, never in characters: a
# message is cut, an attribute whose encoding is long becomes a cut repr, and a
# PartialFailure sends every entry's identifier, class and reason (up to
# ``_MAX_ENTRIES``), shares what room is left among their messages and attributes,
# and counts the entries it could not send in ``omitted_errors``.
_TRAILER_BUDGET = 7 * 1024
"""Bytes grpc-message and dspex-error-bin may use together (each entry costs its
encoded key and value + 32 in HPACK's accounting); the rest of 8 KiB is left for
grpc-status and what proxies add."""
_MAX_MESSAGE_BYTES = 1024
"""An error's message, percent-encoded (the cut text and its "... (N more characters)")."""
_MAX_BATCH_MESSAGE_BYTES = 512
"""A PartialFailure's own message (it repeats its entries' messages), percent-encoded."""
_MAX_ENTRY_MESSAGE_BYTES = 512
"""A PartialFailure entry's message, UTF-8 inside the ErrorDetail."""
_MAX_IDENTIFIER_BYTES = 1024
"""A PartialFailure entry's identifier: a name (256 characters) always fits."""
_MAX_ATTRIBUTE_BYTES = 256
"""One attribute's msgpack encoding; a longer one travels as its cut repr."""
_MAX_ENTRIES = 32
"""PartialFailure entries sent at most; the rest are counted in ``omitted_errors``."""
_HEADER_OVERHEAD = 2 * 32 + len("grpc-message") + len(ERROR_METADATA_KEY)
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
            limit="max_value_bytes",
            variable=variable,
            size=len(data),
        )
    item = max_bytes if max_item_bytes is None else max_item_bytes
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=item,
            max_bin_len=item,
            max_array_len=item,
            max_map_len=item,
            max_ext_len=0,
        )
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError) as exc:
        # msgpack words a length limit as "<n> exceeds max_<kind>_len(<limit>)"; an
        # extension type (max_ext_len is 0) is malformed input, not a size problem.
        text = str(exc)
        if "exceeds max_" in text and "max_ext_len" not in text:
            raise LimitExceeded(
                f"{_subject(what, variable)} holds an item over the limit of {item} bytes ({exc})",
                limit="max_value_bytes",
                variable=variable,
            ) from exc
        raise ValidationError(
            f"{_subject(what, variable)} is not valid msgpack: {exc} (rule {rule!r})",
            variable=variable,
            rule=rule,
            value=None,
        ) from exc


def _subject(what: str, variable: str | None) -> str:
    return what if variable is None else f"{what} of variable {variable!r}"


def unpack_map(
    data: bytes, *, max_bytes: int, what: str, variable: str | None = None
) -> dict[str, Any] | None:
    """Decode an optional msgpack map (empty bytes -> None).

    Failures carry ``what`` as their rule ("metadata", "constraints"), the name the
    session actor uses for a bad map of that kind.
    """
    if not data:
        return None
    decoded = unpack(data, max_bytes=max_bytes, what=what, variable=variable, rule=what)
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


def _pack_attributes(details: Mapping[str, Any], budget: int) -> bytes:
    """msgpack of an error's attributes: each one small, all within ``budget`` bytes.

    An attribute that does not fit in what is left is left out.
    """
    small: dict[str, Any] = {}
    used = 3  # a map header
    for key, value in details.items():
        name, item = str(key), _attribute(value)
        try:
            size = len(pack(name)) + len(pack(item))
        except (TypeError, ValueError, OverflowError):
            continue
        if used + size <= budget:
            small[name] = item
            used += size
    return pack(small) if small else b""


def _field_bytes(size: int) -> int:
    """Bytes a length-delimited protobuf field of ``size`` bytes takes (tag + length)."""
    return 1 + (size.bit_length() + 6) // 7 + size if size else 2


def error_detail(exc: StateError) -> pb.ErrorDetail:
    """The ``ErrorDetail`` describing ``exc``, small enough to travel as a trailer.

    The ErrorDetail and the status message (:attr:`ErrorDetail.message`, sent again
    percent-encoded) together stay within ``_TRAILER_BUDGET`` encoded bytes.
    """
    batch = isinstance(exc, PartialFailure) and bool(exc.errors)
    limit = _MAX_BATCH_MESSAGE_BYTES if batch else _MAX_MESSAGE_BYTES
    message = _cut(exc.message, limit, _percent_encoded_len)
    # What the ErrorDetail may take serialized, so that its base64 fits beside the message.
    budget = (_TRAILER_BUDGET - _HEADER_OVERHEAD - _percent_encoded_len(_utf8(message))) * 3 // 4
    detail = pb.ErrorDetail(error_class=type(exc).__name__, reason=exc.reason, message=message)
    if isinstance(exc, PartialFailure) and batch:
        _add_entries(detail, exc, budget)
    else:
        detail.details = _pack_attributes(exc.details, budget - detail.ByteSize() - 4)
    return detail


def _add_entries(detail: pb.ErrorDetail, exc: PartialFailure, budget: int) -> None:
    """A PartialFailure's entries, in the batch's order, within ``budget`` bytes.

    First every entry's identifier, class and reason (cut identifiers, never a
    dropped entry, until ``_MAX_ENTRIES`` or the budget); then the room left is
    shared among their attributes and messages, in order, each entry taking at most
    its share of what remains (a short one leaves more for the next).
    """
    attributes = {**exc.details, "omitted_errors": len(exc.errors)}
    head = _pack_attributes(attributes, 512)
    used = detail.ByteSize() + _field_bytes(len(head) + 9)  # + 9: any omitted_errors count
    entries: list[tuple[pb.EntryError, StateError]] = []
    for identifier, inner in exc.errors.items():
        if len(entries) >= _MAX_ENTRIES:
            break
        entry = pb.EntryError(
            identifier=_cut(str(identifier), _MAX_IDENTIFIER_BYTES),
            error=pb.ErrorDetail(
                error_class=type(inner).__name__,
                reason=getattr(inner, "reason", StateError.reason),
            ),
        )
        size = _field_bytes(entry.ByteSize())
        if used + size > budget:
            break
        used += size
        entries.append((entry, inner))
    for position, (entry, inner) in enumerate(entries):
        share = (budget - used) // (len(entries) - position) - 12  # 12: tags, lengths
        if share <= 0:
            break
        before = _field_bytes(entry.ByteSize())
        error = entry.error
        error.details = _pack_attributes(getattr(inner, "details", {}), share)
        error.message = _cut(
            getattr(inner, "message", str(inner)),
            min(_MAX_ENTRY_MESSAGE_BYTES, share - len(error.details)),
        )
        grown = _field_bytes(entry.ByteSize()) - before
        if used + grown > budget:  # cannot happen with the margin; stay safe anyway
            error.details, error.message = b"", ""
        else:
            used += grown
    detail.errors.extend(entry for entry, _ in entries)
    omitted = len(exc.errors) - len(entries)
    detail.details = _pack_attributes(
        {**exc.details, "omitted_errors": omitted} if omitted else exc.details, 512
    )


def abort_with_error(context: grpc.ServicerContext, exc: StateError) -> NoReturn:
    """End the current call with ``exc`` as status code, details and ErrorDetail."""
    detail = error_detail(exc)
    context.set_trailing_metadata(((ERROR_METADATA_KEY, detail.SerializeToString()),))
    context.abort(status_for(exc), detail.message)


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


def error_from_rpc(exc: grpc.RpcError, target: str) -> StateError:
    """The ``StateError`` a failed call stands for (the caller raises it ``from exc``).

    With an ErrorDetail in the trailers: the same class, message and attributes the
    server raised. Without one (the transport failed, or a foreign server answered):
    a class chosen by status code; UNAVAILABLE, DEADLINE_EXCEEDED and CANCELLED
    become ``BridgeUnavailable`` naming ``target``.
    """
    if not isinstance(exc, grpc.Call):  # every sync-stub error is a Call too
        return BridgeUnavailable(f"SessionStore at {target} failed: {exc!r}")
    code = exc.code()
    for key, value in exc.trailing_metadata() or ():
        if key == ERROR_METADATA_KEY and isinstance(value, bytes):
            try:
                return _rebuild(pb.ErrorDetail.FromString(value), code)
            except DecodeError:
                logger.warning("undecodable %s trailer from %s", ERROR_METADATA_KEY, target)
            break
    cls = _CLASS_FOR_BARE_STATUS.get(code, StateError)
    text = exc.details() or ""
    if cls is BridgeUnavailable:
        return BridgeUnavailable(
            f"SessionStore at {target} is unavailable ({code.name}: {text})", status=code.name
        )
    return cls(f"SessionStore at {target} answered {code.name}: {text}", status=code.name)
