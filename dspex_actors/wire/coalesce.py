"""Calls (or answers) ready together, carried in as few messages as fit a limit.

A Calls stream message holds one call and, in its ``more`` field, others that were
ready at the same moment; its answers come back the same way. Both sides group
with :func:`coalesced`, so a message never exceeds what its reader takes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from dspex_actors.v1 import session_store_pb2 as pb

__all__ = ["ENVELOPE", "coalesced"]

ENVELOPE = 16
"""Bytes one message adds as an element of another's ``more`` (tag, length), at most."""


M = TypeVar("M", pb.CallRequest, pb.CallReply)


def coalesced(messages: Iterable[M], limit: int) -> Iterator[M]:
    """``messages`` in as few messages as fit ``limit`` bytes each: the first of each
    carries the ones after it in its ``more`` (so they are changed in place)."""
    head: M | None = None
    size = 0
    for message in messages:
        length = message.ByteSize() + ENVELOPE
        if head is not None and size + length > limit:
            yield head
            head = None
        if head is None:
            head, size = message, length
        else:
            head.more.append(message)
            size += length
    if head is not None:
        yield head
