"""A real ``redis-server`` for the tests: started on a free loopback port, stopped after.

``redis_server()`` runs one for a block (tests that restart or break a server);
the ``redis_url`` fixture in ``conftest.py`` shares one for the whole run. Skips
when ``redis-server`` is not installed (``.ci/run`` installs it).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

WAIT = 30.0  # a hang guard for waits that end at once when all is well
READY = b"Ready to accept connections"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class RedisServer:
    """A ``redis-server`` child on loopback."""

    process: subprocess.Popen[bytes]
    port: int
    workdir: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> Any:
        import redis

        return redis.Redis(port=self.port)


@contextlib.contextmanager
def redis_server(
    *options: str, workdir: Path | None = None, port: int | None = None
) -> Iterator[RedisServer]:
    """Run ``redis-server`` on a free loopback port until the block ends.

    No persistence unless ``options`` ask for it; ``workdir`` (a fresh temporary
    directory by default, removed after) is its ``--dir``. Returns once the server
    logs that it accepts connections (read from its stdout, not polled).
    """
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on PATH (apt-get install redis-server)")
    own_dir = workdir is None
    directory = Path(tempfile.mkdtemp(prefix="dspex-redis-")) if workdir is None else workdir
    port = port or free_port()
    command = [
        *("redis-server", "--save", "", "--appendonly", "no"),
        *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)),
        *("--logfile", "", "--loglevel", "notice"),
        *options,
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert process.stdout is not None
        seen: list[bytes] = []
        for line in process.stdout:  # ends at EOF if the server exits instead
            seen.append(line)
            if READY in line:
                break
        else:
            pytest.fail(f"redis-server did not start: {b''.join(seen[-20:]).decode()}")
        process.stdout.close()  # Redis ignores SIGPIPE: later log lines are dropped
        yield RedisServer(process, port, directory)
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(WAIT)
        if own_dir:
            shutil.rmtree(directory, ignore_errors=True)


def session_key_names(client: Any, session_id: str) -> list[bytes]:
    """Every key of a session (of any incarnation) in the server."""
    from dspex_actors.redis.scripts import session_keys

    pattern = session_keys(session_id, "*")[0].replace(":session", "*")
    return sorted(client.scan_iter(match=pattern))
