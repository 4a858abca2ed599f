"""The StateProvider compliance kit: one pytest class a backend inherits to prove the contract.

This is the Python form of the seed's ``use DSPex.Bridge.StateProviderTest, provider: X``::

    from dspex_actors.testing import StateProviderContract

    class TestMyBackend(StateProviderContract):
        provider = MyBackend

A backend that needs options (an address, a token) overrides the ``provider_options``
fixture; its dict is passed as keyword arguments to every ``provider.init(...)``::

    class TestBridged(StateProviderContract):
        provider = BridgedState

        @pytest.fixture
        def provider_options(self, bridge_server):
            return {"address": bridge_server.address}

What the kit proves: the seed's four tests, then every type and constraint (accepted
values, coercions, each bad value rejected with a ``ValidationError`` that names the
variable, the rule and the value, and changes nothing), bad constraint definitions,
versions and ``expected_version`` (including concurrent compare-and-set writers that
must lose no update), metadata, typed records (``get_record``) and name globs
(``list_variables(pattern)``), batches that are all or nothing, export/import
fidelity and rejection of bad exports, capabilities, cleanup and the context manager,
readers that never see half a batch or half an import, exports and listings taken
while a writer registers, sets, deletes and updates that are each one consistent
moment, and change streaming: every write delivered to every matching subscriber,
complete and in order, from the moment ``subscribe`` returns until ``unsubscribe``
does, with subscribers that raise, call back into the session or are Pykka actors
(or, for a backend without the ``streaming`` capability, ``NotSupported``); and
Pythonic access (items, ``v``, ``batch()``, ``variable()``) standing for the methods.

The kit is split by concern, one module and one class per group of operations
(after fsspec's ``fsspec/tests/abstract``); :class:`StateProviderContract` is all of
them. The fixtures a backend overrides live in :mod:`~dspex_actors.testing.base`:

=====================  ===============================================================
``base``               ``ContractBase``: ``provider``, ``provider_options``,
                       ``open_state``, ``state``, ``hang_guard_seconds``; shared checks
                       and ``guarded_call`` (the hang guard)
``seed``               ``SeedContract``: the seed's four tests
``values``             ``ValuesContract``: types, constraints, coercion, bad values
``variables``          ``VariablesContract``: register, get, set, versions, metadata,
                       delete, copies
``records``            ``RecordsContract``: ``get_record``, ``list_variables(pattern)``
``batches``            ``BatchContract``: ``get_variables``, ``update_variables``
``exports``            ``ExportContract``: ``export_state``, ``import_state``
``sessions``           ``SessionContract``: ids, capabilities, cleanup, ``with``
``concurrency``        ``ConcurrencyContract``: readers against writers
``streaming``          ``StreamingContract``: ``subscribe``, ``unsubscribe``, events;
                       ``NotSupported`` without the ``streaming`` capability
``access``             ``AccessContract``: items, ``v``, ``batch()``, ``variable()``
=====================  ===============================================================

A backend proves the contract with :class:`StateProviderContract`; a single class
(``class TestMine(VariablesContract)``) runs one concern while working on it.

The kit only uses the public contract (:mod:`dspex_actors.provider`,
:mod:`dspex_actors.errors`, :mod:`dspex_actors.records`, :mod:`dspex_actors.exports`
and Pykka (an actor subscriber); events are read through their attributes only,
:class:`~dspex_actors.testing.streaming.StreamEvent`), so it runs unchanged against
any backend. It is deterministic: threads meet on barriers, events, conditions and
queues, every loop is bounded, and nothing is timed; the only timeout is a hang
guard that turns a call that never returns (or an event that never comes) into a
failure instead of a stuck test run.

Every provider the kit opens goes through the ``open_state`` factory fixture, which
cleans each one up after the test, pass or fail. A cleanup that raises there is
reported as a test error: cleanup must be idempotent and must not fail.

For pytest's detailed assertion messages inside the kit, register it for assertion
rewriting in your ``conftest.py`` before anything imports it (the package's modules
are rewritten with it)::

    pytest.register_assert_rewrite("dspex_actors.testing")
"""

from __future__ import annotations

from dspex_actors.testing.access import AccessContract
from dspex_actors.testing.base import RECORD_KEYS, ContractBase
from dspex_actors.testing.batches import BatchContract
from dspex_actors.testing.concurrency import ConcurrencyContract
from dspex_actors.testing.exports import ExportContract
from dspex_actors.testing.records import RecordsContract
from dspex_actors.testing.seed import SeedContract
from dspex_actors.testing.sessions import SessionContract
from dspex_actors.testing.streaming import StreamingContract
from dspex_actors.testing.values import ValuesContract
from dspex_actors.testing.variables import VariablesContract

__all__ = [
    "RECORD_KEYS",
    "AccessContract",
    "BatchContract",
    "ConcurrencyContract",
    "ContractBase",
    "ExportContract",
    "RecordsContract",
    "SeedContract",
    "SessionContract",
    "StateProviderContract",
    "StreamingContract",
    "ValuesContract",
    "VariablesContract",
]


class StateProviderContract(
    SeedContract,
    ValuesContract,
    VariablesContract,
    RecordsContract,
    BatchContract,
    ExportContract,
    SessionContract,
    ConcurrencyContract,
    StreamingContract,
    AccessContract,
):
    """Inherit in a ``Test*`` class and set ``provider`` to run the whole contract.

    Override the ``provider_options`` fixture to pass backend options to ``init``.
    """
