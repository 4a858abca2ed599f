"""The compliance kit against a bare Context: local, and moved to the bridge.

A Context is a StateProvider like every other (``Context.init`` starts it on a
supervisor of its own, which its ``cleanup`` stops), so the kit runs on the class
itself. Two ways: a context that stays local, and one moved to the embedded bridge
by ``ensure_bridged`` right after it starts — so the kit's checks (``get_record``,
globbed listings, errors, batches, streaming...) hold for what users actually hold,
before and after a switch. (A third way, a context started on the bridge, is a
Context over a BridgedState, whose own run of the kit covers it.)
"""

from __future__ import annotations

from dspex_actors import Context
from dspex_actors.provider import StateProvider
from dspex_actors.testing import StateProviderContract


class TestLocalContext(StateProviderContract):
    provider = Context


class TestMigratedContext(StateProviderContract):
    provider = Context

    def opened(self, state: StateProvider) -> None:
        assert isinstance(state, Context)
        state.ensure_bridged()
        assert state.backend_info()["type"] == "bridged"
