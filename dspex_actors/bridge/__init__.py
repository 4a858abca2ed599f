"""The gRPC bridge: the SessionStore server and BridgedState, its StateProvider.

* :func:`serve` starts a SessionStore (``server.py``); ``python -m dspex_actors
  serve`` runs one as a program.
* :class:`BridgedState` (``client.py``) is a StateProvider over the SessionStore.
* ``codec.py`` is the one translation layer (msgpack payloads, errors <-> status).
* ``embedded.py`` runs the shared in-process server BridgedState uses by default.

Nothing outside this package imports the generated ``dspex_actors.v1`` modules.
"""

from dspex_actors.bridge.client import ADDRESS_ENV, TOKEN_ENV, BridgedState
from dspex_actors.bridge.server import Limits, SessionStoreServer, serve

__all__ = ["ADDRESS_ENV", "TOKEN_ENV", "BridgedState", "Limits", "SessionStoreServer", "serve"]
