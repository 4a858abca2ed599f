"""A value typed on the command line, read as the variable it is for needs it.

The text is JSON first (``0.9``, ``256``, ``true``, ``[0.1, 0.2]``,
``'{"shape": [2], "data": [1.0, 2.0]}'``, ``'"terse"'``), so every type can be
given exactly. Strings are the exception that makes a shell pleasant: for a
``string`` or ``module`` variable the text is the string itself unless it is a
JSON string (``set s style terse`` and ``set s style '"terse"'`` both store
``terse``; ``set s style 123`` stores ``"123"``); for a ``choice``, a JSON value
that is one of the choices is taken, else the text itself when it is one of them
(so ``terse`` and ``1`` both work for string choices). Anything else that is not
JSON is a ``ValidationError`` (rule ``json``) naming the variable, its type and
the text, and nothing is written. The session still checks every value as it
checks any write: this module only decides what the text means.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from dspex_actors.errors import ValidationError
from dspex_actors.text import describe_value

__all__ = ["EXAMPLES", "json_metadata", "typed_value"]

EXAMPLES = {
    "float": "0.9",
    "integer": "256",
    "boolean": "true",
    "embedding": "[0.1, 0.2, 0.3]",
    "tensor": '\'{"shape": [2], "data": [1.0, 2.0]}\'',
    "choice": "a listed choice",
}
"""A value of each type as a shell line gives it (error messages show them)."""

_NOT_PARSED: Any = object()


def _parsed(text: str) -> tuple[Any, str]:
    """The JSON value of ``text`` and "", or a marker and why it is not JSON."""
    try:
        return json.loads(text), ""
    except ValueError as exc:  # json.JSONDecodeError, and a number json refuses
        return _NOT_PARSED, getattr(exc, "msg", str(exc))


def _kind(value: Any) -> str:
    """A choice's kind: numbers match numbers, strings strings, booleans booleans."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "str" if isinstance(value, str) else type(value).__name__


def _listed(value: Any, choices: Any) -> bool:
    if not isinstance(choices, list | tuple):
        return False
    return any(_kind(choice) == _kind(value) and choice == value for choice in choices)


def typed_value(record: Mapping[str, Any], text: str) -> Any:
    """The value ``text`` gives the variable ``record`` describes (its ``name``,
    ``type`` and ``constraints``); ``ValidationError`` (rule ``json``) when it is
    no JSON and the variable takes no plain text."""
    name, kind = record["name"], record["type"]
    value, why = _parsed(text)
    if kind in ("string", "module"):
        return value if isinstance(value, str) else text
    if kind == "choice":
        choices = (record.get("constraints") or {}).get("choices")
        if value is not _NOT_PARSED and _listed(value, choices):
            return value
        if _listed(text, choices) or value is _NOT_PARSED:
            # the text is itself a choice; or it is no JSON, and the session's refusal
            # (naming the choices) says more than "not JSON" would
            return text
        return value
    if value is _NOT_PARSED:
        example = EXAMPLES.get(kind, "a JSON value")
        raise ValidationError(
            f"variable {name!r} ({kind}): {text!r} is not JSON ({why}); give the value as "
            f"JSON, as in {example} (rule 'json', value {describe_value(text)})",
            variable=name,
            rule="json",
            value=text,
        )
    return value


def json_metadata(variable: str, text: str) -> dict[str, Any]:
    """``--metadata``: a JSON object (``ValidationError``, rule ``metadata``, else)."""
    value, why = _parsed(text)
    if not isinstance(value, dict):
        what = f"is not JSON ({why})" if value is _NOT_PARSED else "is not a JSON object"
        raise ValidationError(
            f"variable {variable!r}: metadata {text!r} {what}; give an object, as in "
            f"'{{\"source\": \"cli\"}}' (rule 'metadata', value {describe_value(text)})",
            variable=variable,
            rule="metadata",
            value=text,
        )
    return value
