"""Reading a whole Redis session (a listing, an export) a page at a time, as records
or as export columns.

No script may hold Redis, and so every client of it, for a whole large session:
:func:`read_whole` reads :data:`DUMP_PAGE` variables per script, by ordinal (a
variable's place in creation order, given once and never changed), so pages
neither skip nor repeat a variable that stays. When the session changed between
pages, one more script brings them to one moment: the event stream names what
changed since the first page, and those rows are read again, with the order of the
moment that script runs; a variable no event names is as its page read it. Only
when the stream no longer holds those events (:data:`DUMP_TRIES` times over) is the
whole session read by one script.
"""

from __future__ import annotations

from typing import Any

from dspex_actors.exports import ExportColumns
from dspex_actors.redis import scripts
from dspex_actors.redis.session import SessionEngine, pack, text, unpack
from dspex_actors.redis.steps import Steps

__all__ = ["DUMP_PAGE", "DUMP_TRIES", "caught_up_since", "columns", "page_of", "read_whole"]

DUMP_PAGE = 500
"""Variables per script when a session is read whole."""
DUMP_TRIES = 3
"""Paged reads that could not be brought to one moment before one script reads it all."""

Records = list[dict[str, Any]]


def read_whole(session: SessionEngine) -> Steps[tuple[int, dict[str, Any], Records]]:
    """The session at one moment: next sequence, metadata, records in order."""
    for _ in range(DUMP_TRIES):
        sequence, after, more, metadata, records = page_of(
            session, (yield from session.read(scripts.DUMP_PAGE, 0, DUMP_PAGE))
        )
        moved = False
        while more:  # ordinals above the last read: none skipped, none repeated
            page = page_of(session, (yield from session.read(scripts.DUMP_PAGE, after, DUMP_PAGE)))
            moved = moved or page[0] != sequence
            after, more = page[1], page[2]
            records += page[4]
        if not moved:
            return sequence, metadata, records
        caught_up = yield from caught_up_since(session, sequence, records)
        if caught_up is not None:
            return caught_up[0], metadata, caught_up[1]
    reply = yield from session.read(scripts.DUMP)
    metadata, start = _metadata(reply, 1)
    return int(reply[0]), metadata, _rows(session, reply, start)


def page_of(
    session: SessionEngine, reply: list[Any]
) -> tuple[int, int, bool, dict[str, Any], Records]:
    """A :data:`~dspex_actors.redis.scripts.DUMP_PAGE` reply: sequence, the last ordinal
    read, whether a variable may follow it, metadata, the page's records."""
    metadata, start = _metadata(reply, 3)
    records = _rows(session, reply, start)
    last = int(reply[1])
    return int(reply[0]), last, bool(records) and last < int(reply[2]), metadata, records


def caught_up_since(
    session: SessionEngine, since: int, records: Records
) -> Steps[tuple[int, Records] | None]:
    """Pages read from sequence ``since`` on, brought to one moment: the rows of what
    changed since, read again; None when that cannot be told."""
    reply = yield from session.read(scripts.DUMP_SINCE, since)
    count = int(reply[1])
    if count < 0:
        return None
    ids = [text(i) for i in reply[2 : 2 + count]]
    read = {r["id"]: r for r in records}
    read.update((r["id"], r) for r in _rows(session, reply, 2 + count))
    if not all(i in read for i in ids):
        return None  # (a page missed a variable no event names: never, but be sure)
    return int(reply[0]), [read[i] for i in ids]


def _metadata(reply: list[Any], count_at: int) -> tuple[dict[str, Any], int]:
    """The session's metadata a reply holds after its count at ``count_at`` (the
    scripts' ``metadata``), and where the rows after it start."""
    start = count_at + 1 + 2 * int(reply[count_at])
    pairs = range(count_at + 1, start, 2)
    return {text(reply[at]): unpack(reply[at + 1]) for at in pairs}, start


def _rows(session: SessionEngine, reply: list[Any], start: int) -> Records:
    """The records of the 8-field rows ``reply`` holds from ``start`` on."""
    return [session.record_of(reply, at) for at in range(start, len(reply), 8)]


def columns(session: SessionEngine) -> Steps[ExportColumns]:
    """The session as export columns, from one :func:`read_whole`; ``sequence`` is
    its next event sequence."""
    sequence, metadata, records = yield from read_whole(session)
    slots: dict[tuple[str, bytes], int] = {}
    definitions: list[tuple[Any, Any]] = []
    definition: list[int] = []
    for record in records:
        key = (record["type"], pack(record["constraints"]))
        slot = slots.get(key)
        if slot is None:
            slot = slots[key] = len(definitions)
            definitions.append((record["type"], record["constraints"]))
        definition.append(slot)
    return ExportColumns(
        session.session_id,
        metadata,
        [r["id"] for r in records],
        [r["name"] for r in records],
        definitions,
        definition,
        [r["value"] for r in records],
        [r["version"] for r in records],
        [r["created_at"] for r in records],
        [r["last_updated_at"] for r in records],
        [r["metadata"] for r in records],
        sequence,
    )
