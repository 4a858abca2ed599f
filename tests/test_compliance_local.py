"""The StateProvider compliance kit run against the in-process LocalState backend."""

from __future__ import annotations

from dspex_actors import LocalState
from dspex_actors.testing import StateProviderContract


class TestLocalStateCompliance(StateProviderContract):
    provider = LocalState
