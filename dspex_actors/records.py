r"""The records callers receive: a variable at one version, a session as a whole.

``get_record`` answers a :class:`VariableRecord` on every backend, so a
compare-and-set loop reads a value and its version in one call instead of listing
the session. ``session_info`` answers a :class:`SessionInfo`, and opening a session
an :class:`Opened`. All are ``NamedTuple``\ s: immutable, attribute access, cheap to
build; their maps are the caller's own copies.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import Any, NamedTuple

from dspex_actors.errors import ValidationError, VariableNotFound
from dspex_actors.text import describe_value

__all__ = [
    "Opened",
    "SessionInfo",
    "VariableRecord",
    "check_pattern",
    "name_matches",
    "variable_not_found",
]


class VariableRecord(NamedTuple):
    """A variable's record: what ``list_variables`` lists, as a typed object."""

    id: str
    name: str
    type: str
    value: Any
    constraints: dict[str, Any]
    metadata: dict[str, Any]
    version: int
    created_at: float
    last_updated_at: float

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> VariableRecord:
        """The record of a ``list_variables`` / export entry (keys as in ``RECORD_KEYS``)."""
        return cls(
            record["id"],
            record["name"],
            record["type"],
            record["value"],
            record["constraints"],
            record["metadata"],
            record["version"],
            record["created_at"],
            record["last_updated_at"],
        )

    def to_dict(self) -> dict[str, Any]:
        """The record as the plain dict ``list_variables`` lists."""
        return self._asdict()


class SessionInfo(NamedTuple):
    """A session as what keeps it sees it (``session_info()``, the GetSession RPC)."""

    session_id: str
    incarnation: str
    """Which creation of this session id it is ("" for a session no store keeps)."""
    variable_count: int
    created_at: float  # epoch seconds
    last_active_at: float  # epoch seconds
    ttl_seconds: float | None
    """Seconds it lives after its last use (None: it never expires)."""
    metadata: dict[str, Any]
    next_sequence: int
    """The sequence the session's next change event gets."""
    expires_at: float | None = None
    """When it expires unless used again (epoch seconds), where that is known."""


class Opened(NamedTuple):
    """The answer to opening a session (the OpenSession RPC)."""

    session_id: str
    created: bool
    incarnation: str
    ttl_seconds: float | None
    store: str = ""
    """Where it lives ("memory", "sqlite", "redis"; "" where not said)."""
    max_calls_per_connection: int = 0
    """Streams the server takes on one connection (0: not said)."""


MAX_PATTERN = 512
"""Characters in a glob: matching compiles it, and a huge one would stall its server."""


def check_pattern(pattern: Any) -> str | None:
    """A ``list_variables`` pattern: None, or a glob string of at most
    :data:`MAX_PATTERN` characters (``""`` means all)."""
    if pattern is None or pattern == "":
        return None
    if not isinstance(pattern, str) or len(pattern) > MAX_PATTERN:
        raise ValidationError(
            f"a list_variables pattern must be a glob string of at most {MAX_PATTERN} "
            f"characters "
            f"(rule 'pattern', value {describe_value(pattern)})",
            rule="pattern",
            value=describe_value(pattern),
        )
    return pattern


def name_matches(name: str, pattern: str | None) -> bool:
    """Whether ``name`` matches the glob (``*``, ``?``, ``[abc]``, ``[!abc]``; case
    sensitive, the whole name), the same meaning on every backend and the wire."""
    return pattern is None or fnmatch.fnmatchcase(name, pattern)


def variable_not_found(identifier: Any, session_id: str) -> VariableNotFound:
    """The error for an identifier that names no variable (every backend's wording)."""
    return VariableNotFound(
        f"variable {identifier!r} not found in session {session_id!r}",
        variable=identifier if isinstance(identifier, str) else describe_value(identifier),
    )
