"""The installed ``dspex-actors`` client commands as separate processes, against
``dspex-actors serve`` processes and a real redis-server: ``watch`` prints what
other processes write, ``export | import`` moves a session between two servers
(and into Redis) through a real pipe, and Ctrl-C, a closed pipe and the end of a
watched session each end a command cleanly with its own exit status."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bridge_support import ServerProcess, python_env, run_worker, server_process

from dspex_actors.bridge import BridgedState
from dspex_actors.cli.exits import Exit
from dspex_actors.cli.target import REDIS_ENV
from dspex_actors.redis.state import RedisState

WAIT = 60  # a hang guard: every wait below ends at once when all is well
SCRIPT = Path(sys.executable).with_name("dspex-actors")
MODULE = (sys.executable, "-m", "dspex_actors")


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with server_process() as running:
        yield running


@pytest.fixture(scope="module")
def other_server() -> Iterator[ServerProcess]:
    with server_process() as running:
        yield running


def cli_env(**extra: str) -> dict[str, str]:
    env = python_env(**extra)
    if REDIS_ENV not in extra:
        env.pop(REDIS_ENV, None)
    return env


def installed() -> list[str]:
    """The console script the package installs beside this Python."""
    assert SCRIPT.exists(), f"no console script at {SCRIPT}: is the package installed?"
    return [str(SCRIPT)]


def run(
    *args: str, command: list[str] | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(command or installed()), *args],
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )


def watch(*args: str, command: list[str] | None = None, **env: str) -> subprocess.Popen[str]:
    """``dspex-actors watch ARGS``, returned once it said it is watching."""
    process = subprocess.Popen(
        [*(command or installed()), "watch", *args],
        env=cli_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    said = process.stderr.readline()  # written once the subscription is held
    if not said.startswith("watching session "):
        process.kill()
        out, err = process.communicate(timeout=WAIT)
        pytest.fail(f"watch did not start: {said}{err}{out}")
    return process


def finished(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=WAIT)
    return process.returncode, out, err


@pytest.fixture
def session(server: ServerProcess) -> Iterator[BridgedState]:
    with BridgedState.init(address=server.address) as state:
        state.register_variable("temperature", "float", 0.5, constraints={"min": 0, "max": 2})
        yield state


# -- watch ------------------------------------------------------------------------------------


def test_watch_prints_each_change_other_processes_make(session: BridgedState) -> None:
    watcher = watch(
        session.session_id, "temp*", "--json", "--count", "2", "--address", session.address
    )
    assert (
        run(
            "set", session.session_id, "temperature", "0.9", "--address", session.address
        ).returncode
        == 0
    )
    run_worker(session.address, session.session_id)  # +0.5, and a variable 'temp*' skips
    status, out, err = finished(watcher)
    assert status == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [(e["kind"], e["name"], e["value"], e["version"]) for e in events] == [
        ("updated", "temperature", 0.9, 1),
        ("updated", "temperature", 1.4, 2),
    ]
    assert all(e["session_id"] == session.session_id for e in events)
    assert events[1]["sequence"] == events[0]["sequence"] + 1
    assert err == ""


def test_ctrl_c_stops_a_watch_with_130_and_no_traceback(session: BridgedState) -> None:
    watcher = watch(session.session_id, command=list(MODULE), DSPEX_BRIDGE_ADDRESS=session.address)
    session.set_variable("temperature", 1.25)
    assert watcher.stdout is not None
    line = watcher.stdout.readline()
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z  #\d+  updated  temperature = 1\.25"
        r"  \(version 1\)\n",
        line,
    ), line
    watcher.send_signal(signal.SIGINT)
    status, out, err = finished(watcher)
    assert (status, out, err) == (Exit.INTERRUPTED, "", "")


def test_a_watch_ends_with_its_session_and_on_its_timeout(server: ServerProcess) -> None:
    state = BridgedState.init(address=server.address)
    state.register_variable("a", "integer", 1)
    watcher = watch(state.session_id, "--address", server.address)
    state.cleanup()  # the owner closes the session
    status, out, err = finished(watcher)
    assert status == Exit.NOT_FOUND
    assert out.splitlines()[-1].endswith(": the session ended")
    assert "ended while it was watched" in err
    with BridgedState.init(address=server.address) as quiet:
        ran = run(
            "watch",
            quiet.session_id,
            "--address",
            server.address,
            "--count",
            "1",
            "--timeout",
            "0.2",
        )
        assert (ran.returncode, ran.stdout) == (Exit.TIMED_OUT, "")
        ran = run("watch", quiet.session_id, "--address", server.address, "--timeout", "0.2")
        assert (ran.returncode, ran.stdout) == (Exit.OK, "")


def test_watch_on_a_redis_url(redis_url: str) -> None:
    with RedisState.init(url=redis_url) as state:
        state.register_variable("temperature", "float", 0.5)
        watcher = watch(
            state.session_id, "temp*", "--count", "1", "--json", DSPEX_REDIS_URL=redis_url
        )
        state.set_variable("temperature", 0.75)
        status, out, err = finished(watcher)
        assert status == 0, err
        event = json.loads(out)
        assert (event["name"], event["value"], event["version"]) == ("temperature", 0.75, 1)


# -- export | import ------------------------------------------------------------------------


def fill(state: Any) -> None:
    """Every type, constraints, metadata and a few writes (versions past 0)."""
    state.register_variable("style", "choice", "terse", constraints={"choices": ["terse", "long"]})
    state.register_variable("max_tokens", "integer", 256, constraints={"min": 1})
    state.register_variable("prompt", "string", "Answer briefly.", metadata={"owner": "ops"})
    state.register_variable("module", "module", "ChainOfThought")
    state.register_variable("verbose", "boolean", False)
    state.register_variable("vector", "embedding", [0.1, -0.2, 1e-9])
    state.register_variable("weights", "tensor", {"shape": [2], "data": [1.5, -2.0]})
    state.set_variable("temperature", 0.1 + 0.2, {"tuned_by": "test"})
    state.update_variables({"max_tokens": 512, "verbose": True})


def pipe(export_args: list[str], import_args: list[str]) -> tuple[int, int, str]:
    """``dspex-actors export ... | dspex-actors import ...``: both statuses and what
    import printed."""
    exporter = subprocess.Popen(
        [*installed(), "export", *export_args], env=cli_env(), stdout=subprocess.PIPE
    )
    importer = subprocess.Popen(
        [*installed(), "import", *import_args],
        env=cli_env(),
        stdin=exporter.stdout,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert exporter.stdout is not None
    exporter.stdout.close()  # the importer holds the only reading end
    out, _ = importer.communicate(timeout=WAIT)
    return exporter.wait(timeout=WAIT), importer.returncode, out


@pytest.mark.parametrize("form", ["json", "msgpack"])
def test_export_pipe_import_round_trips_a_session_between_two_servers(
    session: BridgedState, other_server: ServerProcess, form: str
) -> None:
    fill(session)
    sid = session.session_id
    statuses = pipe(
        [sid, "--address", session.address, "--format", form],
        [sid, "--address", other_server.address, "--create", "--json"],
    )
    assert statuses[:2] == (0, 0)
    assert json.loads(statuses[2]) == {
        "session_id": sid,
        "variables": 8,
        "created": True,
        "from_session_id": sid,
    }
    with BridgedState.init(address=other_server.address, session_id=sid, create=False) as copy:
        copy.owner = True  # closed with this block: the command left it for us
        assert copy.digest() == session.digest()  # ids, values, versions, times, metadata
        assert copy.list_variables() == session.list_variables()


def test_export_pipe_import_from_a_server_into_redis(
    session: BridgedState, redis_url: str
) -> None:
    fill(session)
    target = f"from-bridge-{session.session_id}"
    statuses = pipe(
        [session.session_id, "--address", session.address],
        [target, "--redis", redis_url, "--create"],
    )
    assert statuses[:2] == (0, 0)
    assert statuses[2].startswith(f"imported 8 variables into session {target!r} (created, ")
    with RedisState.init(url=redis_url, session_id=target, create=False) as copy:
        copy.owner = True
        assert copy.digest() == session.digest()


def test_a_closed_output_pipe_ends_quietly_with_141(session: BridgedState) -> None:
    reading, writing = os.pipe()
    os.close(reading)  # nobody will ever read: the first write fails
    try:
        process = subprocess.Popen(
            [*installed(), "export", session.session_id, "--address", session.address],
            env=cli_env(),
            stdout=writing,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        os.close(writing)
    _, err = process.communicate(timeout=WAIT)
    assert (process.returncode, err) == (Exit.BROKEN_PIPE, "")


def test_python_dash_m_runs_the_same_commands(server: ServerProcess) -> None:
    ran = run("ping", "--address", server.address, command=list(MODULE))
    assert ran.returncode == 0 and ": SERVING (" in ran.stdout
    ran = run("get", "nope", "x", command=list(MODULE), DSPEX_BRIDGE_ADDRESS=server.address)
    assert ran.returncode == Exit.NOT_FOUND and ran.stderr.count("\n") == 1


def test_ctrl_c_ends_a_call_that_waits_on_a_silent_server_with_130() -> None:
    """A port that accepts connections and never answers: the command waits within
    its deadline (60 s here); Ctrl-C ends it at once, quietly."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        process = subprocess.Popen(
            [*installed(), "get", "s", "x", "--address", address, "--deadline", "60"],
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        silent.settimeout(WAIT)
        connection, _ = silent.accept()  # the command is in its call now
        with connection:
            process.send_signal(signal.SIGINT)
            assert finished(process) == (Exit.INTERRUPTED, "", "")
