"""Servers the bridge benchmarks talk to, each in its own process.

``python -m benchmarks.servers echo`` runs the baseline: a bare grpcio unary echo of
raw bytes (no protobuf, no actor), with the same transport and executor size as
the SessionStore, so the ratio isolates what dspex_actors adds.
``python -m benchmarks.servers store`` runs ``python -m dspex_actors serve`` the
same way. Both undo the benchmark's one-core pin first (they serve many callers);
they do it themselves because a ``preexec_fn`` would run Python in a forked copy
of a process whose gRPC threads are live.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import threading
from concurrent import futures

import grpc

ECHO_METHOD = "/bench.Echo/Echo"
_LISTENING = re.compile(r"listening on (\S+)")


def all_cores() -> None:
    """Undo the benchmark's one-core pin in server processes (they serve many callers)."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, range(os.cpu_count() or 1))


class ServerProcess:
    """A server in a child process; the address is read from its first line."""

    def __init__(self, argv: list[str], start_timeout: float = 30.0) -> None:
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        # Wait for the first line with a deadline: a server that never starts must
        # fail the run, not hang it.
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            ready = selector.select(start_timeout)
        line = self.process.stdout.readline() if ready else ""
        match = _LISTENING.search(line)
        if match is None:
            self.stop()
            raise RuntimeError(f"server did not start: {line!r}")
        self.address = match.group(1)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def session_store() -> ServerProcess:
    return ServerProcess(
        [sys.executable, "-m", "dspex_actors", "serve", "--listen", "127.0.0.1:0"]
    )


def echo_server() -> ServerProcess:
    return ServerProcess([sys.executable, "-m", "benchmarks.servers", "echo"])


def echo_stub(channel: grpc.Channel) -> grpc.UnaryUnaryMultiCallable:
    return channel.unary_unary(ECHO_METHOD, request_serializer=None, response_deserializer=None)


def _run_echo() -> None:
    def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
        return request

    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
    executor = futures.ThreadPoolExecutor(max_workers=min(32, (os.cpu_count() or 1) + 4))
    server = grpc.server(executor, handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"echo listening on 127.0.0.1:{port}", flush=True)
    stop.wait()
    server.stop(grace=1).wait()
    executor.shutdown()


if __name__ == "__main__":
    all_cores()
    if sys.argv[1:] == ["echo"]:
        _run_echo()
    elif sys.argv[1:] == ["store"]:
        from dspex_actors.__main__ import main

        sys.exit(main(["serve", "--listen", "127.0.0.1:0", "--log-level", "WARNING"]))
