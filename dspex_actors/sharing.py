"""Where a supervisor's sessions go when they need sharing, and what keeps them there.

A :class:`~dspex_actors.supervision.Supervisor` owns one :class:`Sharing`: the bridge
its contexts move to (a SessionStore at a given address, the process's embedded one,
or a private one when a token or a store is asked for), or a Redis store that
sessions move into directly; and the heartbeat thread that keeps remote sessions of
idle contexts from expiring. gRPC is loaded only when a session first needs the
bridge, and redis-py only when one first moves into Redis.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from dspex_actors.errors import SessionClosed, StateError
from dspex_actors.provider import StateProvider
from dspex_actors.urls import is_redis, store_kind

if TYPE_CHECKING:
    from dspex_actors.bridge.client.bridged import BridgedState
    from dspex_actors.bridge.server.server import SessionStoreServer

__all__ = ["Sharing", "check_store"]

logger = logging.getLogger(__name__)

_JOIN_SECONDS = 60.0


class _Held(Protocol):
    """What the heartbeats need of a context."""

    session_id: str

    @property
    def backend(self) -> StateProvider: ...


def check_store(store: str | None) -> None:
    """``ValueError`` unless ``store`` is None or a spec ``serve(store=...)`` takes."""
    if store is not None:
        store_kind(store)


class Sharing:
    """The bridge (or Redis store) of one supervisor, and its heartbeats."""

    def __init__(
        self,
        *,
        bridge_address: str | None,
        token: str | None,
        store: str | None,
        timeout: float,
        cache: bool,
        heartbeat_interval: float,
        held: Callable[[], Iterable[_Held]],
    ) -> None:
        if heartbeat_interval <= 0:
            raise ValueError("heartbeat_interval must be > 0")
        check_store(store)
        self.token = token
        self.store = store
        self.timeout = timeout
        self.cache = cache
        self.heartbeat_interval = heartbeat_interval
        self._held = held
        self._address = bridge_address
        self._private_server: SessionStoreServer | None = None
        self._uses_shared_server = False
        self._heartbeats: threading.Thread | None = None
        self._stopping = threading.Event()
        self._moved = threading.Event()  # a session moved: the period may be shorter
        self._lock = threading.Lock()
        self._closed = False

    @property
    def bridge_address(self) -> str | None:
        """The SessionStore address in use once the bridge is up (None before)."""
        with self._lock:
            return self._address

    def ensure_bridge(self) -> str:
        """The bridge address, starting the embedded server and heartbeats on first need."""
        from dspex_actors.bridge import embedded, serve  # gRPC: at the first need only

        with self._lock:
            if self._closed:
                raise SessionClosed("the supervisor is stopped")
            if self._address is None:
                if self.token is None and self.store is None:
                    self._address = embedded.acquire()
                    self._uses_shared_server = True
                else:
                    self._private_server = serve(token=self.token, store=self.store)
                    self._address = self._private_server.address
                logger.info("using embedded SessionStore at %s", self._address)
            self._start_heartbeats()
            return self._address

    def open_bridged(self, session_id: str, *, pending: bool = False) -> BridgedState:
        """A BridgedState for ``session_id`` on the bridge (``pending``: created
        invisible until committed, as a migration's copy is; its cache, if the
        supervisor keeps one, starts once it is committed)."""
        from dspex_actors.bridge.client.bridged import BridgedState

        return BridgedState.init(
            session_id=session_id,
            address=self.ensure_bridge(),
            token=self.token,
            timeout=self.timeout,
            pending=pending,
            cache=self.cache and not pending,
        )

    def open_copy(
        self, session_id: str, store: str | None = None
    ) -> tuple[Any, Callable[[], None]]:
        """A new pending session to migrate ``session_id`` into, on ``store`` (a
        ``redis://`` URL: in that Redis) or else on the bridge; and what to do once it
        is committed (a bridged copy starts its cache, if the supervisor keeps one).
        The copy is a StateProvider and a MigrationTarget."""
        if store is not None and is_redis(store):
            from dspex_actors.redis.state import RedisState  # redis-py: when asked for

            with self._lock:
                if self._closed:
                    raise SessionClosed("the supervisor is stopped")
                self._start_heartbeats()
            copy = RedisState.init(
                session_id=session_id, url=store, timeout=self.timeout, pending=True
            )
            return copy, lambda: None
        bridged = self.open_bridged(session_id, pending=True)
        return bridged, bridged.enable_cache if self.cache else lambda: None

    # -- heartbeats -----------------------------------------------------------------------

    def _start_heartbeats(self) -> None:
        """Start the heartbeat thread once a session lives somewhere with a TTL (with
        the lock held)."""
        if self._heartbeats is None:
            self._heartbeats = threading.Thread(
                target=self._send_heartbeats, name="dspex-heartbeats", daemon=True
            )
            self._heartbeats.start()

    def moved(self) -> None:
        """A session moved to a backend that may expire: the heartbeats take its TTL
        into their period now, not after the wait they are in."""
        self._moved.set()

    def _send_heartbeats(self) -> None:
        """Keep remote sessions of idle contexts from expiring: every
        ``heartbeat_interval`` seconds, or a third of the shortest TTL a server
        reported, whichever is sooner (counted again from each move)."""
        while True:
            moved = self._moved.wait(self.heartbeat_period())
            if self._stopping.is_set():
                return
            if moved:
                self._moved.clear()
                continue  # the period again, with the moved session's TTL
            for held in self._held():
                try:
                    held.backend.heartbeat()
                except StateError as exc:
                    logger.warning("heartbeat of %s failed: %s", held.session_id, exc)

    def heartbeat_period(self) -> float:
        """How long the heartbeats wait now (a third of the shortest TTL held, at most
        ``heartbeat_interval``)."""
        ttls: list[float] = [
            ttl
            for held in self._held()
            if (ttl := getattr(held.backend, "ttl_seconds", None)) is not None
        ]
        return min([self.heartbeat_interval, *(ttl / 3 for ttl in ttls)])

    def close(self) -> None:
        """Stop the heartbeats and the private server, release the embedded one;
        idempotent. Every session must have been stopped first."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stopping.set()
        self._moved.set()
        if self._heartbeats is not None:
            self._heartbeats.join(_JOIN_SECONDS)
        if self._private_server is not None:
            self._private_server.stop(grace=None)
        if self._uses_shared_server:
            from dspex_actors.bridge import embedded

            embedded.release()
