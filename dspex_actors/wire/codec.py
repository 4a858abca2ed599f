"""Payloads on the wire: msgpack in, msgpack out, always within explicit limits.

Values, constraints, metadata and exports cross the wire as msgpack (never pickle):
:func:`pack` on the way out, :func:`unpack` on the way in, the latter always with
explicit size limits so a hostile peer cannot make the decoder allocate more than
the payload's own size allows. This module loads no grpc: what travels inside the
protobuf messages is decided here, how errors travel in :mod:`~dspex_actors.wire.status`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgpack

from dspex_actors.errors import LimitExceeded, ValidationError
from dspex_actors.text import describe_value

__all__ = [
    "CALLS_BATCH_KEY",
    "CALLS_LIMIT_KEY",
    "CALLS_MAX_REPLY_KEY",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "EXPIRES_KEY",
    "FRAMING_BYTES",
    "pack",
    "pack_items",
    "pack_map",
    "unpack",
    "unpack_map",
]

DEFAULT_MAX_MESSAGE_BYTES = 64 << 20
"""Largest gRPC message either side accepts unless configured otherwise."""

FRAMING_BYTES = 64 * 1024
"""Headroom over ``max_message_bytes`` for protobuf's own framing: the server's gRPC
message limits are this much larger, so a batch of exactly ``max_message_bytes``
still reaches the limit's own check (and its answer fits)."""
CALLS_LIMIT_KEY = "dspex-calls-limit"
"""Initial metadata of a Calls stream: how many of its calls the server runs at once."""
CALLS_MAX_REPLY_KEY = "dspex-max-reply-bytes"
"""Metadata a client opens a Calls stream with: the largest reply it can receive."""
CALLS_BATCH_KEY = "dspex-calls-batch"
"""Metadata of a Calls stream, each way (value "1"): this side reads calls (or
answers) coalesced into one message's ``more``. A side sends ``more`` only to a peer
that said so."""
EXPIRES_KEY = "dspex-expires-unix-ms"
"""Metadata of a unary call: the client's deadline as an instant (Unix epoch ms), so
a write delayed in transit past it is refused unapplied (gRPC's own deadline counts
from the request's arrival)."""


def pack(value: Any) -> bytes:
    """msgpack of plain data; ``TypeError``/``ValueError`` for anything else."""
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


def pack_items(items: list[Any]) -> bytes:
    """:func:`pack` of a list, an item at a time (the same bytes): no one call runs
    for the whole list, so another thread gets the GIL in between."""
    packer = msgpack.Packer(use_bin_type=True)
    pack_one = packer.pack
    # A comprehension, not map(): bytecode between items is where the GIL changes hands.
    head: bytes = packer.pack_array_header(len(items))
    return head + b"".join([pack_one(item) for item in items])


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
                f"{_subject(what, variable)} is not valid msgpack: {_reason(exc)} (rule {rule!r})",
                variable=variable,
                rule=rule,
                value=None,
            ) from exc
        raise LimitExceeded(
            f"{_subject(what, variable)} holds an item over the limit of {item} bytes",
            limit="max_value_bytes",
            variable=variable,
        ) from exc


def _reason(exc: Exception) -> str:
    """Why msgpack refused a payload, in words (some of its errors have none)."""
    if isinstance(exc, msgpack.StackError):
        return "arrays and maps nested deeper than msgpack decodes (1,024 levels)"
    return str(exc) or type(exc).__name__


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
