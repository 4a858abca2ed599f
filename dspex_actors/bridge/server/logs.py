"""The SessionStore's structured log lines: session lifecycle events and refused calls.

One line per event, on the ``dspex_actors.server`` logger, as logfmt
(``key=value`` pairs)::

    event=session.opened session_id=s-1 method=OpenSession created=true store=memory
    event=call.refused method=SetVariable reason=max_concurrent_calls session_id=s-1

Why logfmt rather than JSON: this library never configures logging (the ``serve``
program does), so a line lands inside whatever format the program chose (time,
level, logger name); ``key=value`` pairs read well there and are parsed as they
are by Loki, Vector or Promtail's logfmt stages, where a JSON object inside a
text line would need unwrapping. The same fields ride on the record as
``record.dspex`` (a dict) for a program whose handler writes JSON.

A line carries the session id, the method, the reason and counts; never a
variable's value, metadata or a token. A session id is quoted (JSON-escaped) when
it holds anything but plain characters, so no id can forge a line or a field.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

__all__ = ["LOGGER_NAME", "NO_METHOD", "refused", "session_event"]

LOGGER_NAME = "dspex_actors.server"
NO_METHOD = "-"
"""The method of an event no call caused (an expiry, a crashed actor)."""

logger = logging.getLogger(LOGGER_NAME)

_PLAIN = re.compile(r"[A-Za-z0-9_.:/@+\-]+")


def _value(value: Any) -> str:
    """A logfmt value: as it is when plain, else a JSON string (quotes, escapes)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = value if isinstance(value, str) else str(value)
    if _PLAIN.fullmatch(text):
        return text
    return json.dumps(text)


def _line(fields: dict[str, Any]) -> str:
    return " ".join(f"{key}={_value(value)}" for key, value in fields.items())


def _emit(level: int, fields: dict[str, Any]) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, "%s", _line(fields), extra={"dspex": fields})


def session_event(event: str, session_id: str, method: str = NO_METHOD, **more: Any) -> None:
    """Log one lifecycle event of a session (INFO): ``event`` is ``opened``,
    ``closed``, ``expired``, ``imported`` or ``committed``; ``more`` adds fields
    (counts, flags, a reason; never a value)."""
    _emit(
        logging.INFO,
        {"event": f"session.{event}", "session_id": session_id, "method": method, **more},
    )


def refused(method: str, reason: str, session_id: str | None = None, **more: Any) -> None:
    """Log a call refused at admission (WARNING): its method, the rule that refused
    it, and its session when the refusal read that far (a token refusal reads no
    body, so it names none)."""
    fields: dict[str, Any] = {"event": "call.refused", "method": method, "reason": reason}
    if session_id is not None:
        fields["session_id"] = session_id
    _emit(logging.WARNING, {**fields, **more})
