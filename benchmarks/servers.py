"""The servers the benchmarks talk to, each in its own process, all started one way.

Which servers
-------------
- the SessionStore: ``python -m dspex_actors serve``, the command users run, on the
  memory store unless a suite names another (``--store``);
- the baseline, a bare grpcio unary echo of raw bytes (no protobuf, no actor) with
  the same transport and executor size as the SessionStore, so the ratio isolates
  what dspex_actors adds: ``python -m benchmarks.servers echo PORT``;
- ``redis-server`` with no persistence (``--save "" --appendonly no``), on loopback;
- ``etcd``, a one-member cluster whose data directory is on tmpfs (``/dev/shm``)
  where there is one, so its fsyncs cost what Redis's absent persistence does.
  etcd 3.4 has no switch to skip them.

A peer whose binary or client library is missing is skipped with a one-line reason.

How the suite pins, and why
---------------------------
The benchmark process pins itself to the first core it was given and every server
to the next one (the same one on a one-core machine); ``--no-pin`` pins nothing.

- One core per process: Python threads take turns on the GIL, so a Python process
  loses nothing on one core, while across two cores each thread hand-off (the
  benchmark's Pykka asks; inside a gRPC server poller -> worker -> session actor)
  may wake an idle core, whose wake-up time depends on where the scheduler put each
  thread and swamps what is measured (a bare Pykka ask: ~25 us pinned, 65-80 us not).
  Redis is single-threaded anyway; etcd then runs with GOMAXPROCS=1.
- Servers off the client's core: a call never waits for its own client to be
  preempted, and client and server meet as across a network, one wake-up each way.
- Every server alike: the SessionStore, the echo baseline, Redis and etcd on the same
  core, started the same way. Before, the SessionStore inherited the benchmark's
  one-core pin (sharing the client's core) while the echo server unpinned itself, so
  the bridged ratios compared unlike things. On this 2-core machine, in quick runs
  beside another test suite, bridged get / echo was 1.17-1.31x and set / echo
  1.34-1.42x with every server on both cores; with every server on the other core
  1.04-1.15x and 1.09-1.18x, and every server, Redis and etcd too, answered sooner.
- Load clients (the throughput suite) run on all the run's cores, the servers' too:
  they are the load, and the benchmark process only waits meanwhile. Confined to the
  benchmark's one core, eight Python clients could not keep even Redis busy (its GET
  fell from ~9k/s with one client to 3-6k/s with four or eight).

Servers and load clients are started through :mod:`benchmarks.affinity`, which sets
the mask and then execs the program, so every thread it starts inherits it: the one
way that works for the Redis and etcd binaries as for Python, with no ``preexec_fn``
(which would run Python in a forked copy of a process whose gRPC threads are live).

Each server runs in a fresh temporary directory (its working directory and data
directory; its output goes to ``server.log`` there and is shown if it fails to
start), on a loopback port chosen free just before, and is ready once a real
request succeeds. :meth:`ServerProcess.stop` sends SIGTERM (SIGKILL after 30 s)
and removes the directory: a run leaves no files behind.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from benchmarks.affinity import launcher, server_cores
from benchmarks.progress import progress

__all__ = [
    "ECHO_METHOD",
    "ECHO_STREAM_METHOD",
    "ROOT",
    "ServerProcess",
    "Servers",
    "StreamEcho",
    "child_env",
    "echo_stub",
    "free_port",
]

ROOT = Path(__file__).resolve().parent.parent
"""The repository: children find ``benchmarks`` (not installed) through PYTHONPATH."""

ECHO_METHOD = "/bench.Echo/Echo"
ECHO_STREAM_METHOD = "/bench.Echo/Stream"
"""The echo server's stream: each message answered on one stream that stays open."""
# A RangeRequest for key "probe" (field 1, 5 bytes), written out so the readiness
# probe needs no compiled messages; etcd answers an empty range.
_ETCD_PROBE = b"\x0a\x05probe"


def free_port() -> int:
    """A loopback port free right now (the server binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def child_env() -> dict[str, str]:
    """The environment of every child: ours, plus the repository on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def echo_stub(channel: grpc.Channel) -> grpc.UnaryUnaryMultiCallable:
    return channel.unary_unary(ECHO_METHOD, request_serializer=None, response_deserializer=None)


class StreamEcho:
    """A bare grpcio stream echo, as a sync gRPC user writes one: requests fed to the
    stream's iterator through a queue, each answer read with ``next``; one message
    each way per call, on one stream that stays open (what our Calls stream carries
    a call on, with nothing of ours around it)."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._outbox: queue.Queue[bytes | None] = queue.Queue(1)
        open_stream = channel.stream_stream(
            ECHO_STREAM_METHOD, request_serializer=None, response_deserializer=None
        )
        self._replies: Any = open_stream(iter(self._outbox.get, None), timeout=3600)

    def __call__(self, request: bytes) -> bytes:
        self._outbox.put(request)
        reply: bytes = next(self._replies)
        return reply

    def close(self) -> None:
        self._outbox.put(None)
        self._replies.cancel()


def _grpc_probe(method: str, request: bytes) -> Callable[[str], None]:
    def probe(address: str) -> None:
        with grpc.insecure_channel(address) as channel:
            channel.unary_unary(method, request_serializer=None, response_deserializer=None)(
                request, timeout=2
            )

    return probe


def _redis_probe(address: str) -> None:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=2) as s:
        s.sendall(b"PING\r\n")
        if not s.recv(64).startswith(b"+PONG"):
            raise ConnectionError("redis-server did not answer PONG")


class ServerProcess:
    """One server in its own process and temporary directory, on the suite's cores."""

    def __init__(
        self,
        name: str,
        command: Callable[[int, Path], list[str]],
        probe: Callable[[str], None],
        *,
        tmp_root: str | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        """Start ``command(port, workdir)`` and return once ``probe(address)`` succeeds."""
        self.name = name
        self.workdir = Path(tempfile.mkdtemp(prefix=f"dspex-bench-{name}-", dir=tmp_root))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._log = self.workdir / "server.log"
        with self._log.open("wb") as log:
            self.process = subprocess.Popen(
                launcher(command(self.port, self.workdir), server_cores()),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=child_env(),
            )
        deadline = time.monotonic() + start_timeout
        while True:
            if self.process.poll() is not None:
                self._fail(f"exited with status {self.process.returncode}")
            try:
                probe(self.address)
                return
            except Exception as exc:  # not listening yet, or not ready to answer
                if time.monotonic() > deadline:
                    self._fail(f"did not answer within {start_timeout:.0f} s ({exc})")
                time.sleep(0.05)

    def _fail(self, why: str) -> None:
        log = self._log.read_text(errors="replace")[-2000:] if self._log.exists() else ""
        self.stop()
        raise RuntimeError(f"{self.name} server {why}; its output:\n{log}")

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _store_command(spec: str, port: int, workdir: Path) -> list[str]:
    # Limits above the defaults (10,000 sessions, 100,000 variables) so the scale
    # curves reach their ends beside the probe sessions; limits cost nothing per call.
    # A relative sqlite: file lands in the server's workdir, removed with it.
    return [
        *(sys.executable, "-m", "dspex_actors", "serve"),
        *("--listen", f"127.0.0.1:{port}", "--log-level", "WARNING"),
        *("--max-sessions", "20000", "--max-variables", "200000", "--store", spec),
    ]


def _echo_command(port: int, workdir: Path) -> list[str]:
    return [sys.executable, "-m", "benchmarks.servers", "echo", str(port)]


def _redis_command(port: int, workdir: Path) -> list[str]:
    return [
        *("redis-server", "--save", "", "--appendonly", "no"),
        *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir)),
        *("--loglevel", "warning"),
    ]


def _etcd_command(port: int, workdir: Path) -> list[str]:
    client = f"http://127.0.0.1:{port}"
    peer = f"http://127.0.0.1:{free_port()}"
    return [
        *("etcd", "--name", "bench", "--data-dir", str(workdir / "data")),
        *("--listen-client-urls", client, "--advertise-client-urls", client),
        *("--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer),
        *("--initial-cluster", f"bench={peer}", "--logger", "zap", "--log-level", "error"),
    ]


def redis_unavailable() -> str | None:
    """Why the Redis peer cannot run here, or None."""
    if shutil.which("redis-server") is None:
        return "redis-server is not on PATH (apt-get install redis-server)"
    if importlib.util.find_spec("redis") is None:
        return "redis-py is not installed (pip install -e '.[bench]')"
    return None


def etcd_unavailable() -> str | None:
    """Why the etcd peer cannot run here, or None."""
    if shutil.which("etcd") is None:
        return "etcd is not on PATH (apt-get install etcd-server)"
    if importlib.util.find_spec("grpc_tools") is None:
        return "grpcio-tools is not installed (pip install -e '.[bench]'); it compiles etcd's API"
    return None


class Servers:
    """The run's servers, each started on first use and all stopped by :meth:`close`.

    Suites share them: one SessionStore, one echo, one Redis, one etcd per run, each
    suite removing what it created. ``peers=False`` (``--no-peers``) skips Redis and etcd.
    """

    def __init__(self, peers: bool = True) -> None:
        self._peers = peers
        self._running: dict[str, ServerProcess] = {}
        self.unavailable: dict[str, str] = {}

    def _start(self, name: str, spec: str = "memory") -> ServerProcess:
        if name not in self._running:
            progress.stage(f"starting the {name} server")
            if name.startswith("store"):
                server = ServerProcess(
                    name,
                    functools.partial(_store_command, spec),
                    _grpc_probe("/grpc.health.v1.Health/Check", b""),
                )
            elif name == "echo":
                server = ServerProcess(name, _echo_command, _grpc_probe(ECHO_METHOD, b""))
            elif name == "redis":
                server = ServerProcess(name, _redis_command, _redis_probe)
            else:
                shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
                probe = _grpc_probe("/etcdserverpb.KV/Range", _ETCD_PROBE)
                server = ServerProcess(name, _etcd_command, probe, tmp_root=shm)
            self._running[name] = server
        return self._running[name]

    def store(self, name: str = "store", spec: str = "memory") -> ServerProcess:
        """The run's SessionStore, or with another ``name`` (``store.*``) one of its own:
        for a suite that loads its server and wants nobody else's sessions beside it, or
        that serves another ``spec`` (``--store``: ``sqlite:FILE``, ``redis://...``)."""
        if not name.startswith("store"):
            raise ValueError(f"a SessionStore's name starts with 'store', got {name!r}")
        return self._start(name, spec)

    def stop(self, name: str) -> None:
        """Stop one server now (a suite's own), rather than at :meth:`close`."""
        server = self._running.pop(name, None)
        if server is not None:
            server.stop()

    def echo(self) -> ServerProcess:
        return self._start("echo")

    def _peer(self, name: str, why_not: Callable[[], str | None]) -> ServerProcess | None:
        if not self._peers:
            self.unavailable.setdefault(name, "--no-peers was given")
        elif name not in self.unavailable and (reason := why_not()) is not None:
            self.unavailable[name] = reason
        return None if name in self.unavailable else self._start(name)

    def redis(self) -> ServerProcess | None:
        """The Redis server, or None (the reason is in :attr:`unavailable`)."""
        return self._peer("redis", redis_unavailable)

    def etcd(self) -> ServerProcess | None:
        """The etcd server, or None (the reason is in :attr:`unavailable`)."""
        return self._peer("etcd", etcd_unavailable)

    def close(self) -> None:
        for server in reversed(self._running.values()):
            server.stop()
        self._running.clear()


def _run_echo(port: int) -> None:
    def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
        return request

    def stream(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        yield from requests

    handler = grpc.method_handlers_generic_handler(
        "bench.Echo",
        {
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
            "Stream": grpc.stream_stream_rpc_method_handler(stream),
        },
    )
    # The executor the SessionStore gets by default (ThreadPoolExecutor's own size).
    executor = futures.ThreadPoolExecutor(max_workers=min(32, (os.cpu_count() or 1) + 4))
    server = grpc.server(executor, handlers=[handler])
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=1).wait()
    executor.shutdown()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "echo":
        with contextlib.suppress(KeyboardInterrupt):
            _run_echo(int(sys.argv[2]))
    else:
        raise SystemExit("usage: python -m benchmarks.servers echo PORT")
