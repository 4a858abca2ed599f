"""Redis Cluster: three real primaries on loopback (``redis+cluster://`` URLs), made
once for this module with ``redis-cli --cluster create``.

The compliance kit on RedisState and on a SessionStore server whose store is the
cluster; a session's keys all in one hash slot (so every script runs on one node),
and sessions spread over every node; a server's follower reading sessions on every
node from one thread, one blocking read per watched slot; a session whose slot
moves to another node (``MOVED``) keeps working, and its watchers keep hearing.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from redis_topologies import ClusterTopology, cluster_topology, move_slot, wait_until

from dspex_actors.bridge import BridgedState, SessionStoreServer, serve
from dspex_actors.redis.follower import READER_NAME
from dspex_actors.redis.scripts import session_keys
from dspex_actors.redis.state import RedisState
from dspex_actors.testing import StateProviderContract
from dspex_actors.testing.streaming import EventRecorder, change

pytest.importorskip("redis", reason="redis-py is not installed (pip install -e '.[dev]')")

WAIT = 30.0  # a hang guard for waits that end at once when all is well


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterTopology]:
    with cluster_topology() as topology:
        yield topology


@pytest.fixture(scope="module")
def server(cluster: ClusterTopology) -> Iterator[SessionStoreServer]:
    with serve(store=cluster.url) as running:
        yield running


class TestRedisStateOverCluster(StateProviderContract):
    """The whole contract on RedisState, on a 3-primary cluster."""

    provider = RedisState

    @pytest.fixture
    def provider_options(self, cluster: ClusterTopology) -> dict[str, Any]:
        return {"url": cluster.url}


class TestBridgedStoreOverCluster(StateProviderContract):
    """The whole contract through a SessionStore server whose store is the cluster."""

    provider = BridgedState

    @pytest.fixture
    def provider_options(self, server: SessionStoreServer) -> dict[str, Any]:
        return {"address": server.address}


def _slot(client: Any, key: str) -> int:
    return int(client.execute_command("CLUSTER", "KEYSLOT", key))


def _spread(cluster: ClusterTopology, url: str, ids: list[str] | None = None) -> list[RedisState]:
    """Sessions (with these ids, or fresh ones) until every node holds at least one."""
    states: list[RedisState] = []
    owners: set[int] = set()
    for n in range(300):
        session_id = ids[n] if ids and n < len(ids) else None
        state = RedisState.init(url=url, session_id=session_id)
        states.append(state)
        owners.add(cluster.owner(state._session.keys[0]).port)
        if len(owners) == len(cluster.servers) and (ids is None or n + 1 >= len(ids)):
            return states
    raise AssertionError(f"300 sessions landed on {len(owners)} nodes only")


def test_a_sessions_keys_share_one_slot_on_one_node_and_sessions_spread_over_all(
    cluster: ClusterTopology,
) -> None:
    # Ids that look like hash tags themselves are escaped into the session's one tag.
    odd = ["a{b}c", "{x}", "}{", "%7B", "plain"]
    states = _spread(cluster, cluster.url, odd)
    try:
        for state in states:
            state.register_variable("x", "integer", 0)
            state.set_variable("x", 1)
            keys = session_keys(state.session_id, state.incarnation)
            owner = cluster.owner(keys[0])
            with contextlib.closing(owner.client()) as client:
                assert len({_slot(client, key) for key in keys}) == 1, state.session_id
                held = client.keys(keys[0].replace(":session", ":*"))
            assert sorted(k.decode() for k in held) == sorted(keys)
            for other in cluster.servers:
                if other is not owner:
                    with contextlib.closing(other.client()) as client:
                        assert client.keys(keys[0].replace(":session", ":*")) == []
    finally:
        for state in states:
            state.cleanup()


def _readers(cluster: ClusterTopology) -> dict[int, int]:
    """How many connections named as the follower's reader each node holds."""
    found = {}
    for server in cluster.servers:
        with contextlib.closing(server.client()) as client:
            found[server.port] = sum(c["name"] == READER_NAME for c in client.client_list())
    return found


def test_a_server_follows_sessions_on_every_node_from_one_thread(
    cluster: ClusterTopology, server: SessionStoreServer
) -> None:
    states = _spread(cluster, cluster.url)
    clients: list[BridgedState] = []
    recorders: list[EventRecorder] = []
    subscriptions = []
    try:
        for state in states:
            state.register_variable("t", "integer", 0)
            client = BridgedState.init(session_id=state.session_id, address=server.address)
            clients.append(client)
            recorder = EventRecorder(WAIT, state.session_id)
            recorders.append(recorder)
            subscriptions.append(client.subscribe("t", recorder))
        for state in states:
            state.set_variable("t", 1)
            state.set_variable("t", 2)
        for recorder in recorders:
            events = recorder.wait_for("version 2", change("t", 2))
            assert [e.version for e in events if e.name == "t"][-2:] == [1, 2]
        readers = [t for t in threading.enumerate() if t.name == READER_NAME]
        assert len(readers) == 1
        # One blocking read per watched slot, each on the node serving it.
        slots: dict[int, set[int]] = {}
        for state in states:
            owner = cluster.owner(state._session.keys[0])
            with contextlib.closing(owner.client()) as client:
                slots.setdefault(owner.port, set()).add(_slot(client, state._session.keys[0]))
        expected = {s.port: len(slots.get(s.port, ())) for s in cluster.servers}
        wait_until("one reader connection per watched slot", lambda: _readers(cluster) == expected)
        assert all(expected.values())
    finally:
        for client, subscription in zip(clients, subscriptions, strict=False):
            client.unsubscribe(subscription)
            client.cleanup()
        for state in states:
            state.cleanup()


def test_a_session_whose_slot_moves_keeps_working_and_its_watchers_hear_on(
    cluster: ClusterTopology, server: SessionStoreServer
) -> None:
    session_id = f"moving-{uuid.uuid4().hex}"
    with RedisState.init(url=cluster.url, session_id=session_id) as state:
        state.register_variable("t", "integer", 0)
        local = EventRecorder(WAIT, "a RedisState subscriber")
        bridged = EventRecorder(WAIT, "a watcher through the server")
        with BridgedState.init(session_id=session_id, address=server.address) as client:
            watch = client.subscribe("t", bridged)
            subscription = state.subscribe("t", local)
            state.set_variable("t", 1)
            for recorder in (local, bridged):
                recorder.wait_for("version 1", change("t", 1))
            key = state._session.keys[0]
            owner = cluster.owner(key)
            target = next(s for s in cluster.servers if s is not owner)
            with contextlib.closing(owner.client()) as raw:
                move_slot(cluster, _slot(raw, key), target)
            assert cluster.owner(key) is target
            # The handles' next calls meet MOVED, read the slot map again, and go on.
            assert state.set_variable("t", 2) == 2
            assert client.set_variable("t", 3) == 3
            assert client.get_variable("t") == 3
            for recorder in (local, bridged):
                events = recorder.wait_for("version 3", change("t", 3))
                versions = [e.version for e in events if e.kind != "overflow"]
                assert versions == [1, 2, 3]
            client.unsubscribe(watch)
            state.unsubscribe(subscription)
