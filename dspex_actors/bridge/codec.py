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
from collections.abc import Mapping
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

# Trailing metadata is capped by receivers (8 KiB by default in gRPC core and
# grpc-js), and an error's message travels twice (status details and ErrorDetail).
# Errors therefore stay under these budgets; a longer message is cut, an attribute
# whose encoding is long becomes a cut repr, and a PartialFailure keeps the
# per-entry errors that fit and counts the rest in ``omitted_errors``.
_MAX_MESSAGE_CHARS = 1000
_MAX_ATTRIBUTE_BYTES = 256
_MAX_DETAIL_BYTES = 3000


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


def _cut(message: str) -> str:
    if len(message) <= _MAX_MESSAGE_CHARS:
        return message
    rest = len(message) - _MAX_MESSAGE_CHARS
    return f"{message[:_MAX_MESSAGE_CHARS]}... ({rest} more characters)"


def _pack_attributes(details: Mapping[str, Any]) -> bytes:
    """msgpack of an error's attributes, each one kept small enough for the trailer."""
    small: dict[str, Any] = {}
    for key, value in details.items():
        try:
            # Anything with more items than bytes allowed cannot fit: skip encoding it.
            sized = isinstance(value, str | bytes | list | tuple | dict)
            fits = not (sized and len(value) > _MAX_ATTRIBUTE_BYTES) and (
                len(pack(value)) <= _MAX_ATTRIBUTE_BYTES
            )
        except (TypeError, ValueError, OverflowError):
            fits = False
        small[str(key)] = value if fits else describe_value(value)
    return pack(small) if small else b""


def error_detail(exc: StateError) -> pb.ErrorDetail:
    """The ``ErrorDetail`` describing ``exc`` (recursively for a PartialFailure)."""
    detail = pb.ErrorDetail(
        error_class=type(exc).__name__,
        reason=exc.reason,
        message=_cut(exc.message),
        details=_pack_attributes(exc.details),
    )
    if isinstance(exc, PartialFailure):
        used = detail.ByteSize()
        for count, (identifier, inner) in enumerate(exc.errors.items()):
            entry = pb.EntryError(identifier=identifier, error=error_detail(inner))
            used += entry.ByteSize() + 4  # + the field's tag and length
            if used > _MAX_DETAIL_BYTES:
                omitted = len(exc.errors) - count
                detail.details = _pack_attributes({**exc.details, "omitted_errors": omitted})
                break
            detail.errors.append(entry)
    return detail


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
