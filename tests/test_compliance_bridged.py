"""The StateProvider compliance kit against BridgedState, over a real gRPC server.

Two ways: the embedded default (no address at all: a server started in this
process, as ``serve()`` starts one), and a server started as a separate process
from the command line. (A third run with an explicit in-process address added
nothing the two do not cover, and a minute to the suite.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from bridge_support import ServerProcess, server_process

from dspex_actors.bridge import ADDRESS_ENV, BridgedState
from dspex_actors.testing import StateProviderContract


@pytest.fixture(scope="module")
def separate_server() -> Iterator[ServerProcess]:
    with server_process() as server:
        yield server


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
