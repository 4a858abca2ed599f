"""The StateProvider compliance kit against BridgedState, over a real gRPC server.

Three ways: a server started in this process by the test, the embedded default (no
address at all), and a server started as a separate process from the command line.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from bridge_support import ServerProcess, server_process

from dspex_actors.bridge import ADDRESS_ENV, BridgedState, SessionStoreServer, serve
from dspex_actors.testing import StateProviderContract


@pytest.fixture
def bridge_server() -> Iterator[SessionStoreServer]:
    # Function-scoped: the server's call threads start on demand, so a server that
    # outlived a test would show up as that test's leftover threads.
    with serve() as server:
        yield server


@pytest.fixture(scope="module")
def separate_server() -> Iterator[ServerProcess]:
    with server_process() as server:
        yield server


class TestBridgedInProcessServer(StateProviderContract):
    provider = BridgedState

    @pytest.fixture
    def provider_options(self, bridge_server: SessionStoreServer) -> dict[str, Any]:
        return {"address": bridge_server.address}


class TestBridgedEmbedded(StateProviderContract):
    """No address: every handle shares the embedded server, stopped with the last one."""

    provider = BridgedState

    @pytest.fixture(autouse=True)
    def _no_bridge_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv(ADDRESS_ENV, raising=False)


class TestBridgedSeparateProcess(StateProviderContract):
    provider = BridgedState

    @pytest.fixture
    def provider_options(self, separate_server: ServerProcess) -> dict[str, Any]:
        return {"address": separate_server.address}
