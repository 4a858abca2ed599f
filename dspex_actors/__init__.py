"""dspex_actors: per-session, typed, constrained variables held by one actor per session.

The public API is this short list; the implementation lives in modules named for
one concept each (see the README for the architecture).
"""

import logging

from dspex_actors import errors
from dspex_actors.bridge import BridgedState, SessionStoreServer, serve
from dspex_actors.errors import (
    BridgeUnavailable,
    InvalidExport,
    LimitExceeded,
    NotSupported,
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
from dspex_actors.supervision import Context, Supervisor
from dspex_actors.vartypes import TYPE_NAMES

__all__ = [
    "TYPE_NAMES",
    "BridgeUnavailable",
    "BridgedState",
    "Context",
    "InvalidExport",
    "LimitExceeded",
    "LocalState",
    "NotSupported",
    "PartialFailure",
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
    "VersionConflict",
    "errors",
    "get_capabilities",
    "is_provider",
    "serve",
    "validate_provider",
]

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
