"""One set of limits for every backend, enforced where a value is written.

A session valid on one backend must be valid on every other, or a local session
could not migrate: so LocalState, the SessionStore and every store check the same
limits, with the same defaults, and refuse with the same exception. Limits are
configurable (``LocalState.init(limits=...)``, ``serve(limits=...)``); a store and
the clients that migrate into it should agree on them.

Sizes are of the msgpack encoding, the form values cross the wire in. The default
value limit admits a 4 MiB payload with room for its encoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dspex_actors.errors import LimitExceeded, ValidationError
from dspex_actors.vartypes import describe_value, utf8_encodable

__all__ = ["DEFAULT_LIMITS", "Limits", "check_session_id", "check_variable_count"]

_MIB = 1 << 20


@dataclass(frozen=True)  # no slots: serve() reads the class attributes as defaults
class Limits:
    """What one session (and one store) accepts; passing a limit raises LimitExceeded."""

    max_value_bytes: int = 4 * _MIB + 64 * 1024
    """One encoded value (a 4 MiB string or bytes value fits)."""
    max_metadata_bytes: int = _MIB
    """One encoded metadata map (a variable's, a batch's, or the session's)."""
    max_message_bytes: int = 64 * _MIB
    """One whole batch or import, encoded, and one gRPC message either way."""
    max_session_id_length: int = 256
    """Characters in a session id (which must be a non-empty UTF-8 string)."""
    max_variables_per_session: int = 100_000
    max_sessions: int = 10_000
    """Sessions one store holds at once."""
    max_concurrent_calls: int = 1024
    """Calls one server runs at once; more are refused (RESOURCE_EXHAUSTED) at once."""
    max_calls_per_connection: int = 128
    """Calls one client connection may have open (HTTP/2 concurrent streams)."""

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if type(value) is not int or value <= 0:
                raise ValueError(f"limit {name} must be a positive int, got {value!r}")


DEFAULT_LIMITS = Limits()


def check_session_id(session_id: Any, limits: Limits = DEFAULT_LIMITS) -> str:
    """A session id is a non-empty UTF-8 string of at most ``max_session_id_length``
    characters; ``ValidationError`` (rule ``session_id``) otherwise."""
    if (
        not isinstance(session_id, str)
        or not session_id
        or len(session_id) > limits.max_session_id_length
        or not utf8_encodable(session_id)
    ):
        shown = describe_value(session_id)
        raise ValidationError(
            f"session id must be a non-empty UTF-8 string of at most "
            f"{limits.max_session_id_length} characters (rule 'session_id', value {shown})",
            rule="session_id",
            value=shown,
        )
    return session_id


def check_variable_count(session_id: str, held: int, adding: int, limits: Limits) -> None:
    """``LimitExceeded`` if ``adding`` more variables would pass the session's limit."""
    limit = limits.max_variables_per_session
    if held + adding > limit:
        raise LimitExceeded(
            f"session {session_id!r} holds {held} variables; adding {adding} would pass "
            f"the limit of {limit} (rule 'max_variables_per_session')",
            limit="max_variables_per_session",
        )
