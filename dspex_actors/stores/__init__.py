"""Where a SessionStore server keeps its sessions (``serve(store=...)``).

* ``memory`` (:class:`~dspex_actors.stores.memory.MemoryStore`): one SessionActor
  per session in the server's process, the default; sessions end with it.

``base.py`` states the contract every store keeps.
"""

from dspex_actors.stores.base import DEDUPE_WINDOW, Opened, SessionInfo, Store
from dspex_actors.stores.memory import MemoryStore

__all__ = ["DEDUPE_WINDOW", "MemoryStore", "Opened", "SessionInfo", "Store"]
