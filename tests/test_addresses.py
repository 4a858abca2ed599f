"""One address convention: ``HOST:PORT``, ``dspex://HOST:PORT``, ``dspexs://HOST:PORT``
(TLS), read alike by ``serve``, ``BridgedState``, the Supervisor and
``$DSPEX_BRIDGE_ADDRESS``; a missing port or another scheme is refused in the same
words everywhere, and a Redis URL's mistakes in ours."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from bridge_support import python_env

from dspex_actors import Supervisor
from dspex_actors.bridge import BridgedState, serve
from dspex_actors.errors import BridgeUnavailable
from dspex_actors.urls import BRIDGE_ADDRESSES, bridge_address


@pytest.mark.parametrize(
    ("address", "target", "tls"),
    [
        ("127.0.0.1:50051", "127.0.0.1:50051", False),
        ("dspex://127.0.0.1:50051", "127.0.0.1:50051", False),
        ("dspex://host.example:7/", "host.example:7", False),
        ("dspexs://host.example:443", "host.example:443", True),
        ("[::1]:50051", "[::1]:50051", False),
    ],
)
def test_the_forms_of_an_address(address: str, target: str, tls: bool) -> None:
    assert bridge_address(address) == (target, tls)


BAD = {
    "localhost": "needs a host and a port",
    "127.0.0.1": "needs a host and a port",
    ":50051": "needs a host and a port",
    "127.0.0.1:port": "needs a host and a port",
    "127.0.0.1:70000": "needs a host and a port",
    "grpc://127.0.0.1:50051": "no scheme 'grpc' here",
    "http://127.0.0.1:50051": "no scheme 'http' here",
}


def _refusals() -> dict[str, Callable[[str], Any]]:
    def from_env(address: str) -> Any:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("DSPEX_BRIDGE_ADDRESS", address)
            return BridgedState.init()

    return {
        "BridgedState.init": lambda address: BridgedState.init(address=address),
        "$DSPEX_BRIDGE_ADDRESS": from_env,
        "serve": serve,
        "Supervisor.start": lambda address: Supervisor.start(bridge_address=address),
    }


@pytest.mark.parametrize("address", list(BAD))
def test_a_bad_address_is_refused_alike_everywhere(address: str) -> None:
    messages = {}
    for where, call in _refusals().items():
        with pytest.raises(ValueError) as refused:
            call(address)
        messages[where] = str(refused.value)
    assert len(set(messages.values())) == 1, messages
    message = messages["serve"]
    assert message.startswith(f"bridge address {address!r}")
    assert BAD[address] in message and BRIDGE_ADDRESSES in message


def test_every_form_reaches_the_server() -> None:
    with serve("dspex://127.0.0.1:0") as server:
        for address in (server.address, f"dspex://{server.address}"):
            with BridgedState.init(address=address) as state:
                state.register_variable("x", "integer", 1)
                assert state.address == server.address
                assert state.get_variable("x") == 1
        with Supervisor.start(bridge_address=f"dspex://{server.address}") as supervisor:
            ctx = supervisor.start_context()
            ctx.register_variable("y", "integer", 2)
            ctx.ensure_bridged()
            assert ctx.backend_info()["type"] == "bridged"
            assert ctx.get_variable("y") == 2
            ctx.stop()


def test_dspexs_is_tls(tmp_path: Path) -> None:
    """``dspexs://`` speaks TLS: with the server's certificate given, or trusting
    gRPC's default roots (here pointed at that certificate) when none is; a
    ``dspex://`` client cannot talk to the TLS server; and ``serve`` refuses a
    ``dspexs://`` address without a certificate."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ],
        check=True,
        capture_output=True,
    )
    with pytest.raises(ValueError, match="asks for TLS"):
        serve("dspexs://127.0.0.1:0")
    with serve("dspexs://127.0.0.1:0", tls_cert=cert, tls_key=key) as server:
        port = server.address.rpartition(":")[2]
        with BridgedState.init(address=f"dspexs://localhost:{port}", tls_root_cert=cert) as state:
            state.register_variable("a", "string", "over tls")
            assert state.get_variable("a") == "over tls"
        with pytest.raises(BridgeUnavailable):
            BridgedState.init(address=f"dspex://localhost:{port}", timeout=2)
        default_roots = textwrap.dedent(
            f"""
            from dspex_actors.bridge import BridgedState
            with BridgedState.init(address="dspexs://localhost:{port}") as state:
                state.register_variable("b", "integer", 1)
                print(state.get_variable("b"))
            """
        )
        done = subprocess.run(
            [sys.executable, "-c", default_roots],
            env=python_env(GRPC_DEFAULT_SSL_ROOTS_FILE_PATH=str(cert)),
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (done.returncode, done.stdout) == (0, "1\n"), done.stderr


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("127.0.0.1:6395", "must specify one of the following schemes"),
        ("redis://:secret@127.0.0.1:notaport/0", "Port could not be cast"),
    ],
)
def test_a_bad_redis_url_is_our_error_with_a_good_example(url: str, says: str) -> None:
    pytest.importorskip("redis")
    from dspex_actors.redis import RedisState

    with pytest.raises(ValueError) as refused:
        RedisState.init(url=url)
    message = str(refused.value)
    assert message.startswith("Redis URL ") and says in message
    assert "give one as in 'redis://127.0.0.1:6379/0'" in message
    assert "secret" not in message
