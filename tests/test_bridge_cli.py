"""The command line (``dspex-actors``, or ``python -m dspex_actors``): a server process
other processes share, stopped by signal; its version and its help."""

from __future__ import annotations

import importlib.metadata
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from bridge_support import python_env, run_worker, server_process

import dspex_actors
from dspex_actors.bridge import BridgedState, serve
from dspex_actors.errors import BridgeUnavailable, Unauthenticated


def test_two_processes_share_a_session_through_the_command_line_server() -> None:
    with server_process() as server, BridgedState.init(address=server.address) as state:
        state.register_variable("temperature", "float", 0.5)
        run_worker(server.address, state.session_id)
        assert state.get_variable("temperature") == 1.0
        assert state.get_variable("from_worker") == "hello"
        assert state.list_variables()[0]["version"] == 1


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_signal_stops_the_server_gracefully(stop_signal: signal.Signals) -> None:
    with server_process() as server:
        state = BridgedState.init(address=server.address, timeout=2)
        state.register_variable("a", "integer", 1)
        server.process.send_signal(stop_signal)
        assert server.process.wait(timeout=30) == 0
    with pytest.raises(BridgeUnavailable):
        state.get_variable("a")
    state.cleanup()


def test_token_from_the_environment() -> None:
    with server_process(env=python_env(DSPEX_BRIDGE_TOKEN="from-env")) as server:
        with pytest.raises(Unauthenticated):
            BridgedState.init(address=server.address)
        with BridgedState.init(address=server.address, token="from-env") as state:
            state.register_variable("a", "integer", 1)


def test_refuses_all_interfaces_without_a_token() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dspex_actors", "serve", "--listen", "0.0.0.0:0"],
        env=python_env(),
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "without a token" in result.stderr
    assert result.stdout == ""


def test_an_empty_token_is_an_error_not_no_token() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dspex_actors", "serve", "--listen", "127.0.0.1:0", "--token", ""],
        env=python_env(),
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "empty token" in result.stderr
    assert result.stdout == ""


# -- the installed command -----------------------------------------------------------------


def _command() -> str:
    """The ``dspex-actors`` console script the package installs beside this Python."""
    script = Path(sys.executable).with_name("dspex-actors")
    assert script.exists(), f"no console script at {script}: is the package installed?"
    return str(script)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_command(), *args],
        check=False,
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_installed_command_says_its_version() -> None:
    result = _run("--version")
    assert result.returncode == 0
    assert result.stdout == f"dspex-actors {dspex_actors.__version__}\n"
    assert dspex_actors.__version__ == importlib.metadata.version("dspex_actors")


def test_help_shows_defaults_in_plain_words() -> None:
    top, serve_help = _run("--help"), _run("serve", "--help")
    assert top.returncode == serve_help.returncode == 0
    for text in (top.stdout, serve_help.stdout):
        assert "``" not in text and ":func:" not in text  # no docstring markup
        assert "None" not in text
    flat = " ".join(serve_help.stdout.split())
    for default in ("127.0.0.1:50051", "memory", "3600.0", "5.0", "INFO"):
        assert f"(default: {default})" in flat
    assert "serve" in top.stdout and "demo" in top.stdout


def test_the_installed_command_serves() -> None:
    with (
        server_process(command=[_command()]) as server,
        BridgedState.init(address=server.address) as state,
    ):
        state.register_variable("a", "integer", 1)
        assert state.get_variable("a") == 1


def test_an_empty_token_is_refused_in_plain_words() -> None:
    result = _run("serve", "--listen", "127.0.0.1:0", "--token", "")
    assert result.returncode == 1
    assert result.stderr == (
        "dspex_actors serve: an empty token would let every call in: give a non-empty "
        "token, or none at all\n"
    )


def test_a_store_that_cannot_be_reached_stops_the_start_in_one_line(tmp_path: Path) -> None:
    """A Redis that does not answer, or a SQLite file in no directory: exit 1 at once
    with one line naming the store, before "listening" (it used to start and leave
    every call to fail)."""
    from redis_support import free_port

    port = free_port()
    for store, says in (
        (
            f"redis://127.0.0.1:{port}/0",
            f"cannot reach the Redis store redis://127.0.0.1:{port}/0",
        ),
        (f"sqlite:{tmp_path / 'none' / 'x.db'}", "cannot open the sqlite store"),
    ):
        result = _run("serve", "--listen", "127.0.0.1:0", "--store", store)
        assert result.returncode == 1
        assert result.stdout == ""
        assert result.stderr.startswith(f"dspex_actors serve: {says}")
        assert result.stderr.count("\n") == 1, result.stderr


def test_serve_refuses_an_unreachable_redis_store_before_it_starts() -> None:
    from redis_support import free_port

    with pytest.raises(OSError, match="cannot reach the Redis store"):
        serve(store=f"redis://127.0.0.1:{free_port()}/0")
