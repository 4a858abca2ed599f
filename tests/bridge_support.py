"""Helpers for the bridge tests: a SessionStore run as a separate process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dspex_actors import LocalState

REPO_ROOT = Path(__file__).resolve().parent.parent
LISTENING = "dspex_actors SessionStore listening on "


@dataclass
class ServerProcess:
    """A ``python -m dspex_actors serve`` child and the address it reported."""

    process: subprocess.Popen[str]
    address: str


def python_env(**extra: str) -> dict[str, str]:
    """The environment for a child Python that imports this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.pop("DSPEX_BRIDGE_ADDRESS", None)
    env.pop("DSPEX_BRIDGE_TOKEN", None)
    env.update(extra)
    return env


def run_python(*args: str, env: dict[str, str], cwd: Path, what: str, timeout: float = 120) -> str:
    """Run ``python ARGS`` as a user would (a child of its own), its output captured;
    what it printed, once it exited 0 (else a failure naming ``what``, with its
    output)."""
    result = subprocess.run(
        [sys.executable, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, (
        f"{what} failed (exit {result.returncode}):\n"
        f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result.stdout


@contextlib.contextmanager
def server_process(
    *args: str, env: dict[str, str] | None = None, command: Sequence[str] | None = None
) -> Iterator[ServerProcess]:
    """Run ``python -m dspex_actors serve --listen 127.0.0.1:0 ARGS`` (or ``command``
    instead of ``python -m dspex_actors``); SIGTERM it after.

    Blocks until the server prints its address (it does so once it accepts calls).
    On exit the server must stop gracefully with status 0.
    """
    program = list(command or (sys.executable, "-m", "dspex_actors"))
    process = subprocess.Popen(
        [*program, "serve", "--listen", "127.0.0.1:0", *args],
        stdout=subprocess.PIPE,
        text=True,
        env=env or python_env(),
        cwd=REPO_ROOT,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith(LISTENING), f"server did not start: {line!r}"
        yield ServerProcess(process, line[len(LISTENING) :].strip())
    finally:
        if process.poll() is None:
            process.terminate()
        try:
            status = process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
    assert status == 0, f"server exited with {status}"


@contextlib.contextmanager
def killable_server(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``python -m dspex_actors serve ARGS`` as a child the test may SIGKILL itself;
    killed at the end if it still runs. Yields the process and its address."""
    process = subprocess.Popen(
        [sys.executable, "-m", "dspex_actors", "serve", "--listen", "127.0.0.1:0", *args],
        stdout=subprocess.PIPE,
        text=True,
        env=python_env(),
        cwd=REPO_ROOT,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith(LISTENING), f"server did not start: {line!r}"
        yield process, line[len(LISTENING) :].strip()
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()


WORKER = textwrap.dedent(
    """
    import sys
    from dspex_actors.bridge import BridgedState

    with BridgedState.init(session_id=sys.argv[1]) as state:  # address from the env
        assert not state.owner
        state.set_variable("temperature", state.get_variable("temperature") + 0.5)
        state.register_variable("from_worker", "string", "hello")
    """
)


def run_worker(address: str, session_id: str) -> None:
    """In another process: attach to ``session_id`` via DSPEX_BRIDGE_ADDRESS and write.

    Adds 0.5 to the float ``temperature`` and registers ``from_worker = "hello"``.
    """
    subprocess.run(
        [sys.executable, "-c", WORKER, session_id],
        env=python_env(DSPEX_BRIDGE_ADDRESS=address),
        check=True,
        timeout=60,
    )


def held(server: Any, session_id: str) -> LocalState:
    """A handle on the engine a memory or SQLite store (or a server on one) holds for
    a session, to look at it from the side (never cleaned up: the store owns it)."""
    return LocalState(server.session_engine(session_id))


class ServerHold:
    """A failpoint action that holds the server's coroutine where the failpoint is
    (``failpoints.enabled(name, hold)``) until :meth:`release`: ``reached`` is set
    once one is held; ``release()``, from any thread, lets every held one go."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self._held: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def __call__(self) -> None:  # on the server's loop
        release = asyncio.Event()
        self._held.append((asyncio.get_running_loop(), release))
        self.reached.set()
        await release.wait()

    def release(self) -> None:
        for loop, release in self._held:
            loop.call_soon_threadsafe(release.set)
