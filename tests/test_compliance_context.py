"""The compliance kit against a bare Context: local, bridged, and moved to the bridge.

A Context is a StateProvider like every other (``Context.init`` starts it on a
supervisor of its own, which its ``cleanup`` stops), so the kit runs on the class
itself. Three ways: a context that stays local, one started on the embedded bridge,
and one moved there by ``ensure_bridged`` right after it starts — so the kit's checks
(``get_record``, globbed listings, errors, batches, streaming...) hold for what users
actually hold, before and after a switch.
"""

from __future__ import annotations

from typing import Any

import pytest

from dspex_actors import Context
from dspex_actors.provider import StateProvider
from dspex_actors.testing import StateProviderContract


class TestLocalContext(StateProviderContract):
    provider = Context


class TestBridgedContext(StateProviderContract):
    provider = Context

    @pytest.fixture
    def provider_options(self) -> dict[str, Any]:
        return {"backend": "bridged"}


class TestMigratedContext(StateProviderContract):
    provider = Context

    def opened(self, state: StateProvider) -> None:
        assert isinstance(state, Context)
        state.ensure_bridged()
        assert state.backend_info()["type"] == "bridged"
