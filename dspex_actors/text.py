"""How values are shown in error messages, and which strings can travel.

A leaf: it imports nothing of the package, so the limits, the types and the error
paths of every layer can use it without an import cycle.
"""

from __future__ import annotations

from typing import Any

__all__ = ["describe_value", "utf8_encodable"]

_MAX_REPR = 200


def describe_value(value: Any) -> str:
    """``repr(value)``, cut to a readable length for error messages."""
    try:
        text = repr(value)
    except RecursionError:
        text = f"<{type(value).__name__} nested too deeply to show>"
    return text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 3] + "..."


def utf8_encodable(text: str) -> bool:
    """Whether a string can cross the wire (lone surrogates cannot)."""
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
