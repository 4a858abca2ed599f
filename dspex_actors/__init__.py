"""dspex_actors: per-session, typed, constrained variables held by one actor per session.

The public API is this short list; the implementation lives in modules named for
one concept each (see the README for the architecture). The gRPC bridge
(``BridgedState``, ``SessionStoreServer``, ``serve``) is imported on first use, so
a program that stays in-process never loads grpc; ``RedisState`` likewise, and it
loads redis-py (the ``redis`` extra) only when a session is opened.
"""

import logging
from typing import TYPE_CHECKING, Any

from dspex_actors import errors
from dspex_actors.errors import (
    AttributeNotFound,
    BridgeUnavailable,
    InvalidExport,
    LimitExceeded,
    NotSupported,
    OutcomeUnknown,
    PartialFailure,
    SessionClosed,
    SessionNotFound,
    StateError,
    Unauthenticated,
    ValidationError,
    VariableExists,
    VariableNotFound,
    VersionConflict,
)
from dspex_actors.local import LocalState
from dspex_actors.provider import (
    StateProvider,
    get_capabilities,
    is_provider,
    validate_provider,
)
from dspex_actors.records import VariableRecord
from dspex_actors.supervision import Context, Supervisor
from dspex_actors.vartypes import TYPE_NAMES

if TYPE_CHECKING:
    from dspex_actors.bridge import BridgedState, SessionStoreServer, serve
    from dspex_actors.redis.state import RedisState

_BRIDGE_NAMES = frozenset({"BridgedState", "SessionStoreServer", "serve"})

__all__ = [
    "TYPE_NAMES",
    "AttributeNotFound",
    "BridgeUnavailable",
    "BridgedState",
    "Context",
    "InvalidExport",
    "LimitExceeded",
    "LocalState",
    "NotSupported",
    "OutcomeUnknown",
    "PartialFailure",
    "RedisState",
    "SessionClosed",
    "SessionNotFound",
    "SessionStoreServer",
    "StateError",
    "StateProvider",
    "Supervisor",
    "Unauthenticated",
    "ValidationError",
    "VariableExists",
    "VariableNotFound",
    "VariableRecord",
    "VersionConflict",
    "errors",
    "get_capabilities",
    "is_provider",
    "serve",
    "validate_provider",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """Load the bridge (and grpc), or RedisState, the first time one of their names is used."""
    if name in _BRIDGE_NAMES:
        from dspex_actors import bridge

        value = getattr(bridge, name)
        globals()[name] = value
        return value
    if name == "RedisState":
        from dspex_actors.redis.state import RedisState

        globals()[name] = RedisState
        return RedisState
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


logging.getLogger(__name__).addHandler(logging.NullHandler())
