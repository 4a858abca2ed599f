"""Every exception dspex_actors raises, in one place.

The hierarchy::

    StateError                      base; ``.reason`` is a short machine-readable tag
    ├── VariableNotFound            also a KeyError
    ├── VariableExists
    ├── ValidationError             also a ValueError; ``.variable .rule .value``
    ├── PartialFailure              ``.errors``: identifier -> exception, nothing applied
    ├── VersionConflict             ``.variable .expected .actual``
    ├── SessionNotFound             also a KeyError
    ├── SessionClosed               the handle was cleaned up or its actor stopped
    ├── BridgeUnavailable           also a ConnectionError; not reached, so NOT applied
    ├── OutcomeUnknown              a write may or may not have been applied; ``.settle()``
    ├── Unauthenticated             the bridge refused the token
    ├── LimitExceeded               a configured limit (sizes, counts) would be passed
    ├── InvalidExport               also a ValueError; an export that cannot be imported
    └── NotSupported                the backend lacks the capability

Every error carries its data as attributes (and in ``.details``, plain data that
crosses the gRPC bridge), so the client re-raises the same class with the same
message and callers can act on the attributes rather than parse text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "AttributeNotFound",
    "BridgeUnavailable",
    "InvalidExport",
    "LimitExceeded",
    "NotSupported",
    "OutcomeUnknown",
    "PartialFailure",
    "SessionClosed",
    "SessionNotFound",
    "StateError",
    "Unauthenticated",
    "ValidationError",
    "VariableExists",
    "VariableNotFound",
    "VersionConflict",
]


class StateError(Exception):
    """Base of every dspex_actors error."""

    reason: str = "state_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details

    def __str__(self) -> str:
        # KeyError subclasses would otherwise quote the message.
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.details))


def _rebuild(cls: type[StateError], message: str, details: dict[str, Any]) -> StateError:
    return cls(message, **details)


class VariableNotFound(StateError, KeyError):
    """No variable has that name or id."""

    reason = "not_found"

    @property
    def variable(self) -> str | None:
        return self.details.get("variable")


class AttributeNotFound(VariableNotFound, AttributeError):
    """``VariableNotFound`` for a variable read as an attribute (``state.v.name``):
    also an ``AttributeError``, so ``hasattr`` and ``getattr(..., default)`` work."""

    reason = "attribute_not_found"


class VariableExists(StateError):
    """A variable with that name (or id) already exists."""

    reason = "already_exists"

    @property
    def variable(self) -> str | None:
        return self.details.get("variable")


class ValidationError(StateError, ValueError):
    """A value, type or constraint breaks a rule; nothing was changed."""

    reason = "invalid"

    @property
    def variable(self) -> str | None:
        return self.details.get("variable")

    @property
    def rule(self) -> str | None:
        return self.details.get("rule")

    @property
    def value(self) -> Any:
        return self.details.get("value")


class PartialFailure(StateError):
    """Some entries of a batch failed; the batch was not applied at all."""

    reason = "partial_failure"

    def __init__(
        self,
        message: str,
        errors: Mapping[str, StateError] | None = None,
        **details: Any,
    ) -> None:
        super().__init__(message, **details)
        self.errors: dict[str, StateError] = dict(errors or {})

    @classmethod
    def for_batch(cls, errors: Mapping[str, StateError], total: int) -> PartialFailure:
        """The failure of a batch of ``total`` entries, naming each failing one."""
        return cls(
            f"{len(errors)} of {total} updates failed, none applied: "
            + "; ".join(f"{k}: {e}" for k, e in errors.items()),
            errors=errors,
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_partial, (type(self), self.message, self.errors, self.details))


def _rebuild_partial(
    cls: type[PartialFailure],
    message: str,
    errors: dict[str, StateError],
    details: dict[str, Any],
) -> PartialFailure:
    return cls(message, errors, **details)


class VersionConflict(StateError):
    """``expected_version`` did not match the variable's current version."""

    reason = "version_conflict"

    @property
    def variable(self) -> str | None:
        return self.details.get("variable")

    @property
    def expected(self) -> int | None:
        return self.details.get("expected")

    @property
    def actual(self) -> int | None:
        return self.details.get("actual")


class SessionNotFound(StateError, KeyError):
    """No session has that id (or it expired)."""

    reason = "session_not_found"

    @property
    def session_id(self) -> str | None:
        return self.details.get("session_id")


class SessionClosed(StateError):
    """The handle was cleaned up, or its session actor is no longer running."""

    reason = "closed"


class BridgeUnavailable(StateError, ConnectionError):
    """The SessionStore could not be reached, or did not start the call, within the
    deadline: the call was not applied, and retrying it is safe."""

    reason = "unavailable"


class OutcomeUnknown(StateError):
    """A write was sent but no answer came within the deadline, even after retries
    with the same request id and an attempt to settle it: it may or may not have
    been applied. :meth:`settle` asks again, later: True if it was applied, False
    if it was not, and then it never will be.

    ``request_id`` names the write (as the server logs it)."""

    reason = "outcome_unknown"

    _settler: Callable[[], bool] | None = None

    @property
    def request_id(self) -> str | None:
        return self.details.get("request_id")

    def settled_by(self, settler: Callable[[], bool]) -> OutcomeUnknown:
        """Attach how to settle this write (by the handle that sent it); answers self."""
        self._settler = settler
        return self

    def settle(self) -> bool:
        """Whether the write was applied; after False it never will be. Raises
        ``OutcomeUnknown`` again when the server still cannot be asked or no longer
        remembers the write, ``NotSupported`` when this error came from where
        nothing can settle it."""
        if self._settler is None:
            raise NotSupported(
                f"this write cannot be settled from here: {self.message}",
                session_id=self.details.get("session_id"),
            )
        return self._settler()


class Unauthenticated(StateError):
    """The SessionStore refused the call's token."""

    reason = "unauthenticated"


class LimitExceeded(StateError):
    """A configured limit (value size, variables or sessions) would be exceeded."""

    reason = "limit_exceeded"

    @property
    def limit(self) -> str | None:
        return self.details.get("limit")


class InvalidExport(StateError, ValueError):
    """An exported state is malformed or inconsistent; nothing was imported."""

    reason = "invalid_export"


class NotSupported(StateError):
    """The backend does not offer this capability."""

    reason = "not_supported"


ERROR_CLASSES: dict[str, type[StateError]] = {
    cls.__name__: cls
    for cls in (
        StateError,
        VariableNotFound,
        AttributeNotFound,
        VariableExists,
        ValidationError,
        PartialFailure,
        VersionConflict,
        SessionNotFound,
        SessionClosed,
        BridgeUnavailable,
        OutcomeUnknown,
        Unauthenticated,
        LimitExceeded,
        InvalidExport,
        NotSupported,
    )
}
"""Class name -> class; the bridge codec rebuilds errors by name from this table."""
