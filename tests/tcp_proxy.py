"""A loopback TCP proxy for the bridge tests that can lose the reply of one call,
freeze the link, or delay every request in transit.

The proxy sits between a gRPC client and a SessionStore. It forwards bytes both
ways unchanged until it is armed with :meth:`TcpProxy.drop_next_reply`; then it
reads the server's bytes as HTTP/2 frames (a 9-byte header: 24-bit length, type,
flags, 31-bit stream id) and, at the first frame that carries an answer — a DATA
frame of a call, or a HEADERS frame ending its stream (an error's trailers-only
reply) — it forwards what came before that frame and closes both sockets of that
connection instead of forwarding the reply. A unary SessionStore call sends its
answer only once its handler has finished, i.e. after the write was applied; on
the Calls stream each reply is one DATA frame, written once its call was applied
(the stream's opening HEADERS, sent before any call, are passed on).
The client sees the connection drop with its call unanswered: a lost reply.

Everything is plain sockets and threads: one thread accepts, two pump bytes per
connection. :meth:`TcpProxy.stop` closes every socket and joins every thread, so a
test that stops it leaves nothing behind. An optional ``on_drop`` hook runs in the
pump thread just before the connection is cut (a test kills the server there, so
the client's retry cannot reach it).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self

__all__ = ["TcpProxy"]

_FRAME_HEADER = 9
_DATA = 0x0
_HEADERS = 0x1
_END_STREAM = 0x1
_CHUNK = 65536


class _Connection:
    """One client connection and its upstream twin, pumped by two threads."""

    def __init__(self, proxy: TcpProxy, client: socket.socket, upstream: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.closed = False
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._client_to_server, name="tcp-proxy-up", daemon=True),
            threading.Thread(target=self._server_to_client, name="tcp-proxy-down", daemon=True),
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _client_to_server(self) -> None:
        try:
            while True:
                data = self.client.recv(_CHUNK)
                if not data:
                    break
                self.proxy.in_hand(1)
                try:
                    self.proxy.flowing.wait()  # frozen: held, the connection left open
                    self.proxy.forward(self, data)
                finally:
                    self.proxy.in_hand(-1)
        except OSError:
            pass
        finally:
            self.proxy.forward(self, b"")  # closes it once what it holds is passed on

    def _server_to_client(self) -> None:
        # The server's bytes are always cut into whole frames, armed or not, so that
        # the proxy never loses track of where the next frame begins.
        pending = b""
        try:
            while True:
                data = self.upstream.recv(_CHUNK)
                if not data:
                    break
                self.proxy.flowing.wait()  # frozen: held, the connection left open
                if not self.proxy.http2:
                    self.client.sendall(data)
                    continue
                pending += data
                forward, at_response = _split_at_response(pending)
                if at_response and self.proxy.take_drop():
                    if forward:
                        self.client.sendall(forward)
                    self.proxy.dropped_one()
                    break
                if at_response:  # not armed: forward up to the end of the last whole frame
                    forward = pending[: _whole_frames(pending)]
                self.client.sendall(forward)
                pending = pending[len(forward) :]
        except OSError:
            pass
        finally:
            self.close()


def _whole_frames(data: bytes) -> int:
    """The length of the whole frames at the start of ``data``."""
    offset = 0
    while len(data) - offset >= _FRAME_HEADER:
        length = int.from_bytes(data[offset : offset + 3], "big")
        if len(data) - offset < _FRAME_HEADER + length:
            break
        offset += _FRAME_HEADER + length
    return offset


def _split_at_response(data: bytes) -> tuple[bytes, bool]:
    """The whole frames of ``data`` before the first frame carrying an answer (see the
    module docstring), and whether such a frame begins there (a partial frame at the
    end is held back)."""
    offset = 0
    while len(data) - offset >= _FRAME_HEADER:
        length = int.from_bytes(data[offset : offset + 3], "big")
        kind = data[offset + 3]
        flags = data[offset + 4]
        stream = int.from_bytes(data[offset + 5 : offset + 9], "big") & 0x7FFFFFFF
        answer = kind == _DATA or (kind == _HEADERS and flags & _END_STREAM)
        if answer and stream != 0:
            return data[:offset], True
        if len(data) - offset < _FRAME_HEADER + length:
            break
        offset += _FRAME_HEADER + length
    return data[:offset], False


class TcpProxy:
    """A loopback proxy to ``upstream`` ("host:port"); see the module docstring."""

    def __init__(
        self, upstream: str, *, on_drop: Callable[[], None] | None = None, http2: bool = True
    ) -> None:
        """``http2=False``: bytes of another protocol (Redis's), passed on as they
        come; such a proxy can freeze and delay, not drop replies."""
        host, _, port = upstream.rpartition(":")
        self.http2 = http2
        self._upstream = (host, int(port))
        self._on_drop = on_drop
        self._lock = threading.Lock()
        self._armed = 0
        self._skip = 0
        self.drops = 0
        self.connections = 0
        self._dropped = threading.Condition(self._lock)
        self._open: list[_Connection] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._stopping = False
        self._refusing = False
        self.flowing = threading.Event()  # cleared: the link is frozen
        self.flowing.set()
        self.delay = 0.0
        self._held: list[tuple[float, _Connection, bytes]] = []  # in order of arrival
        self._held_changed = threading.Condition(self._lock)
        self._delayer: threading.Thread | None = None
        self._in_hand = 0  # client chunks a pump holds (frozen, or being sent)
        self._acceptor = threading.Thread(target=self._accept, name="tcp-proxy", daemon=True)
        self._acceptor.start()

    # -- control ------------------------------------------------------------------------

    def drop_next_reply(self, count: int = 1, *, after: int = 0) -> None:
        """Lose the reply of the next ``count`` calls (each cuts its connection),
        letting the replies of the ``after`` calls before them through."""
        with self._lock:
            self._armed += count
            self._skip = after

    def take_drop(self) -> bool:
        """Whether this reply is to be dropped (consumes one arming)."""
        with self._lock:
            if self._armed <= 0:
                return False
            if self._skip > 0:
                self._skip -= 1
                return False
            self._armed -= 1
            return True

    def wait_for_drops(self, count: int, timeout: float = 10.0) -> bool:
        """Block until ``count`` replies in all were dropped (or ``timeout``)."""
        with self._dropped:
            return self._dropped.wait_for(lambda: self.drops >= count, timeout)

    def dropped_one(self) -> None:
        """A pump cut a connection at a reply (called from the pump thread)."""
        if self._on_drop is not None:
            self._on_drop()
        with self._dropped:
            self.drops += 1
            self._dropped.notify_all()

    def refuse(self, refusing: bool = True) -> None:
        """Play a dead server (or stop playing one): while refusing, cut every open
        connection and close each new one at once, before any byte is forwarded."""
        with self._lock:
            self._refusing = refusing
            connections = list(self._open) if refusing else []
        for connection in connections:
            connection.close()

    def delay_requests(self, seconds: float) -> None:
        """Play a slow link: from now on each byte a client sends reaches the server
        ``seconds`` after it was sent (the bytes keep their order; replies are not
        delayed). 0: on time again, once the bytes held now are passed on."""
        with self._held_changed:
            self.delay = seconds
            if seconds > 0 and self._delayer is None:
                self._delayer = threading.Thread(
                    target=self._pass_on, name="tcp-proxy-delay", daemon=True
                )
                self._delayer.start()

    def forward(self, connection: _Connection, data: bytes) -> None:
        """Send a client's ``data`` on to its server, at once or, once requests were
        ever delayed, through the queue (so bytes never overtake held ones); empty
        ``data``: close the connection (after what it holds)."""
        with self._held_changed:
            if self._delayer is not None:
                self._held.append((time.monotonic() + self.delay, connection, data))
                self._held_changed.notify_all()
                return
        if data:
            connection.upstream.sendall(data)
        else:
            connection.close()

    def in_hand(self, change: int) -> None:
        """A pump took a client's chunk (1) or passed it on or queued it (-1)."""
        with self._held_changed:
            self._in_hand += change
            self._held_changed.notify_all()

    def wait_until_delivered(self, timeout: float = 30.0) -> bool:
        """Block until every byte a client sent so far, delayed or frozen, was passed
        on to the server (or ``timeout``)."""
        with self._held_changed:
            return self._held_changed.wait_for(
                lambda: not self._held and not self._in_hand, timeout
            )

    def _pass_on(self) -> None:
        """Pass each held chunk on at its time, in order (one thread for all)."""
        while True:
            with self._held_changed:
                while not self._held and not self._stopping:
                    self._held_changed.wait()
                if not self._held:
                    return  # stopping, nothing held
                due, connection, data = self._held[0]
                left = due - time.monotonic()
                if left > 0 and not self._stopping:
                    self._held_changed.wait(left)  # woken early by stop() or new data
                    continue
                self._held.pop(0)
                self._held_changed.notify_all()
            try:
                if data:
                    connection.upstream.sendall(data)
                else:
                    connection.close()
            except OSError:
                connection.close()

    def freeze(self) -> None:
        """Play a link that stops passing packets (or a stopped server): every open
        connection stays open and passes nothing either way, until :meth:`thaw`."""
        self.flowing.clear()

    def thaw(self) -> None:
        """Let the held bytes through, and every byte after."""
        self.flowing.set()

    def cut(self) -> None:
        """Close every open connection (new ones are still accepted)."""
        with self._lock:
            connections = list(self._open)
        for connection in connections:
            connection.close()

    # -- plumbing -----------------------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # the listener was closed: stop() is under way
            with self._lock:
                refusing = self._refusing
            if refusing:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self._upstream, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()  # the server is gone: the client sees a refused stream
                continue
            connection = _Connection(self, client, upstream)
            with self._lock:
                if self._stopping:
                    connection.close()
                    return
                self.connections += 1
                self._open.append(connection)
            connection.start()

    def _connections(self) -> list[_Connection]:
        with self._lock:
            return list(self._open)

    def stop(self) -> None:
        """Close the listener and every connection; join every thread."""
        with self._lock:
            self._stopping = True
            self._held_changed.notify_all()  # the delayer passes on what it holds, ends
        self.flowing.set()  # a pump held by a freeze ends with its sockets
        if self._delayer is not None:
            self._delayer.join()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._listener.close()
        self._acceptor.join()
        for connection in self._connections():
            connection.close()
            for thread in connection.threads:
                thread.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
