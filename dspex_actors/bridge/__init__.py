"""The gRPC bridge: a SessionStore server, and BridgedState, the StateProvider over it.

* ``client/``: :class:`BridgedState` (``handle.py``), the Calls stream, watches, the
  coherent cache and shared channels. It never imports ``server/``.
* ``server/``: :func:`serve` and :class:`SessionStoreServer`, the one dispatch of
  every RPC to a store, health and reflection.
* ``embedded.py``: the in-process server a handle without an address shares; the
  server package is loaded the first time it starts.
* The wire form both sides share (msgpack payloads, errors as gRPC status, the
  per-operation messages) is :mod:`dspex_actors.wire`.

The names here load their half on first use, so ``from dspex_actors.bridge import
BridgedState`` loads no server, store or ``sqlite3``.
"""

from typing import TYPE_CHECKING, Any

from dspex_actors.bridge.env import ADDRESS_ENV, TOKEN_ENV

if TYPE_CHECKING:
    from dspex_actors.bridge.client.bridged import BridgedState
    from dspex_actors.bridge.server.server import SessionStoreServer, serve
    from dspex_actors.limits import Limits

__all__ = ["ADDRESS_ENV", "TOKEN_ENV", "BridgedState", "Limits", "SessionStoreServer", "serve"]

_WHERE = {
    "BridgedState": "dspex_actors.bridge.client.bridged",
    "SessionStoreServer": "dspex_actors.bridge.server.server",
    "serve": "dspex_actors.bridge.server.server",
    "Limits": "dspex_actors.limits",
}


def __getattr__(name: str) -> Any:
    """Load the client or the server the first time one of its names is used."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
