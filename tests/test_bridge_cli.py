"""``python -m dspex_actors serve``: a server process other processes share, stopped by signal."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from bridge_support import python_env, run_worker, server_process

from dspex_actors.bridge import BridgedState
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
