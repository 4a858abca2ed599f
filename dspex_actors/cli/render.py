"""What the client commands print: lines for people, JSON for programs.

People get values as JSON (``0.9``, ``"terse"``, ``[0.1, 0.2]``) in tables and
event lines, clipped to a screen's width, times in UTC (ISO 8601), and ``get``
prints the bare value (a string without quotes) so ``$(dspex-actors get ...)``
gives what was stored. Programs (``--json``) get one JSON document per line:
records and events with every field, times as epoch seconds, nothing clipped.
JSON cannot carry bytes (only metadata may hold them): they are shown as
``{"$base64": "..."}``. NaN and infinities, which a float without bounds may
hold, are written as Python's json writes them (``NaN``, ``Infinity``).
"""

from __future__ import annotations

import base64
import datetime
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from dspex_actors.streaming import Event

__all__ = [
    "as_json",
    "bare",
    "clipped",
    "event_line",
    "event_record",
    "fields",
    "record_rows",
    "shown",
    "stamp",
    "table",
]

WIDTH = 60
"""Characters of a value a table or an event line shows before it is clipped."""


def _plain(data: Any) -> Any:
    if isinstance(data, bytes):
        return {"$base64": base64.b64encode(data).decode()}
    raise TypeError(f"{type(data).__name__} is not plain data")


def as_json(data: Any) -> str:
    """``data`` as one line of JSON (bytes as ``{"$base64": ...}``)."""
    return json.dumps(data, default=_plain, ensure_ascii=False)


def shown(value: Any) -> str:
    """A value as a person reads it among others: its JSON."""
    return as_json(value)


def bare(value: Any) -> str:
    """A value alone: a string as it is, anything else as its JSON."""
    return value if isinstance(value, str) else as_json(value)


def clipped(text: str, width: int = WIDTH) -> str:
    """``text`` cut to ``width`` characters (the cut marked with an ellipsis)."""
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def stamp(epoch: float | None) -> str:
    """Epoch seconds as UTC ISO 8601 with milliseconds; "-" for none."""
    if epoch is None or not math.isfinite(epoch):
        return "-"
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Rows under a header, each column as wide as its widest cell."""
    lines = [list(header), *(list(row) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    ]


def fields(pairs: Iterable[tuple[str, str]]) -> list[str]:
    """``label  value`` lines, the values aligned."""
    items = list(pairs)
    width = max((len(label) for label, _ in items), default=0)
    return [f"{label.ljust(width)}  {value}" for label, value in items]


def event_record(event: Event) -> dict[str, Any]:
    """An event as a JSON object: every field, by name."""
    return dict(event._asdict())


def event_line(event: Event) -> str:
    """An event as a person reads it, one line:
    ``TIME  #SEQUENCE  KIND  NAME = VALUE  (version N)``."""
    head = f"{stamp(event.timestamp)}  #{event.sequence}  {event.kind}"
    if event.kind == "overflow":
        return (
            f"{head}: events after #{event.sequence} were dropped (this watch fell behind);"
            " 'list' shows the present"
        )
    if event.kind == "closed":
        return f"{head}: the session ended"
    if event.kind == "deleted":
        return f"{head}  {event.name}  (version {event.version})"
    return f"{head}  {event.name} = {clipped(shown(event.value))}  (version {event.version})"


def record_rows(records: Iterable[Mapping[str, Any]]) -> list[list[str]]:
    """The rows of a listing: name, type, version, value (clipped)."""
    return [
        [str(r["name"]), str(r["type"]), str(r["version"]), clipped(shown(r["value"]))]
        for r in records
    ]
