"""The embedded SessionStore: one in-process server shared by the handles that need it.

BridgedState without an address (and without ``DSPEX_BRIDGE_ADDRESS``) uses this
server on an ephemeral loopback port, the zero-configuration default. It is
reference counted: the first :func:`acquire` starts it, the last :func:`release`
stops it, so a program (or a test) that cleans up its handles leaves no server or
thread behind. Like the command-line server without a token, it listens on
loopback only.

It sits beside the client and server packages, not in either: a client uses it
without importing the server, which is loaded the first time one is started.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dspex_actors.bridge.server.server import SessionStoreServer

__all__ = ["acquire", "current_address", "release"]


class _SharedServer:
    """A reference-counted SessionStore started on first use and stopped after last."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._server: SessionStoreServer | None = None
        self._users = 0

    def acquire(self) -> str:
        with self._lock:
            if self._server is None:
                # Loaded here, on first use: a client that never starts the embedded
                # server never loads the server package.
                from dspex_actors.bridge.server.server import serve

                self._server = serve()
            self._users += 1
            return self._server.address

    def release(self) -> None:
        with self._lock:
            if self._server is None or self._users <= 0:
                raise RuntimeError("embedded SessionStore released more often than acquired")
            self._users -= 1
            if self._users == 0:
                # Stopped under the lock, so a concurrent acquire() waits and starts a
                # fresh server instead of receiving the address of one going away.
                server, self._server = self._server, None
                server.stop()

    def address(self) -> str | None:
        with self._lock:
            return None if self._server is None else self._server.address


_shared = _SharedServer()


def acquire() -> str:
    """Start the embedded server if needed, count one more user, return its address."""
    return _shared.acquire()


def release() -> None:
    """Count one user less; the last one stops the server (in-flight calls cancelled)."""
    _shared.release()


def current_address() -> str | None:
    """The running embedded server's address, or None when none runs."""
    return _shared.address()
