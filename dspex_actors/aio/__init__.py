"""asyncio handles: the same sessions, operations and errors as the sync API, awaited.

``AsyncLocalState`` awaits a session actor in this process; ``AsyncBridgedState``
talks to a SessionStore server with ``grpc.aio``; ``AsyncContext`` is a supervised
Context's asyncio face, across its switch to the bridge. Both share every public method,
written once in :mod:`dspex_actors.aio.methods` over the operations the sync API
runs (:mod:`dspex_actors.messages`).
"""

from dspex_actors.aio.bridged import AsyncBridgedState
from dspex_actors.aio.context import AsyncContext
from dspex_actors.aio.local import AsyncLocalState
from dspex_actors.aio.methods import AsyncSessionMethods

__all__ = ["AsyncBridgedState", "AsyncContext", "AsyncLocalState", "AsyncSessionMethods"]
