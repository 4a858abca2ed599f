"""Redis under Sentinel: a real primary, its replica and three Sentinels on loopback
(``redis+sentinel://`` URLs), started once for this module.

The compliance kit on RedisState and on a SessionStore server whose store is the
Sentinel URL; writes reach the primary the Sentinels name and its replica; with
``?wait=1`` an acknowledged write is on the replica when the call returns, and a
``WAIT`` that cannot be met is ``OutcomeUnknown`` (settled later), never an
acknowledgement; a Supervisor moves a session there. Failover has its own module
(``test_redis_failover.py``): it spends a topology per run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from redis_support import session_key_names
from redis_topologies import SentinelTopology, sentinel_topology, wait_until

from dspex_actors.bridge import BridgedState, SessionStoreServer, serve
from dspex_actors.errors import OutcomeUnknown
from dspex_actors.redis.state import RedisState
from dspex_actors.supervision import Supervisor
from dspex_actors.testing import StateProviderContract
from dspex_actors.testing.streaming import EventRecorder, change

pytest.importorskip("redis", reason="redis-py is not installed (pip install -e '.[dev]')")

WAIT = 30.0  # a hang guard for waits that end at once when all is well


@pytest.fixture(scope="module")
def sentinel() -> Iterator[SentinelTopology]:
    with sentinel_topology() as topology:
        yield topology


@pytest.fixture(scope="module")
def server(sentinel: SentinelTopology) -> Iterator[SessionStoreServer]:
    with serve(store=sentinel.url) as running:
        yield running


@pytest.fixture
def replica(sentinel: SentinelTopology) -> Iterator[Any]:
    """A plain client of the replica (not the primary)."""
    primary = sentinel.primary_port()
    other = next(s for s in sentinel.servers if s.port != primary)
    with contextlib.closing(other.client()) as client:
        yield client


class TestRedisStateOverSentinel(StateProviderContract):
    """The whole contract on RedisState, through the Sentinels' primary."""

    provider = RedisState

    @pytest.fixture
    def provider_options(self, sentinel: SentinelTopology) -> dict[str, Any]:
        return {"url": sentinel.url}


class TestBridgedStoreOverSentinel(StateProviderContract):
    """The whole contract through a SessionStore server whose store is the Sentinel URL."""

    provider = BridgedState

    @pytest.fixture
    def provider_options(self, server: SessionStoreServer) -> dict[str, Any]:
        return {"address": server.address}


def test_writes_reach_the_primary_the_sentinels_name_and_its_replica(
    sentinel: SentinelTopology, replica: Any
) -> None:
    with RedisState.init(url=sentinel.url) as state:
        state.register_variable("x", "integer", 0)
        state.set_variable("x", 7)
        with contextlib.closing(sentinel.server(sentinel.primary_port()).client()) as primary:
            assert primary.info("replication")["role"] == "master"
            assert session_key_names(primary, state.session_id)
        # The replica gets it asynchronously: polled, with a deadline.
        wait_until(
            "the replica holding the session",
            lambda: bool(session_key_names(replica, state.session_id)),
        )


def test_with_wait_an_acknowledged_write_is_on_the_replica_when_the_call_returns(
    sentinel: SentinelTopology, replica: Any
) -> None:
    with RedisState.init(url=sentinel.url + "?wait=1") as state:
        state.register_variable("x", "integer", 0)
        for n in range(1, 51):
            version = state.set_variable("x", n)
            # No polling: WAIT returned only once the replica had it.
            assert (
                replica.hget(state._session.keys[3], f"r:{_id(state, 'x')}")
                == str(version).encode()
            )


def _id(state: RedisState, name: str) -> str:
    return str(state.get_record(name).id)


def test_a_wait_no_replica_can_meet_is_outcome_unknown_and_settles_as_applied(
    sentinel: SentinelTopology, server: SessionStoreServer
) -> None:
    """Two replicas asked for, one exists: the primary applies the write, WAIT times
    out, and the caller is told it is unknown (a failover could lose it), never
    that it succeeded; settle() then finds it on the primary."""
    with RedisState.init(url=sentinel.url) as owner:
        owner.register_variable("x", "integer", 0)
        with RedisState.init(
            session_id=owner.session_id, url=sentinel.url + "?wait=2&wait_timeout=50"
        ) as waiting:
            with pytest.raises(OutcomeUnknown) as unknown:
                waiting.set_variable("x", 5)
            assert "1 of the 2 replicas" in str(unknown.value)
            assert unknown.value.settle() is True
        assert owner.get_record("x").version == 1

    # The same through a server whose store asks for the two replicas (the client
    # tries an unknown write again until its deadline: a short one here).
    with (
        serve(store=sentinel.url + "?wait=2&wait_timeout=50") as strict,
        BridgedState.init(address=strict.address, timeout=1.0) as state,
    ):
        with pytest.raises(OutcomeUnknown):
            state.register_variable("y", "integer", 0)
        assert state.get_variable("y") == 0  # applied on the primary all the same


def test_a_watch_through_the_server_follows_the_sentinels_primary(
    server: SessionStoreServer,
) -> None:
    recorder = EventRecorder(WAIT, "watcher")
    with BridgedState.init(address=server.address) as state:
        subscription = state.subscribe("t*", recorder)
        state.register_variable("temperature", "float", 0.5)
        state.set_variable("temperature", 1.5)
        events = recorder.wait_for("version 1", change("temperature", 1))
        assert [(e.kind, e.value) for e in events] == [("registered", 0.5), ("updated", 1.5)]
        state.unsubscribe(subscription)


def test_a_supervisor_moves_a_session_into_the_sentinels_primary(
    sentinel: SentinelTopology,
) -> None:
    with Supervisor(store=sentinel.url) as supervisor:
        ctx = supervisor.start_context()
        ctx.register_variable("temperature", "float", 0.7)
        ctx.ensure_bridged()
        assert ctx.backend_info()["type"] == "redis"
        with RedisState.init(session_id=ctx.session_id, url=sentinel.url, create=False) as peer:
            assert peer.get_variable("temperature") == 0.7
